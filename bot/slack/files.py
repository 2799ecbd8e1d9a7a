"""Fetching a file shared in Slack: its metadata from `files.info`, its bytes with the bot token.

The event's own file object can be partial (`"file_access": "check_file_info"`), so `files.info` is always
asked. Kinds that can never be a document (images, audio, video, archives, files hosted elsewhere) are refused
before anything is downloaded; the rest is checked by content by the ingestion job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from agent.knowledge.formats import READABLE
from bot.downloads import DownloadError, fetch_file

NOT_DOCUMENTS = ("image/", "audio/", "video/")
NOT_DOCUMENT_TYPES = frozenset({"zip", "gzip", "tar", "gif", "png", "jpg", "jpeg", "mp3", "mp4", "mov", "binary"})


@dataclass(frozen=True)
class SharedFile:
    file_id: str
    name: str
    data: bytes
    message_ts: str | None
    """The message the file was shared with in this channel, when Slack says so."""


def refusal(info: dict[str, Any], max_bytes: int) -> str | None:
    """Why this file will not be downloaded (None when it will be)."""
    name = str(info.get("name") or info.get("title") or "the file")
    if info.get("is_external") or info.get("mode") == "external":
        return f"{name} is stored outside Slack ({info.get('external_type') or 'external'}); upload the file itself."
    mimetype, filetype = str(info.get("mimetype") or ""), str(info.get("filetype") or "")
    if mimetype.startswith(NOT_DOCUMENTS) or filetype in NOT_DOCUMENT_TYPES:
        return f"{name} is not a document ({info.get('pretty_type') or mimetype or filetype}). {READABLE}"
    size = int(info.get("size") or 0)
    if size > max_bytes:
        return f"{name} is {size / 1024 / 1024:.1f} MB; the limit is {max_bytes / 1024 / 1024:g} MB."
    if not info.get("url_private_download") and not info.get("url_private"):
        return f"Slack gave me no download link for {name}."
    return None


def message_ts(info: dict[str, Any], channel: str) -> str | None:
    """The timestamp of the message that shared the file in `channel` (from `shares`), if any."""
    shares = info.get("shares") or {}
    for kind in ("public", "private"):
        places = (shares.get(kind) or {}).get(channel) or []
        if places:
            return str(places[0].get("thread_ts") or places[0].get("ts") or "") or None
    return None


async def fetch_shared_file(
    client: AsyncWebClient, session: aiohttp.ClientSession, file_id: str, channel: str, *, max_bytes: int
) -> SharedFile:
    """Ask Slack about the file, refuse what cannot be a document, download the rest with the bot token."""
    try:
        info = (await client.files_info(file=file_id)).get("file") or {}
    except SlackApiError as exc:
        raise DownloadError(f"Slack would not tell me about that file ({exc.response.get('error')}).") from exc
    problem = refusal(info, max_bytes)
    if problem:
        raise DownloadError(problem)
    name = str(info.get("name") or info.get("title") or file_id)
    url = str(info.get("url_private_download") or info.get("url_private"))
    data = await fetch_file(
        session, url, name, max_bytes=max_bytes, headers={"Authorization": f"Bearer {client.token}"}
    )
    return SharedFile(file_id, name, data, message_ts(info, channel))
