"""Every `text` the bot sends to Slack is escaped, so that a file name, an answer or a document's words can never
become `<!channel>`, `<@U123>` or a disguised link.

Blocks are escaped where they are built (`blocks.py`); the top-level `text` of a message (the notification and
fallback text, progress lines, refusals that name a file) is escaped here, at the client, for every chat method,
so no call site can forget it. Slack's formatting guide: escape `&`, `<` and `>` and nothing else.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.slack.blocks import escape

ESCAPED_METHODS = frozenset({"chat.postMessage", "chat.update", "chat.postEphemeral", "chat.scheduleMessage"})


class EscapingWebClient(AsyncWebClient):
    """An AsyncWebClient whose chat methods escape the message's `text`."""

    async def api_call(
        self, api_method: str, *, json: dict[str, Any] | None = None, **kwargs: Any
    ) -> AsyncSlackResponse:
        if api_method in ESCAPED_METHODS and json is not None and isinstance(json.get("text"), str):
            json = {**json, "text": escape(json["text"])}
        return await super().api_call(api_method, json=json, **kwargs)


def make_client(token: str | None, base_url: str, session: aiohttp.ClientSession | None = None) -> AsyncWebClient:
    """A Web API client that waits out HTTP 429 (Retry-After) and retries dropped connections.

    Give it a session (from inside the event loop): without one, slack_sdk opens a new connection per call.
    """
    return EscapingWebClient(
        token=token,
        base_url=base_url,
        session=session,
        retry_handlers=[AsyncConnectionErrorRetryHandler(max_retry_count=2), AsyncRateLimitErrorRetryHandler(3)],
    )
