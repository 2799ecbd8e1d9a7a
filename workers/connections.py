"""Connections the workers share: one Redis pool per URL and process, and which connection faults are worth a retry."""

from __future__ import annotations

from functools import lru_cache

import redis
from pymilvus.exceptions import MilvusException

TRANSIENT = (OSError, MilvusException, redis.RedisError)
"""Faults worth retrying, since the services may come back (a training run resumes from its checkpoint).
A bad file is not among them."""


@lru_cache(maxsize=4)
def redis_client(url: str) -> redis.Redis[bytes]:
    return redis.Redis.from_url(url)
