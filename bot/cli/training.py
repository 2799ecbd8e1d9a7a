"""The training commands of `expertbot`: train, adapters list|promote|rollback, teach --file, bench train.

Bodies only; `bot/cli/app.py` registers them. Training runs on a train worker (queued through `workers.client`);
the benchmark runs in a process of its own (`python -m workers.training.bench`), since bot/ imports nothing from
workers/ but the job client.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from agent.models.registry import AdapterRegistry, AdapterVersion, tenant_registry
from bot.cli.common import JsonOpt, TenantOpt, err, load_settings, out, print_json


def train(
    now: Annotated[bool, typer.Option("--now", help="Train even when no data is new since the last run.")] = False,
    tenant: TenantOpt = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the job until it has finished.")] = True,
    timeout: Annotated[float, typer.Option(help="Give up following after this many seconds.")] = 6 * 3600,
    as_json: JsonOpt = False,
) -> None:
    """Queue a retraining of the tenant's adapter on a train worker and show its progress."""
    from bot.jobs import describe
    from workers.client import follow_jobs, submit_training

    settings = load_settings()
    tenant_id = tenant or settings.default_tenant
    job = submit_training(tenant_id, force=now)
    err.print(f"training queued for {tenant_id} (job {job})")
    if not wait:
        out.print(job)
        return
    hinted, last_stage, shown_at, started = False, "", 0.0, time.monotonic()
    for status in follow_jobs([job], poll_s=0.5, timeout_s=timeout):
        stage = status.stage.split(" (")[0]  # "training (loss 0.42)" -> "training"
        if not status.finished and (stage != last_stage or time.monotonic() - shown_at >= 5):
            err.print(f"  {status.stage} {status.done}/{status.total}" if status.total else f"  {status.stage}")
            last_stage, shown_at = stage, time.monotonic()  # a line per stage, then one every 5 s
        if status.state == "queued" and not hinted and time.monotonic() - started > 15:
            err.print("  still queued: is a train worker running? (`expertbot up` starts one)")
            hinted = True
    if not status.finished:
        raise typer.Exit(3)
    if status.state == "error":
        err.print(f"[red]training failed:[/] {status.error}")
        raise typer.Exit(1)
    if as_json:
        print_json(status.result)
    else:
        out.print(describe(status, tenant_id))


def _row(version: AdapterVersion, serving: str) -> dict[str, Any]:
    m = version.manifest
    gate = m.get("gate") or {}
    cand = (m.get("metrics") or {}).get("candidate") or {}
    return {
        "version": version.name,
        "serving": version.name == serving,
        "created": datetime.fromtimestamp(float(m["created_at"]), UTC).strftime("%Y-%m-%d %H:%M"),
        "tenant": m.get("tenant", ""),
        "parent": m.get("parent") or "",
        "gate": ("promoted" if gate.get("promoted") else "rejected") if gate else "added by hand",
        "reason": gate.get("reason", ""),
        "choice_accuracy": cand.get("choice_accuracy"),
        "examples": (m.get("examples") or {}).get("train_examples"),
        "data_hash": m.get("data_hash", ""),
    }


def _registry(tenant: str | None) -> tuple[str, AdapterRegistry]:
    """The tenant's own registry (each tenant's adapters are apart: one never answers another)."""
    settings = load_settings()
    tenant_id = tenant or settings.default_tenant
    return tenant_id, tenant_registry(settings.adapter_registry, tenant_id)


def adapters_list(tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Every adapter version of the tenant, oldest first: which one serves, what the gate decided and why."""
    tenant_id, registry = _registry(tenant)
    serving = registry.pointer()
    rows = [_row(v, serving) for v in registry.versions()]
    if as_json:
        print_json({"tenant": tenant_id, "serving": serving or None, "versions": rows})
        return
    if not rows:
        out.print(f"no adapter yet for {tenant_id}: the base model serves (`expertbot train --now` trains one)")
        return
    table = Table("", "version", "created (UTC)", "tenant", "parent", "gate", "choice acc.", "why")
    for r in rows:
        table.add_row(
            "▶" if r["serving"] else "",
            r["version"],
            r["created"],
            r["tenant"],
            r["parent"],
            r["gate"],
            "" if r["choice_accuracy"] is None else f"{r['choice_accuracy']:.2f}",
            r["reason"],
        )
    out.print(table)
    out.print(f"serving {tenant_id}: {serving or 'the base model'}")


def adapters_promote(version: str, tenant: TenantOpt = None) -> None:
    """Serve VERSION to the tenant from the next request on (also one the gate rejected: an operator's decision)."""
    tenant_id, registry = _registry(tenant)
    try:
        registry.promote(version)
    except KeyError:
        err.print(
            f"[red]error:[/] no complete adapter version {version!r} for {tenant_id} "
            f"(see `expertbot adapters list --tenant {tenant_id}`)"
        )
        raise typer.Exit(1) from None
    out.print(f"{version} now serves {tenant_id}")


def adapters_rollback(tenant: TenantOpt = None) -> None:
    """Go back to the version the tenant was served before the current one (or to the base model)."""
    tenant_id, registry = _registry(tenant)
    try:
        back = registry.rollback()
    except LookupError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    out.print(f"rolled back: {back.name if back else 'the base model'} now serves {tenant_id}")


def teach(
    file: Annotated[Path, typer.Option("--file", exists=True, dir_okay=False, help="CSV or JSONL of terms / Q&A.")],
    tenant: TenantOpt = None,
) -> None:
    """Add curated domain knowledge (tenant-wide) from a file: term,definition or question,answer rows."""
    from agent.learning import LearningStore
    from agent.teach_file import read_teach_file

    settings = load_settings()
    parsed = read_teach_file(file.read_bytes(), file.name, tenant or settings.default_tenant)
    for problem in parsed.problems:
        err.print(f"[yellow]skipped[/] {file.name} {problem}")
    store = LearningStore.from_url(settings.effective_redis_url)
    new = sum(store.add_curated(item) for item in parsed.items)
    out.print(
        f"taught {len(parsed.items)} item(s) ({new} new, {len(parsed.items) - new} updated) to "
        f"{tenant or settings.default_tenant}; {len(parsed.problems)} row(s) skipped"
    )
    if parsed.problems and not parsed.items:
        raise typer.Exit(1)


def bench_train(
    size: Annotated[str, typer.Option(help="mini (Phi-3-mini's shape, GPU) or tiny (the test model, CPU)")] = "tiny",
    steps: Annotated[int | None, typer.Option(min=1, help="Timed steps (default 200 mini, 30 tiny).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Training tokens/s and peak memory, LoRA (bf16) and QLoRA (NF4) side by side, on random weights."""
    if size not in ("mini", "tiny"):
        err.print("[red]error:[/] --size must be mini or tiny")
        raise typer.Exit(2)
    load_settings()  # a configuration error shows here, not in the child
    args = [sys.executable, "-m", "workers.training.bench", "--size", size]
    if steps:
        args += ["--steps", str(steps)]
    proc = subprocess.run(args, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise typer.Exit(proc.returncode)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if as_json:
        print_json(report)
        return
    table = Table("method", "tokens/s", f"peak memory (GB, {report['memory']})")
    for run in report["runs"]:
        table.add_row(run["method"], f"{run['tokens_per_s']:,.0f}", f"{run['peak_mem_gb']:.2f}")
    out.print(table)
    out.print(f"{report['size']} on {report['device']}, batch {report['batch']} x {report['seq_len']} tokens")
    if report.get("note"):
        out.print(report["note"])
