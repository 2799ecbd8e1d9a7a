"""Fetching a file a user shared in chat, with the checks both Slack and Teams downloads need.

A download is refused, with a reason a person understands, when it is over the size limit (checked while
streaming, not after) or when an HTML page arrives where a file was expected: Slack answers an unauthorised
download of a private file with its login page and status 200, which must not become a "document".
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePath
from urllib.parse import urljoin

import aiohttp

from agent.knowledge.formats import oversize_reason
from bot.url_policy import UrlPolicy

CHUNK_BYTES = 64 * 1024
TIMEOUT_S = 60.0
HTML_SUFFIXES = frozenset({".htm", ".html", ".xhtml"})
MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})


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
    policy: UrlPolicy | None = None,
) -> bytes:
    """Download `url` (the file called `name`) into memory, never holding more than `max_bytes`.

    With a `policy`, the URL and every redirect it leads to are checked against it before they are requested
    (redirects are followed here, one hop at a time, never by aiohttp).
    """
    try:
        for _ in range(MAX_REDIRECTS + 1):
            if policy is not None and (problem := policy.problem(url)):
                raise DownloadError(f"I did not download {name}: its link is not allowed ({problem}).")
            async with session.get(
                url,
                headers=dict(headers or {}),
                timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
                allow_redirects=policy is None,
            ) as resp:
                if resp.status in REDIRECTS and policy is not None:
                    url = urljoin(url, resp.headers.get("Location", ""))
                    continue
                return _checked(name, await _read(resp, name, max_bytes), resp.headers.get("Content-Type", ""))
        raise DownloadError(f"The download of {name} failed (more than {MAX_REDIRECTS} redirects).")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise DownloadError(f"The download of {name} failed ({type(exc).__name__}).") from exc


async def _read(resp: aiohttp.ClientResponse, name: str, max_bytes: int) -> bytes:
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
    return bytes(data)


def _checked(name: str, data: bytes, content_type: str) -> bytes:
    if not data:
        raise DownloadError(f"{name} is empty.")
    html = _looks_like_html(bytes(data[:512])) or "text/html" in content_type
    # An HTML file shared on purpose is fine; a login page in place of a PDF, Word or text file is not.
    if html and PurePath(name).suffix.lower() not in HTML_SUFFIXES:
        raise DownloadError(
            f"I received a web page instead of {name} (a sign-in page, most likely): the file was not downloaded."
        )
    return bytes(data)
