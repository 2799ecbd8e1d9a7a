"""The Slack surface on loopback: the bot's HTTP endpoint wired to a local Web API server, and a client that
sends it requests signed as Slack signs them. Used by the benchmarks and the reliability checks."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp

from agent.settings import Settings
from bot.assistant import Assistant
from bot.bench.fakes.slack_api import LocalSlack, signed_headers
from bot.slack.app import SlackBot
from bot.slack.serve import EVENTS_PATH, start_http

SECRET = "local-signing-secret"


def mention(team: str, channel: str, text: str, ts: str, event_id: str, user: str = "U0ASKER") -> dict[str, Any]:
    """An `app_mention` event callback, shaped as Slack sends it."""
    return {
        "token": "verification_token", "team_id": team, "api_app_id": "A0LOCAL", "type": "event_callback",
        "event": {"type": "app_mention", "client_msg_id": event_id, "text": text, "user": user, "ts": ts,
                  "team": team, "channel": channel, "event_ts": ts},
        "event_id": event_id, "event_time": int(time.time()), "authed_users": ["U0BOT"],
    }  # fmt: skip


@dataclass
class Loopback:
    slack: LocalSlack
    bot: SlackBot | None
    """None when the bot runs in another process."""
    url: str
    session: aiohttp.ClientSession

    async def post(
        self,
        body: dict[str, Any] | str,
        *,
        form: bool = False,
        retry: int | None = None,
        timestamp: int | None = None,
        secret: str = SECRET,
        tamper: bool = False,
    ) -> tuple[int, str]:
        """POST an event (JSON) or a command/interaction (form); returns the status and the body."""
        text = body if isinstance(body, str) else urlencode(body) if form else json.dumps(body)
        headers = signed_headers(secret, text, timestamp)
        headers["Content-Type"] = "application/x-www-form-urlencoded" if form else "application/json"
        if retry is not None:
            headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
        sent = text + " " if tamper else text
        async with self.session.post(self.url, data=sent.encode(), headers=headers) as resp:
            return resp.status, await resp.text()


@asynccontextmanager
async def loopback(
    settings: Settings, assistant: Assistant, slack: LocalSlack | None = None
) -> AsyncIterator[Loopback]:
    """Start the local Web API server and the bot's HTTP endpoint (free ports); stop both afterwards."""
    slack = slack or LocalSlack()
    await slack.start()
    settings = settings.model_copy(update={"slack_bot_token": slack.token, "slack_signing_secret": SECRET})
    bot = SlackBot(settings.model_copy(update={"slack_api_url": slack.base_url}), assistant)
    runner = await start_http(bot, "127.0.0.1", 0)
    port = runner.addresses[0][1]
    connector = aiohttp.TCPConnector(limit=0)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            yield Loopback(slack, bot, f"http://127.0.0.1:{port}{EVENTS_PATH}", session)
    finally:
        await runner.cleanup()
        await slack.stop()
