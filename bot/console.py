"""The local chat console: the same chat core as Slack and Teams, in a terminal.

Besides questions it understands the commands the chat surfaces have (/docs, /status, /teach, ...) through the
same `Assistant`, plus /ingest PATH for local files. Questions may start with `docs:` or `expert:` to force a route.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.text import Text

from agent.chat import StreamEvent
from agent.settings import Settings
from agent.types import Audience, ChatReply, ChatRequest, Hit
from bot.assistant import Assistant
from bot.conversation import ROUTE_LABELS, Conversation

HELP = """Ask a question about the documents shared with the bot, or:
  /ingest PATH          share a document with this conversation
  /docs                 list the documents visible here
  /status               documents, queued jobs, the domain model and its adapter
  /teach TERM :: TEXT   teach a term (used at the next retraining)
  /forget DOC           forget a document shared here
  /retrain              retrain the domain adapter now
  /good, /bad           rate the last answer (good answers train the adapter)
  /new                  start a new conversation (forget the context)
  /help                 this help
  /quit                 leave (Ctrl-D works too)"""

CONSOLE_USER = "console"
"""The person at the terminal runs this installation, so the console may use the admin commands."""
_COMMANDS = {"/docs", "/status", "/teach", "/forget", "/retrain"}


def render(reply: ChatReply, console: Console) -> None:
    _route_line(reply.route, reply.confidence, reply.why, console)
    console.print(reply.text, markup=False, highlight=False)
    _sources(list(enumerate(reply.sources, 1)), console)


def render_stream(events: Iterator[StreamEvent], console: Console) -> ChatReply:
    """Print a streamed answer as it comes (route, text as generated, sources); returns the whole reply."""
    reply: ChatReply | None = None
    for event in events:
        if event.kind == "route" and event.route:
            _route_line(event.route, event.confidence, event.why, console)
        elif event.kind == "text":
            console.out(event.text, end="", highlight=False)  # plain text, no markup, as it arrives
        elif event.kind == "sources":
            console.out("")
            _sources(event.sources, console)
        elif event.kind == "done":
            reply = event.reply
    if reply is None:
        raise RuntimeError("the answer stream ended without a reply")
    return reply


def _route_line(route: str, confidence: float, why: str, console: Console) -> None:
    console.print(f"[dim]route: {ROUTE_LABELS.get(route, route)} (confidence {confidence:.2f}; {why})[/]")


def _sources(sources: list[tuple[int, Hit]], console: Console) -> None:
    if not sources:
        return
    console.print("[bold]Sources[/]")
    for i, s in sources:
        # Titles and ids come from documents: plain text, so that a "[" in them is shown, not read as markup.
        heading = f" › {s.heading}" if s.heading else ""
        console.print(Text.assemble(f"  [{i}] {s.title}{heading}  ", (f"({s.doc_id}, shared in {s.scope})", "dim")))


def _ingest(settings: Settings, audience: Audience, arg: str, console: Console) -> None:
    from bot.jobs import follow_with_bars, submit_files

    path = Path(arg).expanduser()
    if not path.is_file():
        console.print(f"no such file: {path}")
        return
    jobs, _ = submit_files(settings, audience, [(path, path.name)], console)  # a skip is printed with its reason
    if jobs:
        for sentence in follow_with_bars(jobs, console).values():
            console.print(sentence, markup=False, highlight=False, soft_wrap=True)


def run_console(settings: Settings, audience: Audience | None = None) -> None:
    console = Console()
    audience = audience or Audience(settings.default_tenant, settings.default_scope)
    admins = ",".join(filter(None, [settings.admins, CONSOLE_USER]))
    assistant = Assistant(settings.model_copy(update={"admins": admins}))
    loop = asyncio.new_event_loop()  # one loop for the session: the assistant's primitives stay bound to it
    try:
        with console.status("loading the knowledge base and the models ..."):
            loop.run_until_complete(assistant.warm_up())
        _session(settings, assistant, audience, console, loop)
    finally:
        loop.close()


def _session(
    settings: Settings, assistant: Assistant, audience: Audience, console: Console, loop: asyncio.AbstractEventLoop
) -> None:
    def conversation() -> Conversation:
        return Conversation("console", audience, f"console-{uuid.uuid4().hex[:8]}", CONSOLE_USER, private=False)

    conv = conversation()
    last_answer = ""
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
            conv = conversation()
            console.print("new conversation")
        elif command == "/ingest":
            _ingest(settings, audience, arg.strip(), console)
        elif command in _COMMANDS:
            console.print(loop.run_until_complete(assistant.command(conv, line[1:])), markup=False, highlight=False)
        elif command in ("/good", "/bad"):
            ok = bool(last_answer) and assistant.vote(last_answer, CONSOLE_USER, helpful=command == "/good")
            console.print("thanks, noted" if ok else "there is no answer to rate yet")
        else:
            last_answer = _answer_streaming(assistant, conv, line, console)


def _answer_streaming(assistant: Assistant, conv: Conversation, line: str, console: Console) -> str:
    """The console has its chat core in process: show the answer while it is generated, then remember it for
    /good and /bad as `Assistant.answer` would. Returns the answer id."""
    request = ChatRequest(text=line, audience=conv.audience, user=conv.user, thread=conv.thread)
    reply = render_stream(assistant.core.stream(request), console)
    return assistant.learning.remember_answer(conv.audience, line, reply.text, reply.route)
