"""Before a bot process starts its answer processes: are the services it needs there?

Without this, `expertbot teams serve` with no stack running died with a `BrokenProcessPool` traceback (an answer
child failed while warming up). The same failures as `expertbot ask` meets are raised here instead, which the
console script turns into one line saying what is missing and how to start it.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import redis
from pymilvus.exceptions import MilvusException

from agent.settings import Settings


def require_services(settings: Settings, timeout_s: float = 3.0) -> None:
    """Raise redis.ConnectionError or MilvusException (with the address) when Redis or Milvus does not answer."""
    client = redis.Redis.from_url(settings.effective_redis_url, socket_connect_timeout=timeout_s)
    try:
        client.ping()
    finally:
        client.close()
    uri = settings.effective_milvus_uri
    parts = urlsplit(uri if "://" in uri else f"http://{uri}")
    if parts.scheme in ("http", "https", "tcp", "grpc") and parts.hostname:
        try:
            socket.create_connection((parts.hostname, parts.port or 19530), timeout=timeout_s).close()
        except OSError as exc:
            raise MilvusException(message=f"nothing listens at {parts.hostname}:{parts.port or 19530}: {exc}") from exc
