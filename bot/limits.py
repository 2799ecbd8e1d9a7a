"""Per-user rate limits on questions and shared documents, counted in Redis so every bot process shares them.

A fixed window per user and kind: simple, and one person cannot keep every answer slot or the ingest queue busy.
"""

from __future__ import annotations

import time

import redis

from agent import keys


class RateLimit:
    """At most `limit` events per `window_s` for one key (0: no limit)."""

    def __init__(self, client: redis.Redis[bytes], kind: str, limit: int, window_s: int) -> None:
        self.client = client
        self.kind = kind
        self.limit = limit
        self.window_s = window_s

    def allow(self, who: str) -> bool:
        """Count one event for `who`; False when that goes over the limit in the current window."""
        if self.limit <= 0:
            return True
        window = int(time.time() // self.window_s)
        key = keys.rate(self.kind, who, window)
        pipe = self.client.pipeline()
        pipe.incr(key)
        pipe.expire(key, self.window_s * 2)
        count, _ = pipe.execute()
        return int(count) <= self.limit
