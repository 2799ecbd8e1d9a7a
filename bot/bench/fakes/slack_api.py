"""A local HTTP server that speaks the part of the Slack Web API the bot uses, for tests and benchmarks.

It answers like Slack does: `{"ok": false, "error": "invalid_auth"}` without the bot token, a sign-in page
(HTML, status 200) for a file download without it, HTTP 429 with Retry-After when told to throttle a method,
and `response_url` posts for slash commands. Every call is recorded, so a test can read what the bot said.
Also here: signing a request the way Slack signs the requests it sends to an app.

Streamed messages (`chat.startStream`, `chat.appendStream`, `chat.stopStream`) keep their state as Slack does:
a stream needs a thread, and in a channel a recipient; appending to or stopping a stream that is stopped or
older than `stream_limit_s` fails with `message_not_in_streaming_state`; `refuse_streams` makes every start fail
with the given error (a workspace or a message Slack will not stream to). `messages` holds each message as a
person would now see it (text and blocks after every stream call and edit). The agent view's methods
(`assistant.threads.setStatus`, `setSuggestedPrompts`, `setTitle`), `conversations.members` and `users.info`
(with the locale) answer from the workspace's fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from slack_sdk.signature import SignatureVerifier

LOGIN_PAGE = b"<!DOCTYPE html><html><head><title>Slack</title></head><body><form>Sign in to Slack</form></body></html>"


def signed_headers(secret: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack adds to a request it sends to an app (v0 HMAC-SHA256 over `v0:ts:body`)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": str(signature)}


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


@dataclass
class LocalSlack:
    """The fake workspace: its token, bot user, files, channels, and every call received."""

    token: str = "xoxb-local-test-token"
    app_token: str = "xapp-local-test-token"
    """Socket Mode: `apps.connections.open` with it returns this server's websocket URL."""
    team: str = "T0LOCAL"
    bot_user: str = "U0BOT"
    files: dict[str, tuple[dict[str, Any], bytes, str]] = field(default_factory=dict)
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)
    members: dict[str, list[str]] = field(default_factory=dict)
    """channel -> its members, for conversations.members (a channel not listed: `channel_not_found`)."""
    locales: dict[str, str] = field(default_factory=dict)
    """user -> locale, for users.info (default en-US)."""
    refuse_streams: str | None = None
    """An error every chat.startStream gets, as for a workspace or message Slack will not stream to (None: allowed)."""
    stream_limit_s: float = 300.0
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    """ts -> {"channel", "thread_ts", "text", "blocks", "state"}: each message as it reads now."""
    calls: list[Call] = field(default_factory=list)
    throttle: Counter[str] = field(default_factory=Counter)
    """method -> how many of its next calls get HTTP 429."""
    base_url: str = ""
    _ts: int = 0
    _runner: web.AppRunner | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _sockets: list[web.WebSocketResponse] = field(default_factory=list)

    # --- fixtures -------------------------------------------------------------------------------------------

    def add_file(
        self,
        file_id: str,
        name: str,
        data: bytes,
        *,
        mimetype: str = "application/pdf",
        serve: str = "file",
        channel: str | None = None,
        message_ts: str | None = None,
    ) -> dict[str, Any]:
        """Register a file; `serve="login"` answers its download with Slack's sign-in page instead."""
        url = f"{self.base_url.rsplit('/api/', 1)[0]}/files-pri/{self.team}-{file_id}/download/{name}"
        info: dict[str, Any] = {
            "id": file_id, "name": name, "title": name, "mimetype": mimetype,
            "filetype": name.rsplit(".", 1)[-1], "size": len(data), "mode": "hosted", "is_external": False,
            "url_private": url, "url_private_download": url,
            "permalink": f"https://local.slack.test/files/{self.bot_user}/{file_id}/{name}",
        }  # fmt: skip
        if channel and message_ts:
            kind = "private" if channel[:1] in "DG" or self.channels.get(channel, {}).get("is_private") else "public"
            info["shares"] = {kind: {channel: [{"ts": message_ts, "reply_count": 0}]}}
        self.files[file_id] = (info, data, serve)
        return info

    def add_channel(self, channel: str, *, private: bool = False) -> None:
        self.channels[channel] = {"id": channel, "is_private": private, "is_im": channel.startswith("D")}

    def said(self, method: str) -> list[dict[str, Any]]:
        return [c.args for c in self.calls if c.method == method]

    def answers(self, thread: str | None = None) -> list[dict[str, Any]]:
        """Finished answers (messages with blocks: stopped streams, posts and edits), optionally in one thread."""
        return [
            m
            for m in self.messages.values()
            if m.get("blocks") and m.get("state") != "streaming" and (thread is None or m.get("thread_ts") == thread)
        ]

    async def wait_for(self, predicate: Any, timeout: float = 60.0) -> None:
        """Wait until `predicate()` holds (checked after every call received)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"condition not met in {timeout:.0f} s; calls: {[c.method for c in self.calls]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))

    # --- server ---------------------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_get("/files-pri/{key}/download/{name}", self._download)
        app.router.add_post("/commands/{rest:.*}", self._response_url)
        app.router.add_get("/link", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.base_url = f"http://{host}:{bound}/api/"
        return self.base_url

    def response_url(self, name: str = "cmd") -> str:
        return f"{self.base_url.rsplit('/api/', 1)[0]}/commands/{self.team}/{name}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _record(self, method: str, args: dict[str, Any]) -> None:
        self.calls.append(Call(method, args))
        self._changed.set()

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                args.update(await request.json())
            else:
                args.update(dict(await request.post()))
        if method == "apps.connections.open":  # Socket Mode: authorised by the app-level token
            if request.headers.get("Authorization") != f"Bearer {self.app_token}":
                return web.json_response({"ok": False, "error": "invalid_auth"})
            self._record(method, args)
            return web.json_response(
                {"ok": True, "url": self.base_url.replace("http", "ws", 1)[: -len("api/")] + "link"}
            )
        if self.throttle[method] > 0:
            self.throttle[method] -= 1
            self._record(f"429:{method}", args)
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "1"})
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        self._record(method, args)
        return web.json_response(self._answer(method, args))

    def _answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {"ok": True, "url": "https://local.slack.test/", "team": "Local", "user": "expertbot",
                    "team_id": self.team, "user_id": self.bot_user, "bot_id": "B0BOT"}  # fmt: skip
        if method in ("chat.postMessage", "chat.update"):
            if method == "chat.postMessage":
                self._ts += 1
            ts = args.get("ts") or f"{int(time.time())}.{self._ts:06d}"
            message = self.messages.setdefault(ts, {"channel": args.get("channel"), "thread_ts": args.get("thread_ts")})
            message.update(text=args.get("text"), blocks=_blocks(args.get("blocks")), state="posted")
            return {"ok": True, "channel": args.get("channel"), "ts": ts, "message": {"text": args.get("text")}}
        if method.startswith("chat.") and method.endswith("Stream"):
            return self._stream(method, args)
        if method.startswith("assistant.threads."):
            missing = [a for a in ("channel_id", "thread_ts") if not args.get(a)]
            return {"ok": False, "error": f"invalid_arguments: {missing}"} if missing else {"ok": True}
        if method == "conversations.members":
            members = self.members.get(str(args.get("channel")))
            if members is None:
                return {"ok": False, "error": "channel_not_found"}
            return {"ok": True, "members": members, "response_metadata": {"next_cursor": ""}}
        if method == "users.info":
            user: dict[str, Any] = {"id": args.get("user"), "team_id": self.team}
            if str(args.get("include_locale")).lower() in ("1", "true"):
                user["locale"] = self.locales.get(str(args.get("user")), "en-US")
            return {"ok": True, "user": user}
        if method == "chat.getPermalink":
            channel, ts = args.get("channel"), str(args.get("message_ts", "")).replace(".", "")
            return {"ok": True, "channel": channel, "permalink": f"https://local.slack.test/archives/{channel}/p{ts}"}
        if method == "files.info":
            found = self.files.get(str(args.get("file")))
            return {"ok": True, "file": found[0]} if found else {"ok": False, "error": "file_not_found"}
        if method == "conversations.info":
            channel = self.channels.get(str(args.get("channel")))
            return {"ok": True, "channel": channel} if channel else {"ok": False, "error": "channel_not_found"}
        return {"ok": True}  # reactions.add/remove, chat.postEphemeral: nothing to return

    def _stream(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        """chat.startStream / appendStream / stopStream, with the states and errors Slack has."""
        text = str(args.get("markdown_text") or "") + "".join(
            str(c.get("text") or "") for c in args.get("chunks") or [] if c.get("type") == "markdown_text"
        )
        channel = str(args.get("channel") or "")
        if method == "chat.startStream":
            if self.refuse_streams:
                return {"ok": False, "error": self.refuse_streams}
            if not args.get("thread_ts"):
                return {"ok": False, "error": "invalid_arguments"}
            if not channel.startswith("D") and not (args.get("recipient_team_id") and args.get("recipient_user_id")):
                return {"ok": False, "error": "missing_recipient_user_id"}
            self._ts += 1
            ts = f"{int(time.time())}.{self._ts:06d}"
            self.messages[ts] = {"channel": channel, "thread_ts": args["thread_ts"], "text": text, "blocks": None,
                                 "state": "streaming", "started": time.monotonic()}  # fmt: skip
            return {"ok": True, "channel": channel, "ts": ts}
        message = self.messages.get(str(args.get("ts")))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        if message.get("state") == "streaming" and time.monotonic() - message["started"] > self.stream_limit_s:
            message["state"] = "expired"
        if message.get("state") != "streaming":
            return {"ok": False, "error": "message_not_in_streaming_state"}
        message["text"] += text
        if method == "chat.stopStream":
            message.update(state="stopped", blocks=_blocks(args.get("blocks")))
        return {"ok": True, "channel": channel, "ts": args.get("ts")}

    async def _download(self, request: web.Request) -> web.Response:
        file_id = request.match_info["key"].rsplit("-", 1)[-1]
        found = self.files.get(file_id)
        if found is None:
            return web.Response(status=404)
        info, data, serve = found
        authorised = request.headers.get("Authorization") == f"Bearer {self.token}"
        self._record("download", {"file": file_id, "authorised": authorised})
        if serve == "login" or not authorised:  # what Slack does: a sign-in page, status 200
            return web.Response(body=LOGIN_PAGE, content_type="text/html")
        return web.Response(body=data, content_type=str(info["mimetype"]))

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        """A Socket Mode connection: `hello`, then envelopes from `send_envelope`; the app's acks are recorded."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0LOCAL"}})
        self._record("socket_connected", {})
        async for message in ws:
            if message.type == web.WSMsgType.TEXT:
                self._record("socket_ack", json.loads(message.data))
        self._sockets.remove(ws)
        return ws

    async def send_envelope(self, payload: dict[str, Any], kind: str = "events_api") -> str:
        """Send one Socket Mode envelope to the connected app; returns its id (the app must ack it)."""
        envelope_id = f"env-{len(self.calls)}-{time.monotonic_ns()}"
        envelope = {
            "envelope_id": envelope_id,
            "payload": payload,
            "type": kind,
            "accepts_response_payload": kind != "events_api",
            "retry_attempt": 0,
            "retry_reason": "",
        }
        await self._sockets[-1].send_json(envelope)
        return envelope_id

    async def _response_url(self, request: web.Request) -> web.Response:
        self._record("response_url", json.loads(await request.text() or "{}"))
        return web.Response(text="ok")


def _blocks(blocks: Any) -> list[dict[str, Any]] | None:
    """Blocks as sent (slack-sdk sends a list in JSON bodies, a JSON string in form bodies)."""
    if isinstance(blocks, str):
        parsed = json.loads(blocks)
        return parsed if isinstance(parsed, list) else None
    return blocks if isinstance(blocks, list) else None
