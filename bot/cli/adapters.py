"""`expertbot adapters`: each tenant's adapter versions (list, add, promote, roll back), and what servers hold."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from agent.models.registry import AdapterRegistry, AdapterVersion, tenant_registry
from bot.cli.common import JsonOpt, TenantOpt, err, load_settings, out, print_json

adapters_app = typer.Typer(help="The adapter registry: add, list, promote, roll back.", no_args_is_help=True)


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


def _servers(tenant_id: str) -> dict[str, Any]:
    """Which versions each OpenAI-compatible server has loaded, when the bot keeps them in step (runtime LoRA)."""
    settings = load_settings()
    if not (settings.generator == "openai" and settings.openai_lora == "runtime" and settings.openai_base_urls):
        return {}
    from agent.models.adapter_import import list_adapters

    listing = list_adapters(
        settings.adapter_registry,
        tenant=tenant_id,
        servers=settings.openai_base_urls,
        api_key=settings.openai_api_key,
    )
    servers: dict[str, Any] = listing["tenants"][0]["servers"]
    return servers


@adapters_app.command("list")
def adapters_list(tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Every adapter version of the tenant, oldest first: which one serves, what the gate decided and why."""
    tenant_id, registry = _registry(tenant)
    serving = registry.pointer()
    rows = [_row(v, serving) for v in registry.versions()]
    servers = _servers(tenant_id)
    if as_json:
        servers_part = {"servers": servers} if servers else {}  # only when the bot keeps servers in step
        print_json({"tenant": tenant_id, "serving": serving or None, "versions": rows, **servers_part})
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
    for url, state in servers.items():
        loaded = ", ".join(state["loaded"]) if state.get("loaded") is not None else f"unreachable ({state['error']})"
        refused = (
            f"; refused {state['refused']['version']}: {state['refused']['reason']}" if state.get("refused") else ""
        )
        out.print(f"  {url}: {loaded or 'the base model only'}{refused}")


@adapters_app.command("add")
def adapters_add(
    path: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="A saved peft LoRA adapter folder.")],
    tenant: TenantOpt = None,
    promote: Annotated[bool, typer.Option("--promote", help="Serve it from the next request on.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Register a LoRA adapter trained elsewhere as the tenant's next version (copied in, manifest written)."""
    from agent.models.adapter_import import AdapterRejected, add_adapter

    settings = load_settings()
    tenant_id = tenant or settings.default_tenant
    try:
        result = add_adapter(
            settings.adapter_registry,
            path,
            tenant=tenant_id,
            base_model=settings.phi3_model,
            max_rank=settings.max_lora_rank,
            promote=promote,
        )
    except AdapterRejected as exc:
        if as_json:
            print_json({"tenant": tenant_id, "added": False, "reason": str(exc)})
        else:
            err.print(f"[red]refused:[/] {exc}")
        raise typer.Exit(1) from None
    if as_json:
        print_json({**result, "added": True})
        return
    for warning in result["warnings"]:
        err.print(f"[yellow]warning:[/] {warning}")
    state = "now serves" if result["promoted"] else "added (promote it with `expertbot adapters promote`) for"
    out.print(f"{result['version']} (rank {result['rank']}, {', '.join(result['target_modules'])}) {state} {tenant_id}")


@adapters_app.command("promote")
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


@adapters_app.command("rollback")
def adapters_rollback(tenant: TenantOpt = None) -> None:
    """Go back to the version the tenant was served before the current one (or to the base model)."""
    tenant_id, registry = _registry(tenant)
    try:
        back = registry.rollback()
    except LookupError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    out.print(f"rolled back: {back.name if back else 'the base model'} now serves {tenant_id}")
