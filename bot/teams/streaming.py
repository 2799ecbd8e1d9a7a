"""A streamed reply in a Teams personal chat, per Microsoft's streaming protocol.

An informative update first (`typing` with a `streaminfo` entity, `streamType: informative`, sequence 1; its id
becomes the stream's id), then the text so far as `streaming` updates (each carries all the text before it, with
the next sequence number), no more often than every 1.5 seconds (Teams throttles faster streams), then the final
`message` with `streamType: final` and no sequence, carrying the citations, AI label and feedback loop. Teams
streams only in personal chats, one stream per chat at a time, and ends a stream after two minutes: a refused
update stops the streaming and a stream near its limit is not used for the final message, which is then sent as
a new message. The answer always arrives.
"""

from __future__ import annotations

import copy
import logging
import time

from botbuilder.schema import Activity, ActivityTypes, ConversationReference

from bot.teams.ai_message import stream_entity
from bot.teams.proactive import Messenger

log = logging.getLogger(__name__)

CHUNK_EVERY_S = 1.5
"""Microsoft: buffer the model's tokens for 1.5 to 2 seconds between streaming requests."""
STREAM_LIMIT_S = 100.0
"""Teams ends a stream after 2 minutes; a final message later than this goes out as a new message."""
INFORMATIVE_LIMIT = 1000


class TeamsStream:
    """Call `inform` first, `append` with each text chunk, then `finish` once with the final message."""

    def __init__(
        self,
        messenger: Messenger,
        reference: ConversationReference,
        *,
        every_s: float = CHUNK_EVERY_S,
        limit_s: float = STREAM_LIMIT_S,
    ) -> None:
        self.messenger = messenger
        self.reference = reference
        self.every_s = every_s
        self.limit_s = limit_s
        self.stream_id: str | None = None
        self.sequence = 0
        self.text = ""
        self.streamed = ""
        self.broken = False
        """Teams refused an update (or the stream could not start): no more updates, the final goes out plain."""
        self._started = time.monotonic()
        self._last = 0.0

    @property
    def live(self) -> bool:
        return not self.broken and time.monotonic() - self._started < self.limit_s

    async def inform(self, text: str) -> None:
        """An informative update: the blue progress line ("Searching the documents…")."""
        if self.live and (self.stream_id is None or time.monotonic() - self._last >= self.every_s):
            await self._send("informative", text[:INFORMATIVE_LIMIT])

    async def append(self, chunk: str) -> None:
        """Add text; sent when the last update is at least `every_s` old (the final message carries the rest)."""
        self.text += chunk
        due = time.monotonic() - self._last >= self.every_s
        if self.live and self.stream_id is not None and due and self.text.strip():
            await self._send("streaming", self.text)
            self.streamed = self.text

    async def finish(self, final: Activity) -> str:
        """Send the final message (closing the stream when it is still open); returns the message's id."""
        if self.stream_id is not None and self.live:
            closing = copy.copy(final)
            closing.entities = [stream_entity("final", None, self.stream_id), *(final.entities or [])]
            try:
                await self.messenger.send(self.reference, closing)
                return self.stream_id
            except Exception as exc:
                log.info("Teams refused the final streamed message (%s): sending it as a new message", exc)
        return await self.messenger.send(self.reference, final)

    async def _send(self, stream_type: str, text: str) -> None:
        self.sequence += 1
        update = Activity(
            type=ActivityTypes.typing,
            text=text,
            entities=[stream_entity(stream_type, self.sequence, self.stream_id)],
        )
        try:
            sent = await self.messenger.send(self.reference, update)
        except Exception as exc:
            self.broken = True
            log.info("Teams refused a %s update in %s: %s", stream_type, self.reference.conversation.id, exc)
            return
        self._last = time.monotonic()
        if self.stream_id is None:
            self.stream_id = sent or None
            self.broken = self.stream_id is None
