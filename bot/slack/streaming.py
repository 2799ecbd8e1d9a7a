"""One answer delivered into a Slack thread: streamed where Slack allows it, posted then updated where not.

Streaming uses slack-sdk's `AsyncChatStream` (`chat.startStream`, `chat.appendStream`, `chat.stopStream`); the
final `chat.stopStream` adds the route, sources and feedback buttons under the streamed text. Slack refuses a
stream for some messages (those of bots and workflows, workspaces without the feature) and ends streams after
about five minutes (`message_not_in_streaming_state`). Whatever is refused, the answer still arrives: a refused
start posts the text with `chat.postMessage`, and a stream that can no longer be appended to or stopped is
finished with `chat.update` on the stream's own message, with the whole answer.

While the answer is prepared, the thread shows a status (`assistant.threads.setStatus`): "searching the
documents…", then "writing…", in the question's language. Posting the answer clears it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_chat_stream import AsyncChatStream
from slack_sdk.web.async_client import AsyncWebClient

from agent.language import phrase
from bot.conversation import Answer
from bot.slack.blocks import answer_blocks, answer_fallback, escape, escape_markdown, footer_blocks

log = logging.getLogger(__name__)

STREAM_BUFFER_CHARS = 200
"""Text gathered before each `chat.appendStream` (slack-sdk's buffer): fewer calls, within the rate limits."""
STREAM_LIMIT_S = 270.0
"""Slack ends a stream after about 5 minutes; past this age, the answer is finished with `chat.update` instead."""
UPDATE_EVERY_S = 1.0
"""The fallback's progressive `chat.update`s: Slack allows about one edit of a message per second."""

SEARCHING = "answer_status_searching"
WRITING = "answer_status_writing"
"""The statuses' phrases (agent/phrases.yaml): Slack shows them after the app's name."""
LOADING = ("working_searching", "working_reading", "working_writing")
"""The loading messages Slack rotates under the status."""


class SlackReply:
    """Status, text chunks, final blocks: call `status`, `append` (any number of times), then `finish` once."""

    def __init__(
        self,
        client: AsyncWebClient,
        channel: str,
        thread_ts: str,
        *,
        team: str,
        user: str,
        stream: bool = True,
        language: str = "en",
    ) -> None:
        self.client = client
        self.channel = channel
        self.thread_ts = thread_ts
        self.team = team
        self.user = user
        self.language = language
        """The question's: the statuses are in it, like the answer."""
        self.streaming = stream and bool(user)
        """False from the start for messages Slack will not stream to (bots, workflows), or after a refusal."""
        self.mode = "stream" if self.streaming else "post"
        self.text = ""
        self.ts: str | None = None
        """The answer message, once it exists."""
        self._stream: AsyncChatStream | None = None
        self._started = time.monotonic()
        self._updated = 0.0

    async def status(self, key: str) -> None:
        """The status phrase `key` (SEARCHING, WRITING) in the question's language. A courtesy: a status Slack
        does not take (old workspace, missing scope) never stops the answer."""
        loading = [phrase(k, self.language) for k in LOADING]
        try:
            await self.client.assistant_threads_setStatus(
                channel_id=self.channel,
                thread_ts=self.thread_ts,
                status=phrase(key, self.language),
                loading_messages=loading,
            )
        except SlackApiError as exc:
            log.debug("assistant.threads.setStatus in %s: %s", self.channel, exc.response.get("error"))

    async def append(self, chunk: str) -> None:
        self.text += chunk
        if self.mode == "stream":
            try:
                if self._stream is None:
                    self._stream = await self.client.chat_stream(
                        channel=self.channel,
                        thread_ts=self.thread_ts,
                        recipient_team_id=self.team,
                        recipient_user_id=self.user,
                        buffer_size=STREAM_BUFFER_CHARS,
                    )
                if time.monotonic() - self._started < STREAM_LIMIT_S:
                    await self._stream.append(markdown_text=escape_markdown(chunk))
                    self.ts = self._stream.ts
                return
            except SlackApiError as exc:
                self._refused(exc)
        await self._show_progress()

    async def finish(self, answer: Answer) -> None:
        """The whole answer with its sources and feedback buttons, by whichever way still works."""
        self.text = answer.text
        if self.mode == "stream":
            try:
                if self._stream is None:  # no text came (an empty answer): nothing to stream
                    raise _NotStreamed
                if time.monotonic() - self._started >= STREAM_LIMIT_S:
                    raise _NotStreamed  # Slack has ended (or is about to end) this stream
                await self._stream.stop(blocks=footer_blocks(answer))
                self.ts = self._stream.ts
                return
            except SlackApiError as exc:
                self._refused(exc)
            except _NotStreamed:
                self.ts = self._stream.ts if self._stream is not None else None
                self.mode = "update" if self.ts else "post"
        blocks = answer_blocks(answer)
        if self.ts:
            await self.client.chat_update(channel=self.channel, ts=self.ts, text=answer_fallback(answer), blocks=blocks)
        else:
            resp = await self.client.chat_postMessage(
                channel=self.channel, thread_ts=self.thread_ts, text=answer_fallback(answer), blocks=blocks
            )
            self.ts = str(resp.get("ts") or "") or None

    async def abort(self, message: str) -> bool:
        """End a started answer with `message` (the answer failed); False when nothing was shown yet."""
        try:
            if self.mode == "stream" and self._stream is not None and self._stream.ts:
                await self._stream.stop(markdown_text=f"\n\n{escape_markdown(message)}")
                return True
            if self.ts:
                await self.client.chat_update(channel=self.channel, ts=self.ts, text=escape(message))
                return True
        except SlackApiError as exc:
            log.warning("could not end the answer in %s: %s", self.channel, exc.response.get("error"))
        return False

    def _refused(self, exc: SlackApiError) -> None:
        """Streaming is over for this answer: the rest goes through chat.postMessage / chat.update."""
        self.ts = self._stream.ts if self._stream is not None else None
        self.mode = "update" if self.ts else "post"
        log.info(
            "Slack refused the stream in %s (%s): finishing the answer with %s",
            self.channel,
            exc.response.get("error"),
            "chat.update" if self.ts else "chat.postMessage",
        )

    async def _show_progress(self) -> None:
        """Post the text so far once, then edit it at most once a second."""
        if not self.text.strip():
            return
        if self.ts is None:
            resp = await self.client.chat_postMessage(
                channel=self.channel, thread_ts=self.thread_ts, text=escape(self.text)
            )
            self.ts, self._updated = str(resp.get("ts") or "") or None, time.monotonic()
        elif time.monotonic() - self._updated >= UPDATE_EVERY_S:
            await self.client.chat_update(channel=self.channel, ts=self.ts, text=escape(self.text))
            self._updated = time.monotonic()


class _NotStreamed(Exception):
    """Internal: finish without the stream."""


def streamable(event: dict[str, Any]) -> bool:
    """Slack streams only replies to people: not to bots' or workflows' messages."""
    return not (event.get("bot_id") or event.get("bot_profile") or event.get("subtype") == "bot_message")
