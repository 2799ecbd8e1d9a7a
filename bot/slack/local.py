"""`expertbot slack --local`: try the Slack app without a Slack workspace.

The app runs in HTTP mode exactly as in production (bolt checks every request's signature and timestamp),
but its Web API calls go to the local Slack Web API the tests use (`bot/bench/fakes/slack_api.py`). This
terminal plays Slack: each line typed is delivered to the app as a signed `app_mention` event, and what the
app then sends to Slack (`chat.postMessage`, `chat.update`) is printed. Follow-ups stay in one thread (the
app keeps its context) until `/new`. The endpoint and signing secret are printed too, so that any other
client (curl, a script) can post signed requests to the same app while it runs. Needs the stack (`expertbot
up --no-chat`), like `expertbot chat`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any
from uuid import uuid4

from agent.settings import Settings
from bot.assistant import Assistant
from bot.bench.fakes.slack_api import Call, LocalSlack
from bot.bench.fakes.slack_loopback import SECRET, Loopback, loopback, mention

CHANNEL = "C0LOCAL"
USER = "U0LOCAL"
SAYS = ("chat.postMessage", "chat.update", "chat.postEphemeral")
"""The Web API methods by which the app says something in a conversation."""


def _reply_to(call: Call, thread: str) -> bool:
    return call.method in SAYS and call.args.get("thread_ts") in (thread, None) and bool(call.args.get("text"))


async def _ask(lb: Loopback, text: str, thread: str | None, timeout_s: float) -> tuple[str, list[str]]:
    """Deliver one mention (in `thread`, or starting one); returns the thread and what the app said in it."""
    ts = f"{time.time():.6f}"
    event = mention(lb.slack.team, CHANNEL, f"<@{lb.slack.bot_user}> {text}", ts, f"Ev{uuid4().hex[:10]}", USER)
    if thread:
        event["event"]["thread_ts"] = thread
    thread = thread or ts
    seen = len(lb.slack.calls)
    status, body = await lb.post(event)
    if status != 200:
        return thread, [f"(the app refused the event: HTTP {status} {body})"]

    def answered() -> bool:  # the answer, or a report of what went wrong: both are posted in the thread
        return any(c.method == "chat.postMessage" and _reply_to(c, thread) for c in lb.slack.calls[seen:])

    try:
        await lb.slack.wait_for(answered, timeout=timeout_s)
    except TimeoutError:
        return thread, [f"(no reply within {timeout_s:.0f} s)"]
    return thread, [str(c.args["text"]) for c in lb.slack.calls[seen:] if _reply_to(c, thread)]


async def run_local(
    settings: Settings,
    read_line: Callable[[], str | None],
    write: Callable[[str], Any],
    *,
    timeout_s: float = 120.0,
) -> None:
    """Serve the app against a local Slack and talk to it through `read_line` (None: end) and `write`."""
    assistant = Assistant(settings)
    write("loading the knowledge base and the models ...")
    await assistant.warm_up()
    slack = LocalSlack()
    slack.add_channel(CHANNEL)
    async with loopback(settings, assistant, slack) as lb:
        write(
            f"Slack app on {lb.url} (signing secret {SECRET!r}), talking to a local Slack Web API on "
            f"{slack.base_url}.\nYou are {USER} in #{CHANNEL} of workspace {slack.team}: type a question; "
            "/new starts a new thread, /quit leaves."
        )
        thread: str | None = None
        while (line := await asyncio.to_thread(read_line)) is not None:
            line = line.strip()
            if line in ("/quit", "/exit"):
                break
            if line == "/new":
                thread = None
                write("new thread")
                continue
            if line:
                thread, said = await _ask(lb, line, thread, timeout_s)
                for text in said:
                    write(f"bot> {text}")


def read_stdin_line() -> str | None:
    """One line from the terminal; None at end of input (Ctrl-D)."""
    try:
        return input("you> ")
    except EOFError:
        return None
