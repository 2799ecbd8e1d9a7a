"""Turning a shared file into searchable passages: parse → chunk → embed → upsert → flush.

Plain functions with no queue in sight: the Celery task in `workers/tasks.py` calls `ingest_bytes`, and so can
a test or a script. The work is idempotent: chunk keys derive from (audience, document, content hash, number),
so a job re-run after its worker died overwrites what it had written instead of adding to it, and a new version
of a document replaces the old one only once it is completely written.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Literal

from langchain_core.embeddings import Embeddings

from agent.knowledge.chunking import chunk_document
from agent.knowledge.formats import oversize_reason
from agent.knowledge.parsers import DocumentError, parse_document
from agent.knowledge.store import KnowledgeStore
from agent.types import Audience, DocumentInfo

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): stage is one of reading, embedding, saving."""

IngestStatus = Literal["ready", "unchanged", "failed"]

MAX_CHUNKS = 10_000
"""A document longer than this (about 10 MB of text) is refused: one lookup must see all of its passages."""


@dataclass(frozen=True)
class IngestResult:
    status: IngestStatus
    doc_id: str
    source: str
    chunks: int = 0
    title: str = ""
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=1)
def _io() -> ThreadPoolExecutor:
    """Created on first use, in the process that ingests (never before a Celery worker forks)."""
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="ingest-io")


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


def ingest_bytes(
    store: KnowledgeStore,
    embeddings: Embeddings,
    audience: Audience,
    *,
    data: bytes,
    source: str,
    doc_id: str | None = None,
    max_bytes: int,
    chunk_chars: int = 1000,
    batch_size: int = 32,
    progress: Progress = _no_progress,
    flush: bool = True,
) -> IngestResult:
    """Ingest one file's bytes for one audience. Bad files end as `failed` with a reason; faults raise.

    `flush=False` leaves sealing the new rows to a later flush (bulk loads flush once at the end).
    """
    doc_id = doc_id or source
    if len(data) > max_bytes:
        return IngestResult("failed", doc_id, source, reason=oversize_reason(source, max_bytes, len(data)))
    progress("reading", 0, 0)
    digest = content_hash(data)
    # Milvus round trips overlap the CPU work (parsing, embedding): the worker would otherwise sit idle in them.
    known = _io().submit(lambda: (store.document(audience, doc_id), store.document_with_content(audience, digest)))
    try:
        parsed = parse_document(data, source, max_upload_bytes=max_bytes)
    except DocumentError as exc:
        return IngestResult("failed", doc_id, source, reason=str(exc))
    chunks = chunk_document(parsed, chunk_chars)

    if len(chunks) > MAX_CHUNKS:
        return IngestResult(
            "failed",
            doc_id,
            source,
            reason=f"{source} is too long ({len(chunks)} passages, the limit is {MAX_CHUNKS}): share it in parts",
        )

    current, same = known.result()
    if current is not None and current.content_hash == digest and current.chunks == len(chunks):
        return IngestResult("unchanged", doc_id, source, len(chunks), parsed.title, reason="already up to date")
    if same is not None and same.doc_id != doc_id:
        return IngestResult(
            "unchanged",
            same.doc_id,
            source,
            same.chunks,
            parsed.title,
            reason=f"the same content is already known here as {same.source}",
        )

    total = len(chunks)
    writing: Future[None] | None = None
    for start in range(0, total, batch_size):
        batch = chunks[start : start + batch_size]
        progress("embedding", start, total)
        vectors = embeddings.embed_documents([c.embedding_text for c in batch])
        if writing is not None:
            writing.result()  # one batch in flight at a time; a failed write stops the job here
        writing = _io().submit(
            store.upsert_chunks,
            audience,
            doc_id=doc_id,
            source=source,
            content_hash=digest,
            chunks=batch,
            vectors=vectors,
        )
    if writing is not None:
        writing.result()
    progress("saving", total, total)
    if current is not None:  # drop what the new version did not overwrite, before recording it
        new_keys = {(digest, n) for n in range(total)}
        stale = [n for n in range(current.chunks) if (current.content_hash, n) not in new_keys]
        store.delete_chunks(audience, doc_id, current.content_hash, stale)
    store.record_document(
        audience,
        DocumentInfo(doc_id, source, parsed.title, audience.scope, total, digest, time.time()),
    )
    if flush:
        store.flush()
    return IngestResult("ready", doc_id, source, total, parsed.title)
