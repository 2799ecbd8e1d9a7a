"""A Milvus client that survives a Milvus (Lite) restart: reads load their collection first, and again if needed."""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException

_CONFLICTS_EXPECTED = contextvars.ContextVar("milvus_conflicts_expected", default=False)

_NOT_LOADED = 101
"""Milvus' CollectionNotLoaded: what every read gets after the server restarted, until someone loads again."""


class ReloadingClient(MilvusClient):  # type: ignore[misc]
    """A MilvusClient whose reads find their collection loaded, also after a Milvus restart.

    A Milvus Lite server starts with every collection released, and a read of a released collection fails
    (pymilvus logs an ERROR) until someone loads it. So a read loads its collection first, once per client, and
    a read that still finds it released (the server restarted under a running process) loads it again and
    retries. Without this, every process connected across a Milvus restart (workers, bots) would fail all its
    reads until it was restarted itself, and the ingestion jobs' retries would run out.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loaded: set[str] = set()  # collections this client has loaded

    def load_collection(self, collection_name: str, *args: Any, **kwargs: Any) -> None:
        super().load_collection(collection_name, *args, **kwargs)
        self._loaded.add(collection_name)

    def _again(self, method: Any, collection: str, *args: Any, **kwargs: Any) -> Any:
        if collection not in self._loaded:
            self.load_collection(collection)
        try:
            return method(collection, *args, **kwargs)
        except MilvusException as exc:
            if exc.code != _NOT_LOADED and "call load()" not in str(exc.message):
                raise
            self.load_collection(collection)
            return method(collection, *args, **kwargs)

    def search(self, collection_name: str, *args: Any, **kwargs: Any) -> Any:
        return self._again(super().search, collection_name, *args, **kwargs)

    def query(self, collection_name: str, *args: Any, **kwargs: Any) -> Any:
        return self._again(super().query, collection_name, *args, **kwargs)

    def get(self, collection_name: str, *args: Any, **kwargs: Any) -> Any:
        return self._again(super().get, collection_name, *args, **kwargs)

    def query_iterator(self, collection_name: str, *args: Any, **kwargs: Any) -> Any:
        return self._again(super().query_iterator, collection_name, *args, **kwargs)


def connect(uri: str, token: str) -> ReloadingClient:
    """A client, tried twice: pymilvus shares one connection per address within a process and, when it has been
    idle for a while, revives it first. On a Milvus Lite server that revival can meet a connection the server
    has just dropped ("too many pings": idle keepalive pings) and fail once; half a second later it succeeds.
    """
    try:
        return ReloadingClient(uri=uri, token=token)
    except MilvusException:
        time.sleep(0.5)
        return ReloadingClient(uri=uri, token=token)


class _ExpectedConflicts(logging.Filter):
    """Drops pymilvus's own ERROR record (with traceback) for a call made under `conflicts_expected`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_CONFLICTS_EXPECTED.get() and record.levelno >= logging.ERROR)


logging.getLogger("pymilvus.decorators").addFilter(_ExpectedConflicts())


@contextmanager
def conflicts_expected() -> Iterator[None]:
    """Calls that may lose a race to another process (two workers creating one collection): pymilvus logs every
    failed call as an ERROR before raising it, but the caller here checks what is there and decides; a failure
    it cannot explain it raises, so nothing is hidden but the alarm."""
    token = _CONFLICTS_EXPECTED.set(True)
    try:
        yield
    finally:
        _CONFLICTS_EXPECTED.reset(token)


def settles(done: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Whether `done()` holds within `timeout_s`: what another process is creating shows up once it finishes."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
