"""`expertbot docs`: list, forget and migrate the documents in the knowledge base."""

from __future__ import annotations

import typer
from rich.table import Table

from agent.types import Audience
from bot.cli.common import JsonOpt, ScopeOpt, TenantOpt, audience_of, err, fail, load_settings, out, print_json

docs_app = typer.Typer(help="List or forget documents.", no_args_is_help=True)


@docs_app.command("list")
def docs_list(tenant: TenantOpt = None, scope: ScopeOpt = None, as_json: JsonOpt = False) -> None:
    """Documents visible from a scope (all of the tenant's without --scope)."""
    from agent.knowledge.service import open_knowledge

    settings = load_settings()
    tenant_id = tenant or settings.default_tenant
    scopes = Audience(tenant_id, scope).visible_scopes if scope else None
    docs = open_knowledge(settings).store.list_documents(tenant_id, scopes)
    if as_json:
        print_json({"documents": [d.__dict__ for d in docs]})
        return
    table = Table("scope", "document", "title", "chunks")
    for d in docs:
        table.add_row(d.scope, d.doc_id, d.title, str(d.chunks))
    out.print(table)


@docs_app.command("forget")
def docs_forget(doc_id: str, tenant: TenantOpt = None, scope: ScopeOpt = None) -> None:
    """Remove a document from one scope everywhere it left a trace: its passages, the answers and votes quoting it,
    the conversations citing it (as the chat command `forget` does)."""
    from agent.forgetting import forget_document
    from agent.knowledge.service import open_knowledge
    from agent.learning import LearningStore

    settings = load_settings()
    learning = LearningStore.from_url(settings.effective_redis_url)
    store = open_knowledge(settings).store
    gone = forget_document(store, learning, settings.memory_path, audience_of(settings, tenant, scope), doc_id)
    if not gone.passages:
        raise fail(f"no document {doc_id!r} in that scope (see `expertbot docs list`)")
    out.print(
        f"forgot {doc_id}: {gone.passages} chunks removed, "
        f"{gone.answers} answers quoting it and {gone.conversations} conversations citing it deleted"
    )


@docs_app.command("migrate")
def docs_migrate() -> None:
    """Move a knowledge base built by expertbot 0.1 (one collection) into the audience buckets; safe to rerun."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from agent.knowledge.migrate import migrate, needs_migration
    from agent.knowledge.service import open_knowledge

    store = open_knowledge(load_settings()).store
    if not needs_migration(store):
        err.print(f"nothing to migrate: {store.collection!r} already uses the audience buckets")
        return
    with Progress("moving passages", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err) as bars:
        task = bars.add_task("migrate", total=None)
        moved = migrate(store, lambda done, total: bars.update(task, completed=done, total=total))
    store.ensure_ready()
    out.print(f"moved {moved} passages into {len(store.buckets())} audience buckets")
