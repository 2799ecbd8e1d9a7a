"""Sharing and asking from the terminal: `expertbot ingest`, `ask` and `search`, as a chat surface would."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from agent.knowledge.fusion import SEARCH_MODES, SearchMode
from agent.types import Route
from bot.cli.common import JsonOpt, ScopeOpt, TenantOpt, audience_of, err, fail, load_settings, out, print_json


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to share with the bot.")],
    tenant: TenantOpt = None,
    scope: ScopeOpt = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the jobs and show their progress.")] = False,
) -> None:
    """Queue documents for ingestion by the workers; exits 1 when any named file was not (skipped or failed)."""
    from bot.jobs import follow_with_bars, submit_files

    settings = load_settings()
    audience = audience_of(settings, tenant, scope)
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise fail(f"no such file or folder: {', '.join(missing)}")
    # A file's document id is its name, as when it is shared in chat; inside a folder, its relative path.
    files = [(path, path.name) for path in paths if path.is_file()] + [
        (p, p.relative_to(path).as_posix())
        for path in paths
        if path.is_dir()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    ]
    jobs, skipped = submit_files(settings, audience, files, err)
    err.print(f"queued {len(jobs)} document(s) for {audience.tenant}/{audience.scope}")
    if not wait:
        for job_id, name in jobs.items():
            out.print(f"{job_id}  {name}", markup=False, highlight=False, soft_wrap=True)
    failed = follow_with_bars(jobs, err) if wait else {}
    for sentence in failed.values():  # whole: a progress bar's line is cut at the terminal's width
        err.print(f"[red]not ingested:[/] {escape(sentence)}", soft_wrap=True)
    if skipped or failed:
        err.print(f"{len(skipped) + len(failed)} of {len(files)} file(s) not ingested", soft_wrap=True)
        raise typer.Exit(1)


def ask(
    question: str,
    tenant: TenantOpt = None,
    scope: ScopeOpt = None,
    route: Annotated[str, typer.Option(help="auto, docs (retrieval) or expert (domain model)")] = "auto",
    thread: Annotated[
        str | None, typer.Option(help="Conversation id: the same id keeps the context (default: a new one).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask one question through the chat core, as a chat surface would."""
    from agent.chat import make_chat_core
    from agent.types import ChatRequest
    from bot.console import render

    forced: dict[str, Route | None] = {"auto": None, "docs": "retrieve", "expert": "domain"}
    if route not in forced:
        raise fail("--route must be auto, docs or expert", 2)
    settings = load_settings()
    request = ChatRequest(
        text=question,
        audience=audience_of(settings, tenant, scope),
        thread=thread or f"cli-{uuid.uuid4().hex[:12]}",  # each call its own conversation, unless told
        forced_route=forced[route],
    )
    reply = make_chat_core(settings).answer(request)
    if as_json:
        print_json({**reply.__dict__, "sources": [s.__dict__ for s in reply.sources]})
    else:
        render(reply, out)


def search(
    question: str,
    tenant: TenantOpt = None,
    scope: ScopeOpt = None,
    k: Annotated[int, typer.Option("-k", min=1, max=50)] = 5,
    mode: Annotated[str, typer.Option(help=" | ".join(SEARCH_MODES))] = "hybrid",
    as_json: JsonOpt = False,
) -> None:
    """Show the best passages for a question, as the bot would see them."""
    from agent.knowledge.service import open_knowledge

    settings = load_settings()
    modes: dict[str, SearchMode] = {m: m for m in SEARCH_MODES}
    if mode not in modes:
        raise fail(f"--mode must be one of {', '.join(SEARCH_MODES)}", 2)
    hits = open_knowledge(settings).search(audience_of(settings, tenant, scope), question, k=k, mode=modes[mode])
    if as_json:
        print_json({"hits": [h.__dict__ for h in hits]})
        return
    if not hits:
        out.print("nothing found in the documents visible from this scope")
    for i, h in enumerate(hits, 1):
        out.print(
            f"[bold][{i}] {h.title}[/] — {h.heading or '(top)'}  [dim]{h.doc_id} · scope {h.scope} · {h.score:.3f}[/]"
        )
        out.print("    " + " ".join(h.text.split())[:300])
