"""The bot's own chat in Slack (the agent view): suggested prompts when a thread starts, the channel being viewed,
thread titles. A mixin of `SlackBot`, kept apart so that the app module stays about the message flow."""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.assistant import Assistant
from bot.slack.context import SlackContext

log = logging.getLogger(__name__)

TITLE_CHARS = 60


def team_of(body: dict[str, Any]) -> str:
    """The workspace a request comes from (events, commands and interactions name it differently)."""
    team = body.get("team_id") or (body.get("team") or {}).get("id") or (body.get("user") or {}).get("team_id")
    return str(team or "unknown-team")


class AgentView:
    """Listeners for `assistant_thread_started` and `assistant_thread_context_changed`, and thread titles."""

    client: AsyncWebClient
    context: SlackContext
    assistant: Assistant

    async def _first_delivery(self, body: dict[str, Any]) -> bool:
        raise NotImplementedError

    async def _title(self, channel: str, thread: str, question: str) -> None:
        title = question if len(question) <= TITLE_CHARS else question[: TITLE_CHARS - 1].rstrip() + "…"
        try:
            await self.client.assistant_threads_setTitle(channel_id=channel, thread_ts=thread, title=title)
        except SlackApiError as exc:
            log.debug("assistant.threads.setTitle: %s", exc.response.get("error"))

    # --- the bot's own chat (Slack's agent view) -------------------------------------------------------------

    async def on_thread_started(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        """Remember the channel being viewed and offer questions the person can ask, in their language."""
        if not await self._first_delivery(body):
            return
        thread = event.get("assistant_thread") or {}
        channel, thread_ts, user = thread.get("channel_id"), thread.get("thread_ts"), str(thread.get("user_id") or "")
        if not channel or not thread_ts:
            return
        team = team_of(body)
        try:
            viewed = (thread.get("context") or {}).get("channel_id")
            await self.context.remember_viewed(team, channel, thread_ts, viewed)
            audience = await self.context.audience(team, channel, thread_ts, user, "im")
            language = await self.context.language(user) if user else "en"
            offered = await self.assistant.suggestions(audience, language)
            await self.client.assistant_threads_setSuggestedPrompts(
                channel_id=channel,
                thread_ts=thread_ts,
                prompts=[{"title": s.title, "message": s.message} for s in offered],
            )
        except Exception:
            log.exception("could not offer suggested prompts in %s", channel)

    async def on_context_changed(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        thread = event.get("assistant_thread") or {}
        if thread.get("channel_id") and thread.get("thread_ts"):
            viewed = (thread.get("context") or {}).get("channel_id")
            await self.context.remember_viewed(team_of(body), thread["channel_id"], thread["thread_ts"], viewed)
