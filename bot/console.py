"""The local chat console: the same chat core as Slack and Teams, in a terminal.

Besides questions it understands a few commands: /ingest PATH, /docs, /new, /help, /quit. Questions may start
with `docs:` or `expert:` to force a route.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from rich.console import Console
from rich.text import Text

from agent.chat import make_chat_core
from agent.settings import Settings
from agent.types import Audience, ChatReply, ChatRequest

HELP = """Ask a question about the documents shared with the bot, or:
  /ingest PATH   share a document (PDF, Word, HTML, Markdown, text) with this conversation
  /docs          list the documents visible here
  /new           start a new conversation (forget the context)
  /help          this help
  /quit          leave (Ctrl-D works too)"""

_ROUTE_LABEL = {"retrieve": "from documents", "domain": "domain expert", "smalltalk": "chat"}


def render(reply: ChatReply, console: Console) -> None:
    console.print(
        f"[dim]route: {_ROUTE_LABEL.get(reply.route, reply.route)} (confidence {reply.confidence:.2f}; {reply.why})[/]"
    )
    console.print(reply.text, markup=False, highlight=False)
    if reply.sources:
        console.print("[bold]Sources[/]")
        for i, s in enumerate(reply.sources, 1):
            # Titles and ids come from documents: plain text, so that a "[" in them is shown, not read as markup.
            heading = f" › {s.heading}" if s.heading else ""
            console.print(Text.assemble(f"  [{i}] {s.title}{heading}  ", (f"({s.doc_id}, shared in {s.scope})", "dim")))


def _ingest(settings: Settings, audience: Audience, arg: str, console: Console) -> None:
    from bot.jobs import follow_jobs, submit_files

    path = Path(arg).expanduser()
    if not path.is_file():
        console.print(f"no such file: {path}")
        return
    jobs = submit_files(settings, audience, [(path, path.name)], console)
    if jobs:
        follow_jobs(jobs, console)


def run_console(settings: Settings, audience: Audience | None = None) -> None:
    console = Console()
    audience = audience or Audience(settings.default_tenant, settings.default_scope)
    with console.status("loading the knowledge base and the models ..."):
        core = make_chat_core(settings)
        core.knowledge.search(audience, "warm-up")  # connect, create the collection, load the embedding model
    thread = f"console-{uuid.uuid4().hex[:8]}"
    console.print(f"expertbot console — tenant {audience.tenant}, scope {audience.scope}. /help for commands.")
    while True:
        try:
            line = console.input("[bold green]you>[/] ").strip()
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if not line:
            continue
        command, _, arg = line.partition(" ")
        if command in ("/quit", "/exit"):
            return
        if command == "/help":
            console.print(HELP, markup=False)
        elif command == "/new":
            thread = f"console-{uuid.uuid4().hex[:8]}"
            console.print("new conversation")
        elif command == "/ingest":
            _ingest(settings, audience, arg.strip(), console)
        elif command == "/docs":
            docs = core.knowledge.store.list_documents(audience.tenant, audience.visible_scopes)
            for d in docs:
                console.print(f"  {d.doc_id} — {d.title} ({d.chunks} passages, scope {d.scope})", markup=False)
            if not docs:
                console.print("  no documents yet: /ingest PATH shares one")
        else:
            render(core.answer(ChatRequest(text=line, audience=audience, thread=thread)), console)
