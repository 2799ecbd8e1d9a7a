"""Fetching a file a user shared in chat, with the checks both Slack and Teams downloads need.

A download is refused, with a reason a person understands, when it is over the size limit (checked while
streaming, not after) or when an HTML page arrives where a file was expected: Slack answers an unauthorised
download of a private file with its login page and status 200, which must not become a "document".
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePath

import aiohttp

from agent.knowledge.formats import oversize_reason

CHUNK_BYTES = 64 * 1024
TIMEOUT_S = 60.0
HTML_SUFFIXES = frozenset({".htm", ".html", ".xhtml"})


class DownloadError(Exception):
    """The file could not be fetched; the message is meant for the person who shared it."""


def _looks_like_html(head: bytes) -> bool:
    start = head[:512].lstrip().lower()
    return start.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


async def fetch_file(
    session: aiohttp.ClientSession,
    url: str,
    name: str,
    *,
    max_bytes: int,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """Download `url` (the file called `name`) into memory, never holding more than `max_bytes`."""
    try:
        async with session.get(
            url, headers=dict(headers or {}), timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)
        ) as resp:
            if resp.status in (401, 403):
                raise DownloadError(f"I was not allowed to download {name} (HTTP {resp.status}).")
            if resp.status >= 400:
                raise DownloadError(f"The download of {name} failed (HTTP {resp.status}).")
            if resp.content_length is not None and resp.content_length > max_bytes:
                raise DownloadError(oversize_reason(name, max_bytes, resp.content_length) + ".")
            data = bytearray()
            async for block in resp.content.iter_chunked(CHUNK_BYTES):
                data.extend(block)
                if len(data) > max_bytes:
                    raise DownloadError(oversize_reason(name, max_bytes) + ".")
            content_type = resp.headers.get("Content-Type", "")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DownloadError(f"The download of {name} failed ({type(exc).__name__}).") from exc
    if not data:
        raise DownloadError(f"{name} is empty.")
    html = _looks_like_html(bytes(data[:512])) or "text/html" in content_type
    # An HTML file shared on purpose is fine; a login page in place of a PDF, Word or text file is not.
    if html and PurePath(name).suffix.lower() not in HTML_SUFFIXES:
        raise DownloadError(
            f"I received a web page instead of {name} (a sign-in page, most likely): the file was not downloaded."
        )
    return bytes(data)
