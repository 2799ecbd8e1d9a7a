"""`expertbot slack --local`: try the Slack app without a Slack workspace.

The app runs in HTTP mode exactly as in production (bolt checks every request's signature and timestamp),
but its Web API calls go to the local Slack Web API the tests use (`bot/bench/fakes/slack_api.py`). This
terminal plays Slack: each line typed is delivered to the app as a signed `app_mention` event, and once the app
has finished with it, the thread's new messages are printed as a person would read them (streamed with
`chat.startStream`…`chat.stopStream`, or posted and edited), with the route and sources. Follow-ups stay in
one thread (the app keeps its context) until `/new`. The endpoint and signing secret are printed too, so that any other
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
from bot.bench.fakes.slack_api import LocalSlack
from bot.bench.fakes.slack_loopback import SECRET, Loopback, loopback, mention

CHANNEL = "C0LOCAL"
USER = "U0LOCAL"


def _shown(message: dict[str, Any]) -> str:
    """A message as a person reads it: its text (streamed or posted), then the route and the sources under it."""
    lines = [str(message.get("text") or "").strip()]
    for block in message.get("blocks") or []:
        if block.get("type") == "context":
            lines += [str(e.get("text") or "") for e in block.get("elements") or [] if e.get("type") == "mrkdwn"]
        elif block.get("type") == "section" and str((block.get("text") or {}).get("text", "")).startswith("*Sources*"):
            lines.append(str(block["text"]["text"]))
    return "\n".join(line for line in lines if line)


async def _ask(lb: Loopback, text: str, thread: str | None, timeout_s: float) -> tuple[str, list[str]]:
    """Deliver one mention (in `thread`, or starting one); returns the thread and what the app said in it.

    The app answers by streaming (`chat.startStream` … `chat.stopStream`), by posting then editing, or with one
    post (help, a failure): so this waits until the app has finished with the question, then reads the thread's
    new messages as they now stand."""
    assert lb.bot is not None, "the app runs in this process"
    ts = f"{time.time():.6f}"
    event = mention(lb.slack.team, CHANNEL, f"<@{lb.slack.bot_user}> {text}", ts, f"Ev{uuid4().hex[:10]}", USER)
    if thread:
        event["event"]["thread_ts"] = thread
    thread = thread or ts
    before, handled = set(lb.slack.messages), lb.bot.handled
    status, body = await lb.post(event)
    if status != 200:
        return thread, [f"(the app refused the event: HTTP {status} {body})"]
    bot = lb.bot
    try:
        await lb.slack.wait_for(lambda: bot.handled > handled, timeout=timeout_s)
    except TimeoutError:
        return thread, [f"(no reply within {timeout_s:.0f} s)"]
    new = [m for ts_, m in lb.slack.messages.items() if ts_ not in before and m.get("thread_ts") in (thread, None)]
    said = [_shown(m) for m in new]
    return thread, [s for s in said if s] or ["(the app said nothing)"]


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
