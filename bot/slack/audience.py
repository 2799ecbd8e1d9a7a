"""Who may read an answer in Slack: a conversation with people from another organisation (Slack Connect) gets a
scope of its own that sees only the documents shared in it, never the workspace's tenant-wide ones.

A conversation counts as external when the message's author belongs to another team (`user_team` differs from
the workspace) or when Slack says the channel is shared with other organisations (`is_ext_shared`, from
`conversations.info` or the event): in a shared channel every member reads every answer.
"""

from __future__ import annotations

from typing import Any

from agent.types import EXTERNAL_PREFIX


def is_external(team: str, event: dict[str, Any] | None, channel_shared: bool) -> bool:
    event = event or {}
    user_team = event.get("user_team")
    shared = channel_shared or bool(event.get("is_ext_shared_channel"))
    return shared or (isinstance(user_team, str) and bool(user_team) and user_team != team)


def scope_for(team: str, channel: str, event: dict[str, Any] | None, channel_shared: bool = False) -> str:
    """The channel itself, or its external scope (`ext:<channel>`)."""
    return f"{EXTERNAL_PREFIX}{channel}" if is_external(team, event, channel_shared) else channel
