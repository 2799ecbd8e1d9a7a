"""The knowledge base: passages with a dense vector, a BM25 sparse vector and the audience fields, in Milvus.

Passages live in audience buckets: a stable hash of (tenant, scope) picks one of `BUCKETS` collections, and a
search reads only the buckets of the scopes its audience may see. Milvus Lite's BM25 search walks every row of
a collection on each query (to resolve row versions), so with one shared collection a search cost grew with the
whole deployment; per bucket it grows with what the audience can see (README, "Benchmarks").

Every read is still filtered by tenant and scope *inside* the Milvus expression (several scopes share a bucket),
so a passage from another scope can never reach a caller, whatever the question says (`filters.py`).
A catalog collection holds one row per document version. The same code talks to a Milvus Lite server
(`milvus-lite server`) or to a Milvus cluster. Rank fusion is `fusion.py`; the reconnecting client
`milvus_client.py`; the 0.1 layout's migration `migrate.py`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from pymilvus import CollectionSchema
from pymilvus.exceptions import MilvusException
from pymilvus.milvus_client.index import IndexParams

from agent.knowledge.filters import BUCKETS, audience_expr, bucket_of, chunk_key, clip, document_expr, literal, make_key
from agent.knowledge.fusion import SearchMode, SearchWeights, fuse
from agent.knowledge.milvus_client import conflicts_expected, connect, settles
from agent.knowledge.schema import (
    CATALOG_FIELDS,
    HIT_FIELDS,
    MODEL_PROPERTY,
    bucket_schema,
    catalog_schema,
    document_from_row,
    hit_from_row,
)
from agent.types import Audience, Chunk, DocumentInfo, Hit

MAX_QUERY_ROWS = 16384  # Milvus caps one query's offset + limit here; ingestion keeps documents below it


class StoreError(RuntimeError):
    """The knowledge base cannot be used as configured (e.g. built with another embedding model)."""


class KnowledgeStore:
    def __init__(
        self,
        uri: str,
        *,
        collection: str,
        dim: int,
        embedding_name: str,
        token: str | None = None,
        weights: SearchWeights | None = None,
        dense_index: str = "AUTOINDEX",
    ) -> None:
        self.client = connect(uri, token or "")
        self.collection = collection
        """The name every collection of this knowledge base starts with (EXPERTBOT_COLLECTION)."""
        self.catalog = f"{collection}_documents"
        self.dim = dim
        self.embedding_name = embedding_name
        self.weights = weights or SearchWeights()
        self.dense_index = dense_index
        self._ready = False
        self._known: set[str] = set()  # bucket collections known to exist (any process may create one)
        self._opened: set[str] = set()  # bucket collections this process has checked, or made, ready to write
        self.model_tag = f"{embedding_name} dim={dim} buckets={BUCKETS}"

    def bucket(self, tenant: str, scope: str) -> str:
        """The collection that holds the passages of one scope."""
        return f"{self.collection}_passages_{bucket_of(tenant, scope):02d}"

    def _is_bucket(self, name: str) -> bool:
        prefix = f"{self.collection}_passages_"
        return name.startswith(prefix) and name[len(prefix) :].isdigit()

    # --- schema ----------------------------------------------------------------------------------------------
    def ensure_ready(self) -> None:
        """Check (or create) the catalog; refuse a knowledge base built for another embedding model or layout."""
        if self._ready:
            return
        names = set(self.client.list_collections())
        if self.collection in names:
            raise StoreError(
                f"collection {self.collection!r} holds passages in the single-collection layout of expertbot 0.1: "
                "run `expertbot docs migrate` once to move them into the audience buckets"
            )
        if self.catalog in names:
            built = self.client.describe_collection(self.catalog).get("properties", {}).get(MODEL_PROPERTY)
            if built != self.model_tag:
                raise StoreError(
                    f"knowledge base {self.collection!r} was built with {built!r}, not {self.model_tag!r}: "
                    "set EXPERTBOT_COLLECTION to a new name or EXPERTBOT_EMBEDDING_MODEL back"
                )
            self.client.load_collection(self.catalog)
        else:
            self.create(self.catalog, *self.catalog_schema())
        self._known = {n for n in names if self._is_bucket(n)}
        self._ready = True

    def catalog_schema(self) -> tuple[CollectionSchema, IndexParams]:
        return catalog_schema(self.client)

    def bucket_schema(self) -> tuple[CollectionSchema, IndexParams]:
        return bucket_schema(self.client, self.dim, self.dense_index)

    def create(self, name: str, schema: CollectionSchema, index: IndexParams) -> None:
        """Make a collection with its indexes, loaded; idempotent, and safe beside a process doing the same.

        Each step checks what is already there, so a process killed half-way (kill -9 of a worker on its first
        job into a bucket) leaves nothing that the next writer does not complete. The indexes are requested
        without waiting (`sync=False`): pymilvus would otherwise poll each one for half a second.
        """
        client = self.client
        with conflicts_expected():  # another process may be making the same collection: it wins, we wait
            if not client.has_collection(name):
                try:
                    client.create_collection(name, schema=schema, properties={MODEL_PROPERTY: self.model_tag})
                except MilvusException:
                    if not settles(lambda: client.has_collection(name)):
                        raise
            for params in index:
                field = params.field_name
                if client.list_indexes(name, field_name=field):
                    continue
                try:
                    client.create_index(name, IndexParams([params]), sync=False)
                except MilvusException:
                    if not settles(lambda f=field: bool(client.list_indexes(name, field_name=f))):  # type: ignore[misc]
                        raise
        self.client.load_collection(name)

    def open_bucket(self, name: str) -> str:
        """A bucket ready to write: made on first use, and checked (completed if needed) once per process."""
        if name not in self._opened:
            self.create(name, *self.bucket_schema())
            self._opened.add(name)
            self._known.add(name)
        return name

    def _writable(self, audience: Audience) -> str:
        """The bucket that holds the audience's own scope, ready to write."""
        self.ensure_ready()
        return self.open_bucket(self.bucket(audience.tenant, audience.scope))

    def buckets(self) -> list[str]:
        """Every bucket collection that exists now."""
        self._known = {n for n in self.client.list_collections() if self._is_bucket(n)}
        return sorted(self._known)

    def _existing(self, names: Iterable[str]) -> list[str]:
        """Those of the named buckets that exist: a bucket is made by its first write, perhaps by another process
        since this one last looked, so one that is not known yet is looked for again."""
        self.ensure_ready()
        wanted = sorted(set(names))
        if not self._known.issuperset(wanted):
            self.buckets()
        return [n for n in wanted if n in self._known]

    def _readable(self, audience: Audience) -> list[str]:
        """The buckets that may hold passages `audience` can see."""
        return self._existing(self.bucket(audience.tenant, s) for s in audience.visible_scopes)

    # --- writes ----------------------------------------------------------------------------------------------
    def upsert_chunks(
        self,
        audience: Audience,
        *,
        doc_id: str,
        source: str,
        content_hash: str,
        chunks: Sequence[Chunk],
        vectors: Sequence[Sequence[float]],
    ) -> None:
        """Write one batch of a document version's chunks (idempotent thanks to `chunk_key`)."""
        now = int(time.time())
        rows = [
            {
                "pk": chunk_key(audience, doc_id, content_hash, c.number),
                "tenant": audience.tenant,
                "scope": audience.scope,
                "doc_id": clip(doc_id, 1024),
                "source": clip(source, 1024),
                "title": clip(c.title, 1024),
                "heading": clip(c.heading, 2048),
                "chunk": c.number,
                "text": clip(c.text, 65535),
                "search_text": clip(c.search_text, 65535),
                "content_hash": content_hash,
                "created_at": now,
                "dense": list(v),
            }
            for c, v in zip(chunks, vectors, strict=True)
        ]
        if rows:
            self.client.upsert(self._writable(audience), rows)

    def delete_chunks(self, audience: Audience, doc_id: str, content_hash: str, numbers: Sequence[int]) -> None:
        """Delete passages of one document version by primary key (no scan)."""
        if numbers:
            keys = [chunk_key(audience, doc_id, content_hash, n) for n in numbers]
            self.client.delete(self._writable(audience), ids=keys)

    def forget(self, audience: Audience, doc_id: str) -> int:
        """Remove every chunk of a document in this exact scope; returns how many there were."""
        self.ensure_ready()
        expr = document_expr(audience, doc_id)
        count = 0
        for bucket in self._existing([self.bucket(audience.tenant, audience.scope)]):
            count = len(self._query(bucket, expr, ["pk"]))
            self.client.delete(bucket, filter=expr)
        known = self.document(audience, doc_id)
        doomed = [_doc_key(audience, doc_id)] + ([_content_key(audience, known.content_hash)] if known else [])
        self.client.delete(self.catalog, ids=doomed)
        self.flush()
        return count

    def flush(self) -> None:
        """Seal written rows: Milvus Lite searches unflushed rows by brute force, slowly.

        Every bucket is flushed, not only those this process wrote: another worker process may have left rows
        unflushed (it flushes only when the queue is idle). A bucket with nothing new costs one round trip.
        """
        self.ensure_ready()
        self.flush_buckets()
        self.client.flush(self.catalog)

    def flush_buckets(self) -> None:
        for bucket in self.buckets():
            self.client.flush(bucket)

    def record_document(self, audience: Audience, doc: DocumentInfo) -> None:
        """Note that this version of the document is completely written (and its content known here)."""
        self.ensure_ready()
        row = {
            "tenant": audience.tenant,
            "scope": audience.scope,
            "doc_id": clip(doc.doc_id, 1024),
            "source": clip(doc.source, 1024),
            "title": clip(doc.title, 1024),
            "content_hash": doc.content_hash,
            "chunks": doc.chunks,
            "created_at": int(doc.updated_at),
            "unused": [0.0, 0.0],
        }
        self.client.upsert(
            self.catalog,
            [
                {**row, "pk": _doc_key(audience, doc.doc_id), "kind": "doc"},
                {**row, "pk": _content_key(audience, doc.content_hash), "kind": "content"},
            ],
        )

    # --- reads -----------------------------------------------------------------------------------------------
    def document(self, audience: Audience, doc_id: str) -> DocumentInfo | None:
        """The completely written version of a document in this exact scope, if any."""
        return self._catalog_get(_doc_key(audience, doc_id))

    def document_with_content(self, audience: Audience, content_hash: str) -> DocumentInfo | None:
        """A document of this exact scope whose current version has exactly this content."""
        known = self._catalog_get(_content_key(audience, content_hash))
        if known is None:
            return None
        current = self.document(audience, known.doc_id)  # it may have a newer version since
        return current if current is not None and current.content_hash == content_hash else None

    def list_documents(self, tenant: str, scopes: Sequence[str] | None = None) -> list[DocumentInfo]:
        self.ensure_ready()
        expr = f'kind == "doc" and tenant == {literal(tenant)}'
        if scopes is not None:
            expr += f" and scope in [{', '.join(literal(s) for s in scopes)}]"
        rows = self.client.query(self.catalog, filter=expr, output_fields=CATALOG_FIELDS, limit=MAX_QUERY_ROWS)
        return sorted((document_from_row(r) for r in rows), key=lambda d: (d.scope, d.doc_id))

    def passages(self, audience: Audience) -> list[tuple[str, str]]:
        """(document id, text) of every passage stored in exactly this scope, in document order.

        For adapter training, which reads the tenant-wide scope only (never a private one); at most MAX_QUERY_ROWS.
        """
        expr = f"tenant == {literal(audience.tenant)} and scope == {literal(audience.scope)}"
        rows = [
            row
            for bucket in self._existing([self.bucket(audience.tenant, audience.scope)])
            for row in self._query(bucket, expr, ["doc_id", "chunk", "text"])
        ]
        rows.sort(key=lambda r: (r["doc_id"], r["chunk"]))
        return [(str(r["doc_id"]), str(r["text"])) for r in rows]

    def _catalog_get(self, key: str) -> DocumentInfo | None:
        self.ensure_ready()
        rows = self.client.get(self.catalog, ids=[key], output_fields=CATALOG_FIELDS)
        return document_from_row(rows[0]) if rows else None

    def count(self, audience: Audience | None = None) -> int:
        """Passages held: all of them, or those `audience` can see."""
        self.ensure_ready()
        buckets = self.buckets() if audience is None else self._readable(audience)
        expr = "" if audience is None else audience_expr(audience)
        return sum(
            int(self.client.query(bucket, filter=expr, output_fields=["count(*)"])[0]["count(*)"]) for bucket in buckets
        )

    def search(
        self,
        audience: Audience,
        query: str,
        query_vector: Sequence[float],
        *,
        k: int = 5,
        mode: SearchMode = "hybrid",
        one_per_document: bool | None = None,
    ) -> list[Hit]:
        """Top-k passages visible to `audience`: dense, BM25, or both fused by reciprocal rank.

        `one_per_document` overrides the weights' setting: listing sources wants one passage per document,
        composing an answer wants every good passage.
        """
        buckets, expr = self._readable(audience), audience_expr(audience)
        if mode == "dense":
            return [replace(h, similarity=h.score) for h in self._search(buckets, expr, list(query_vector), k)]
        if mode == "bm25":
            return self._search(buckets, expr, query, k)
        n = max(k * 4, self.weights.candidates)
        # One leg after the other: a Milvus Lite server is one Python process, where two requests at once only
        # take turns on its interpreter lock (measured: slower than in sequence; README, "Benchmarks").
        dense = self._search(buckets, expr, list(query_vector), n)
        bm25 = self._search(buckets, expr, query, n)
        weights = self.weights if one_per_document is None else replace(self.weights, one_per_document=one_per_document)
        return fuse(dense, bm25, weights, k)

    def _search(self, buckets: list[str], expr: str, query: str | list[float], limit: int) -> list[Hit]:
        """The best `limit` passages of these buckets: by BM25 for a text query, by cosine for a vector.

        The buckets' lists merge by score, larger first. Milvus reports BM25 as a positive score, Milvus Lite 3.2
        as its negation (smaller is better), so BM25 scores are taken as absolute values. BM25 scores of different
        buckets rest on each bucket's own statistics, as they already do across the segments of one collection.
        """
        field, metric = ("sparse", "BM25") if isinstance(query, str) else ("dense", "COSINE")
        hits: list[Hit] = []
        for bucket in buckets:
            rows = self.client.search(
                bucket,
                data=[query],
                anns_field=field,
                limit=limit,
                filter=expr,
                output_fields=HIT_FIELDS,
                search_params={"metric_type": metric},
            )[0]
            hits += (hit_from_row(row, bm25=metric == "BM25") for row in rows)
        return sorted(hits, key=lambda h: h.score, reverse=True)[:limit]

    # --- helpers ---------------------------------------------------------------------------------------------
    def _query(self, bucket: str, expr: str, fields: list[str]) -> list[dict[str, Any]]:
        """Rows of one bucket matching expr, at most MAX_QUERY_ROWS (ingestion keeps a document below that)."""
        return list(self.client.query(bucket, filter=expr, output_fields=fields, limit=MAX_QUERY_ROWS))


def _doc_key(audience: Audience, doc_id: str) -> str:
    return make_key("doc", audience.tenant, audience.scope, doc_id)


def _content_key(audience: Audience, content_hash: str) -> str:
    return make_key("content", audience.tenant, audience.scope, content_hash)
