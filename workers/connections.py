"""One Redis connection pool per URL and process, shared by the blob store and the job client."""

from __future__ import annotations

from functools import lru_cache

import redis


@lru_cache(maxsize=4)
def redis_client(url: str) -> redis.Redis[bytes]:
    return redis.Redis.from_url(url)
