"""Thin Celery tasks: fetch the job's input, call the plain functions in `agent/`, report progress."""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Task
from pymilvus.exceptions import MilvusException

from agent.knowledge.ingest import IngestResult, ingest_bytes
from agent.knowledge.service import open_knowledge
from agent.knowledge.store import StoreError
from agent.settings import get_settings
from agent.types import Audience
from workers import blobs
from workers.celery_app import app
from workers.names import FORGET_DOCUMENT, INGEST_DOCUMENT

log = logging.getLogger(__name__)

TRANSIENT = (OSError, MilvusException, redis.RedisError)
"""Faults worth retrying: the services may come back. A bad file is not among them."""


@app.task(
    bind=True,
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
    data = blobs.load(settings, blob_key)
    if data is None:
        return IngestResult(
            "failed", doc_id or source, source, reason=f"the upload of {source} expired"
        ).to_dict()

    def progress(stage: str, done: int, total: int) -> None:
        self.update_state(
            state="PROGRESS", meta={"stage": stage, "done": done, "total": total, "source": source}
        )

    knowledge = open_knowledge(settings)
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
        )
    except StoreError as exc:
        result = IngestResult("failed", doc_id or source, source, reason=str(exc))
    log.info("ingest %s for %s/%s: %s %s", source, tenant, scope, result.status, result.reason)
    blobs.drop(settings, blob_key)
    return result.to_dict()


@app.task(bind=True, name=FORGET_DOCUMENT, autoretry_for=TRANSIENT, retry_backoff=2, max_retries=10)
def forget_document(self: Task, tenant: str, scope: str, doc_id: str) -> dict[str, Any]:
    removed = open_knowledge(get_settings()).store.forget(Audience(tenant, scope), doc_id)
    return {"doc_id": doc_id, "removed_chunks": removed}
