"""A local HTTP server speaking the Bot Framework connector's REST API, for tests and benchmarks.

It stands where Teams' `serviceUrl` points: the bot's replies arrive as they would in production
(`POST /v3/conversations/{id}/activities[/{replyToId}]`, `PUT .../activities/{activityId}` for updates) and are
recorded, so a test can read what a person would have seen. It can also serve files (`/files/{name}`), standing in
for the SharePoint `downloadUrl` Teams gives for a file sent in a personal chat.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Sent:
    """One call the bot made: "post" (a new message, maybe a reply) or "update" (an edit)."""

    kind: str
    conversation: str
    activity: dict[str, Any]
    reply_to: str | None = None
    activity_id: str = ""
    at: float = field(default_factory=time.monotonic)

    @property
    def type(self) -> str:
        return str(self.activity.get("type", ""))

    @property
    def text(self) -> str:
        return str(self.activity.get("text") or "")

    @property
    def card(self) -> dict[str, Any] | None:
        for attachment in self.activity.get("attachments") or []:
            if attachment.get("contentType") == "application/vnd.microsoft.card.adaptive":
                content = attachment.get("content")
                return content if isinstance(content, dict) else None
        return None


class LoopbackConnector:
    """Start with `await start()`; `url` is the serviceUrl to put in activities; `stop()` when done."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.posted = 0
        """Messages posted so far (not typing, not edits): a cheap counter for waiting on many replies."""
        self.files: dict[str, tuple[bytes, str]] = {}
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v3/conversations/{conversation}/activities", self._post)
        app.router.add_post("/v3/conversations/{conversation}/activities/{reply_to}", self._post)
        app.router.add_put("/v3/conversations/{conversation}/activities/{activity_id}", self._put)
        app.router.add_get("/files/{name}", self._file)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def serve_file(self, name: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        self.files[name] = (data, content_type)
        return f"{self.url}files/{name}"

    async def _record(self, sent: Sent) -> None:
        async with self._changed:
            self.sent.append(sent)
            self.posted += sent.kind == "post" and sent.type == "message"
            self._changed.notify_all()

    async def _post(self, request: web.Request) -> web.Response:
        activity = await request.json()
        activity_id = f"bot-{next(self._ids)}"
        conversation = request.match_info["conversation"]
        await self._record(Sent("post", conversation, activity, request.match_info.get("reply_to"), activity_id))
        return web.json_response({"id": activity_id})

    async def _put(self, request: web.Request) -> web.Response:
        activity = await request.json()
        activity_id = request.match_info["activity_id"]
        await self._record(Sent("update", request.match_info["conversation"], activity, None, activity_id))
        return web.json_response({"id": activity_id})

    async def _file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.files:
            return web.Response(status=404)
        data, content_type = self.files[name]
        return web.Response(body=data, content_type=content_type)

    def messages(self, conversation: str | None = None) -> list[Sent]:
        """Posted messages (not typing indicators, not edits), optionally in one conversation."""
        return [
            s
            for s in self.sent
            if s.kind == "post" and s.type == "message" and (conversation is None or s.conversation == conversation)
        ]

    async def wait_for(self, predicate: Any, timeout_s: float = 30.0) -> list[Sent]:
        """Wait until `predicate(self.sent)` is true; returns the recording (raises TimeoutError otherwise)."""

        async def until() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: bool(predicate(self.sent)))

        await asyncio.wait_for(until(), timeout_s)
        return self.sent
