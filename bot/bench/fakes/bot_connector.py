"""A local HTTP server speaking the Bot Framework connector's REST API, for tests and benchmarks.

It stands where Teams' `serviceUrl` points: the bot's replies arrive as they would in production
(`POST /v3/conversations/{id}/activities[/{replyToId}]`, `PUT .../activities/{activityId}` for updates) and are
recorded, so a test can read what a person would have seen. It can also serve files (`/files/{name}`), standing in
for the SharePoint `downloadUrl` Teams gives for a file sent in a personal chat.

Streamed messages follow Teams' protocol and its answers (learn.microsoft.com/microsoftteams/platform/bots/
streaming-ux): a first `typing` activity with a `streaminfo` entity (sequence 1, text required) gets 201 and the
stream id; each later update must carry that id, a higher sequence and, when `streaming`, all the text streamed
before it, and gets 202; the final `message` (`streamType: final`, no sequence) closes the stream and becomes the
message with the stream's id. Refused as Teams refuses them: streams outside personal chats, a second stream in
a chat, updates to a closed stream or one older than `stream_limit_s` (403 ContentStreamNotAllowed), updates
closer together than `min_interval_s` (429), malformed ones (400).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

STREAM_LIMIT_S = 120.0
MIN_INTERVAL_S = 1.0


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

    def entity(self, entity_type: str) -> dict[str, Any] | None:
        for entity in self.activity.get("entities") or []:
            if entity.get("type") == entity_type:
                return dict(entity)
        return None

    @property
    def stream_type(self) -> str | None:
        """ "informative", "streaming" or "final" for the activities of a stream; None otherwise."""
        info = self.entity("streaminfo")
        return str(info.get("streamType") or "streaming") if info else None

    @property
    def citations(self) -> list[dict[str, Any]]:
        message = self.entity("https://schema.org/Message") or {}
        return list(message.get("citation") or [])

    @property
    def ai_generated(self) -> bool:
        message = self.entity("https://schema.org/Message") or {}
        return "AIGeneratedContent" in (message.get("additionalType") or [])

    @property
    def feedback_loop(self) -> bool:
        return bool((self.activity.get("channelData") or {}).get("feedbackLoopEnabled"))

    @property
    def card(self) -> dict[str, Any] | None:
        for attachment in self.activity.get("attachments") or []:
            if attachment.get("contentType") == "application/vnd.microsoft.card.adaptive":
                content = attachment.get("content")
                return content if isinstance(content, dict) else None
        return None


@dataclass
class _Stream:
    conversation: str
    started: float
    last: float
    sequence: int
    text: str = ""
    done: bool = False


class LoopbackConnector:
    """Start with `await start()`; `url` is the serviceUrl to put in activities; `stop()` when done."""

    def __init__(self, *, stream_limit_s: float = STREAM_LIMIT_S, min_interval_s: float = MIN_INTERVAL_S) -> None:
        self.stream_limit_s = stream_limit_s
        self.min_interval_s = min_interval_s
        self.streams: dict[str, _Stream] = {}
        self.refused: list[tuple[int, str, dict[str, Any]]] = []
        """(status, error message, activity) of every streaming request refused."""
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
        info = next((e for e in activity.get("entities") or [] if e.get("type") == "streaminfo"), None)
        status = 200
        if info is not None:
            status, answer = self._stream(conversation, activity, info, activity_id)
            if status >= 400 or "error" in answer:
                self.refused.append((status, str(answer["error"]["message"]), activity))
                return web.json_response(answer, status=status)
            activity_id = str(answer.get("id") or info.get("streamId") or activity_id)
        await self._record(Sent("post", conversation, activity, request.match_info.get("reply_to"), activity_id))
        return web.json_response({"id": activity_id} if status in (200, 201) else {}, status=status)

    def _stream(
        self, conversation: str, activity: dict[str, Any], info: dict[str, Any], new_id: str
    ) -> tuple[int, dict[str, Any]]:
        """Teams' streaming rules: (status, body) for one request of a stream."""

        def error(status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
            return status, {"error": {"code": code, "message": message}}

        now = time.monotonic()
        kind = info.get("streamType") or "streaming"
        if (activity.get("conversation") or {}).get("conversationType", "personal") != "personal":
            return error(403, "ContentStreamNotAllowed", "Content stream is not allowed")
        stream_id = info.get("streamId")
        if not stream_id:
            if activity.get("type") != "typing" or kind == "final" or not activity.get("text"):
                return error(400, "BadRequest", "Start streaming activities should include text")
            if info.get("streamSequence") != 1:
                return error(400, "BadRequest", "The first streamSequence must be 1")
            if any(s.conversation == conversation and not s.done and now - s.started < self.stream_limit_s
                   for s in self.streams.values()):  # fmt: skip
                return error(403, "ContentStreamNotAllowed", "Content stream is not allowed")
            text = activity["text"] if kind == "streaming" else ""
            self.streams[new_id] = _Stream(conversation, now, now, 1, text)
            return 201, {"id": new_id}
        stream = self.streams.get(str(stream_id))
        if stream is None or stream.conversation != conversation:
            return error(400, "BadRequest", "Unknown streamId")
        if stream.done:
            return error(403, "ContentStreamNotAllowed",
                         "Content stream is not allowed on an already completed streamed message")  # fmt: skip
        if now - stream.started > self.stream_limit_s:
            stream.done = True
            return error(403, "ContentStreamNotAllowed", "Content stream finished due to exceeded streaming time.")
        if kind == "final":
            if activity.get("type") != "message" or "streamSequence" in info:
                return error(400, "BadRequest", "The final message is a message without streamSequence")
            stream.done = True
            return 202, {"id": stream_id}
        if activity.get("type") != "typing" or not isinstance(info.get("streamSequence"), int):
            return error(400, "BadRequest", "Streaming updates are typing activities with a streamSequence")
        if info["streamSequence"] <= stream.sequence:  # Teams drops it, and says so with a 202
            message = "PreCondition failed exception when processing streaming activity."
            return error(202, "ContentStreamSequenceOrderPreConditionFailed", message)
        if now - stream.last < self.min_interval_s:
            return error(429, "Throttled", "API calls quota exceeded")
        if kind == "streaming":
            if not str(activity.get("text") or "").startswith(stream.text):
                return error(403, "ContentStreamNotAllowed",
                             "Request streamed content should contain the previously streamed content")  # fmt: skip
            stream.text = str(activity.get("text") or "")
        stream.sequence, stream.last = info["streamSequence"], now
        return 202, {"id": stream_id}

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
