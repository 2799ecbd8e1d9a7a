"""Thin Celery tasks: fetch the job's input, call the plain functions in `agent/`, report progress."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import suppress
from functools import lru_cache
from typing import Any, TypeVar

import redis
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from agent.forgetting import forget_document as forget_everywhere
from agent.knowledge.formats import oversize_reason
from agent.knowledge.ingest import IngestResult, ingest_bytes
from agent.knowledge.service import Knowledge, open_knowledge
from agent.knowledge.store import StoreError
from agent.learning import LearningStore
from agent.settings import Settings, get_settings
from agent.types import TENANT_WIDE, Audience
from workers import blobs, deadletter
from workers.celery_app import app
from workers.client import queue_depths
from workers.connections import TRANSIENT, redis_client
from workers.names import FORGET_DOCUMENT, INGEST_DOCUMENT, INGEST_QUEUE

log = logging.getLogger(__name__)
T = TypeVar("T")


REDIS_PATIENCE_S = 300.0
"""How long a running job waits for Redis to come back before giving up (its message stays safe in Redis)."""

FLUSH_EVERY_S = 30.0
PROGRESS_EVERY_S = 0.5
_last_flush = 0.0


@lru_cache(maxsize=1)
def _knowledge() -> Knowledge:
    """One connection and embedding model per worker process (opening them costs more than a small job)."""
    return open_knowledge(get_settings())


def _with_redis(call: Callable[[], T]) -> T:
    """Run a Redis call, waiting (with backoff) through a Redis outage instead of failing the job.

    A job must not use Celery's retry for Redis faults: a retry is a new message *sent to Redis*, and when it
    cannot be sent Celery rejects the job for good. Waiting here is safe: the job's message stays unacknowledged
    in Redis (append-only file) until the job ends, whatever happens to this process.
    """
    deadline = time.monotonic() + REDIS_PATIENCE_S
    delay = 0.5
    while True:
        try:
            return call()
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            log.warning("Redis unreachable; waiting %.1f s before trying again", delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def _should_flush(settings: Settings) -> bool:
    """Flush when no more ingestion is waiting, or every FLUSH_EVERY_S during a bulk load.

    Each flush seals a segment and builds its indexes: flushing after every file of a bulk upload would spend
    more time there than on embedding. Rows not yet flushed are still found, only more slowly.
    """
    global _last_flush
    now = time.monotonic()
    try:
        idle = queue_depths(settings).get(INGEST_QUEUE, 0) == 0
    except redis.RedisError:
        idle = True  # cannot tell: flushing is always correct, only slower
    if idle or now - _last_flush > FLUSH_EVERY_S:
        _last_flush = now
        return True
    return False


class IngestTask(Task):  # type: ignore[misc]
    """Drops the job's blob on every terminal state: a failure after the last retry or a hard time limit too."""

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        if args:
            try:
                blobs.drop(get_settings(), str(args[0]))
            except redis.RedisError:
                log.warning("the blob of failed job %s could not be dropped (it expires on its own)", task_id)


@app.task(
    bind=True,
    base=IngestTask,
    name=INGEST_DOCUMENT,
    autoretry_for=TRANSIENT,
    retry_backoff=2,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=10,
)
def ingest_document(
    self: Task, blob_key: str, source: str, tenant: str, scope: str, doc_id: str | None = None
) -> dict[str, Any]:
    settings = get_settings()
    audience = Audience(tenant, scope)
    job, retries = str(self.request.id), int(self.request.retries or 0)
    delivered = _with_redis(lambda: deadletter.count_delivery(settings, job, retries))
    if delivered > settings.job_max_deliveries:  # its worker died every time: never hand it out again
        _with_redis(lambda: blobs.drop(settings, blob_key))
        attempts = delivered - 1
        details = {"source": source, "tenant": tenant, "scope": scope}
        _with_redis(lambda: deadletter.dead_letter(settings, job, INGEST_DOCUMENT, attempts, **details))
        return IngestResult("failed", doc_id or source, source, reason=deadletter.reason(source, attempts)).to_dict()
    try:
        return _ingest(self, settings, audience, blob_key, source, doc_id)
    except SoftTimeLimitExceeded:
        log.error("ingest of %s stopped at the %d s time limit", source, settings.job_soft_time_limit_s)
        _with_redis(lambda: blobs.drop(settings, blob_key))
        reason = f"reading {source} took longer than the {settings.job_soft_time_limit_s} s a document may take"
        return IngestResult("failed", doc_id or source, source, reason=reason).to_dict()
    finally:
        with suppress(redis.RedisError):  # the counter expires on its own
            deadletter.forget_deliveries(settings, job, retries)


def _ingest(
    self: Task, settings: Settings, audience: Audience, blob_key: str, source: str, doc_id: str | None
) -> dict[str, Any]:
    tenant, scope = audience.tenant, audience.scope
    size = _with_redis(lambda: blobs.size(settings, blob_key))
    if size > settings.max_upload_bytes:  # refused without reading it: memory stays bounded by the limit
        _with_redis(lambda: blobs.drop(settings, blob_key))
        reason = oversize_reason(source, settings.max_upload_bytes, size)
        return IngestResult("failed", doc_id or source, source, reason=reason).to_dict()
    data = _with_redis(lambda: blobs.load(settings, blob_key))
    if data is None:
        return IngestResult("failed", doc_id or source, source, reason=f"the upload of {source} expired").to_dict()

    last_report = 0.0

    def progress(stage: str, done: int, total: int) -> None:
        nonlocal last_report  # report at most every PROGRESS_EVERY_S: each report is a Redis write
        if time.monotonic() - last_report >= PROGRESS_EVERY_S:
            last_report = time.monotonic()
            try:  # progress is for people watching: a Redis outage must not fail the job
                self.update_state(
                    state="PROGRESS", meta={"stage": stage, "done": done, "total": total, "source": source}
                )
            except redis.RedisError:
                log.warning("progress of %s not reported: Redis unreachable", source)

    knowledge = _knowledge()
    try:
        result = ingest_bytes(
            knowledge.store,
            knowledge.embeddings,
            audience,
            data=data,
            source=source,
            doc_id=doc_id,
            max_bytes=settings.max_upload_bytes,
            chunk_chars=settings.chunk_chars,
            batch_size=settings.embed_batch,
            progress=progress,
            flush=_should_flush(settings),
        )
    except StoreError as exc:  # an operator's problem (a wrong setting): the details go to the log, not to users
        log.error("ingest of %s for %s/%s: the knowledge base refused it: %s", source, tenant, scope, exc)
        reason = "the knowledge base is not set up to store it (an admin can find why in the worker's log)"
        result = IngestResult("failed", doc_id or source, source, reason=reason)
    log.info("ingest %s for %s/%s: %s %s", source, tenant, scope, result.status, result.reason)
    if result.status == "ready" and scope == TENANT_WIDE:  # new domain text: the nightly training should run
        _with_redis(lambda: LearningStore(redis_client(settings.effective_redis_url)).mark_changed(tenant))
    _with_redis(lambda: blobs.drop(settings, blob_key))
    return result.to_dict()


@app.task(bind=True, name=FORGET_DOCUMENT, autoretry_for=TRANSIENT, retry_backoff=2, max_retries=10)
def forget_document(self: Task, tenant: str, scope: str, doc_id: str) -> dict[str, Any]:
    settings = get_settings()
    learning = LearningStore(redis_client(settings.effective_redis_url))
    gone = forget_everywhere(_knowledge().store, learning, settings.memory_path, Audience(tenant, scope), doc_id)
    return {"doc_id": doc_id, "removed_chunks": gone.passages, "answers": gone.answers, "chats": gone.conversations}
