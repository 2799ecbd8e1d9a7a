"""Uploaded file bytes, parked in Redis between the chat surface and the worker.

Redis is already shared by every process (one machine or many), so a job needs no shared disk. Blobs expire
after a week at the latest; a job deletes its blob once it has reached a final result.
"""

from __future__ import annotations

import uuid

from agent import keys
from agent.settings import Settings
from workers.connections import redis_client

_TTL_S = 7 * 24 * 3600


def store(settings: Settings, data: bytes) -> str:
    key = keys.BLOB_PREFIX + uuid.uuid4().hex
    redis_client(settings.effective_redis_url).set(key, data, ex=_TTL_S)
    return key


def load(settings: Settings, key: str) -> bytes | None:
    value = redis_client(settings.effective_redis_url).get(key)
    return value if isinstance(value, bytes) else None


def drop(settings: Settings, key: str) -> None:
    redis_client(settings.effective_redis_url).delete(key)


def size(settings: Settings, key: str) -> int:
    """The blob's length without fetching it (0 when gone): an oversized file is refused unread."""
    return int(redis_client(settings.effective_redis_url).strlen(key))  # type: ignore[no-untyped-call]
