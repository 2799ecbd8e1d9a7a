"""Who may see what in a Slack conversation: privacy of a channel, the channel a person views while talking to
the bot in its own chat (Slack's assistant thread context), their membership of it, and their language.

In the bot's own chat (a DM), the audience is the DM's. When the person opened it while viewing a channel, that
channel's documents are searchable there too, but only if they are a member of the channel: checked with
`conversations.members` and remembered for a minute, so that someone who leaves a channel stops seeing its
documents soon after. The viewed channel is stored per thread in Redis (Slack sends it once, when the thread
starts, and again when the person switches channel).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import redis
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from agent import keys
from agent.language import language_of_locale
from agent.types import Audience
from bot.slack.audience import scope_for

log = logging.getLogger(__name__)

MEMBERS_TTL_S = 60.0
CONTEXT_TTL_S = 30 * 24 * 3600
LOCALE_TTL_S = 3600.0
PRIVATE_TYPES = frozenset({"im", "mpim", "group", "private_channel"})


class SlackContext:
    """One per bot process; the caches are per process, the thread contexts are shared through Redis."""

    def __init__(self, client: AsyncWebClient, redis_client: redis.Redis[bytes]) -> None:
        self.client = client
        self.redis = redis_client
        self._private: dict[str, bool] = {}
        self._ext_shared: dict[str, bool] = {}  # Slack Connect channels, from conversations.info
        self._members: dict[str, tuple[float, frozenset[str]]] = {}
        self._locales: dict[str, tuple[float, str]] = {}

    async def is_private(self, channel: str, channel_type: str | None) -> bool:
        """DMs, group DMs and private channels are private; asked once per channel when the event does not say."""
        if channel_type:
            return channel_type in PRIVATE_TYPES
        if channel.startswith(("D", "G")):
            return True
        if channel not in self._private:
            try:
                info = (await self.client.conversations_info(channel=channel)).get("channel") or {}
                self._private[channel] = bool(info.get("is_private") or info.get("is_im") or info.get("is_mpim"))
                self._ext_shared[channel] = bool(info.get("is_ext_shared"))
            except SlackApiError as exc:
                log.warning("conversations.info %s: %s; treating it as private", channel, exc.response.get("error"))
                self._private[channel] = True
        return self._private[channel]

    # --- the bot's own chat: the channel being viewed ---------------------------------------------------------

    async def remember_viewed(self, team: str, channel: str, thread: str, viewed: str | None) -> None:
        key = keys.slack_assistant_context(team, channel, thread)
        if viewed:
            await asyncio.to_thread(self.redis.set, key, viewed.encode(), ex=CONTEXT_TTL_S)
        else:
            await asyncio.to_thread(self.redis.delete, key)

    async def viewed(self, team: str, channel: str, thread: str) -> str | None:
        raw = await asyncio.to_thread(self.redis.get, keys.slack_assistant_context(team, channel, thread))
        return raw.decode() if raw else None

    async def is_member(self, channel: str, user: str) -> bool:
        """Whether `user` is in `channel` now (within a minute); an error (the bot is not in it) counts as no."""
        now = time.monotonic()
        cached = self._members.get(channel)
        if cached is None or now - cached[0] > MEMBERS_TTL_S:
            members: set[str] = set()
            cursor: str | None = None
            try:
                while True:
                    resp = await self.client.conversations_members(channel=channel, cursor=cursor, limit=1000)
                    members.update(str(m) for m in resp.get("members") or [])
                    cursor = (resp.get("response_metadata") or {}).get("next_cursor") or None
                    if not cursor:
                        break
            except SlackApiError as exc:
                log.info("conversations.members %s: %s; its documents stay out", channel, exc.response.get("error"))
            cached = (now, frozenset(members))
            self._members[channel] = cached
        return user in cached[1]

    async def audience(
        self,
        team: str,
        channel: str,
        thread: str,
        user: str,
        channel_type: str | None,
        event: dict[str, Any] | None = None,
    ) -> Audience:
        """The conversation's audience, plus the viewed channel in the bot's own chat when the user is in it; a
        conversation with people of another organisation gets its own external scope (`bot/slack/audience.py`)."""
        scope = scope_for(team, channel, event, self._ext_shared.get(channel, False))
        if scope != channel:
            return Audience(team, scope)
        if channel_type != "im" and not channel.startswith("D"):
            return Audience(team, channel)
        viewed = await self.viewed(team, channel, thread)
        if viewed and viewed != channel and user and await self.is_member(viewed, user):
            return Audience(team, channel, (viewed,))
        return Audience(team, channel)

    async def language(self, user: str) -> str:
        """The person's Slack language ("de-DE" -> "de"), asked once an hour; English when it cannot be read."""
        now = time.monotonic()
        cached = self._locales.get(user)
        if cached is None or now - cached[0] > LOCALE_TTL_S:
            locale = "en"
            try:
                info: dict[str, Any] = (await self.client.users_info(user=user, include_locale=True)).get("user") or {}
                locale = str(info.get("locale") or "en")
            except SlackApiError as exc:
                log.debug("users.info %s: %s", user, exc.response.get("error"))
            cached = (now, language_of_locale(locale))
            self._locales[user] = cached
        return cached[1]
