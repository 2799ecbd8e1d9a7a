"""Turning a shared file into searchable passages: parse → chunk → embed → upsert → flush.

Plain functions with no queue in sight: the Celery task in `workers/tasks.py` calls `ingest_bytes`, and so can
a test or a script. The work is idempotent: chunk keys derive from (audience, document, content hash, number),
so a job re-run after its worker died overwrites what it had written instead of adding to it, and a new version
of a document replaces the old one only once it is completely written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from langchain_core.embeddings import Embeddings

from agent.knowledge.chunking import chunk_document
from agent.knowledge.parsers import DocumentError, parse_document
from agent.knowledge.store import KnowledgeStore
from agent.types import Audience

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
) -> IngestResult:
    """Ingest one file's bytes for one audience. Bad files end as `failed` with a reason; faults raise."""
    doc_id = doc_id or source
    if len(data) > max_bytes:
        return IngestResult(
            "failed",
            doc_id,
            source,
            reason=f"{source} is {len(data) / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit",
        )
    progress("reading", 0, 0)
    try:
        parsed = parse_document(data, source)
    except DocumentError as exc:
        return IngestResult("failed", doc_id, source, reason=str(exc))
    chunks = chunk_document(parsed, chunk_chars)
    digest = content_hash(data)

    if len(chunks) > MAX_CHUNKS:
        return IngestResult(
            "failed",
            doc_id,
            source,
            reason=f"{source} is too long ({len(chunks)} passages, the limit is {MAX_CHUNKS}): share it in parts",
        )

    versions = store.versions(audience, doc_id, digest)
    stale = any(v.doc_id == doc_id and v.content_hash != digest for v in versions)
    complete = [v for v in versions if v.content_hash == digest and v.chunks == len(chunks)]
    if complete:
        known = next((v for v in complete if v.doc_id == doc_id), complete[0])
        if known.doc_id != doc_id:
            return IngestResult(
                "unchanged",
                known.doc_id,
                source,
                known.chunks,
                parsed.title,
                reason=f"the same content is already known here as {known.source}",
            )
        if stale:  # a job that died before removing the previous version finishes that here
            store.delete_other_versions(audience, doc_id, digest)
        return IngestResult("unchanged", doc_id, source, len(chunks), parsed.title, reason="already up to date")

    total = len(chunks)
    for start in range(0, total, batch_size):
        batch = chunks[start : start + batch_size]
        progress("embedding", start, total)
        vectors = embeddings.embed_documents([c.embedding_text for c in batch])
        store.upsert_chunks(audience, doc_id=doc_id, source=source, content_hash=digest, chunks=batch, vectors=vectors)
    progress("saving", total, total)
    store.flush()
    if stale:
        store.delete_other_versions(audience, doc_id, digest)
    return IngestResult("ready", doc_id, source, total, parsed.title)
