"""`expertbot train` (a retraining on a train worker, followed to its end) and `expertbot teach --file`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

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
