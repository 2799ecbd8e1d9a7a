"""The knowledge base: one Milvus collection of passages with a dense vector, a BM25 sparse vector and the
audience fields.

Every read is filtered by tenant and scope *inside* the Milvus expression, so a passage from another scope can
never reach a caller, whatever the question says. Milvus Lite does not support bound filter parameters, so
every value goes through `literal()`, which quotes and escapes it.
The same code talks to a Milvus Lite server (`milvus-lite server`) or to a Milvus cluster.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Literal

from pymilvus import DataType, Function, FunctionType, MilvusClient
from pymilvus.exceptions import MilvusException

from agent.types import Audience, Chunk, DocumentInfo, Hit

SearchMode = Literal["hybrid", "dense", "bm25"]

_MODEL_PROPERTY = "expertbot.embedding"
_CATALOG_FIELDS = ["doc_id", "source", "title", "scope", "content_hash", "chunks", "created_at"]
PARTITIONS = 64
MAX_QUERY_ROWS = 16384  # Milvus caps one query's offset + limit here; ingestion keeps documents below it
_HIT_FIELDS = ["doc_id", "source", "title", "heading", "scope", "chunk", "text"]


class StoreError(RuntimeError):
    """The knowledge base cannot be used as configured (e.g. built with another embedding model)."""


def _clip(text: str, limit: int) -> str:
    """Milvus VARCHAR limits count bytes; cut on a character boundary below the limit."""
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit].decode("utf-8", "ignore")


def literal(value: str) -> str:
    """A Milvus string literal: quoted, with backslashes and quotes escaped, control characters dropped."""
    clean = "".join(ch for ch in value if ch >= " " and ch != "\x7f")
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def audience_expr(audience: Audience) -> str:
    scopes = ", ".join(literal(s) for s in audience.visible_scopes)
    return f"tenant == {literal(audience.tenant)} and scope in [{scopes}]"


def document_expr(audience: Audience, doc_id: str) -> str:
    return (
        f"tenant == {literal(audience.tenant)} and scope == {literal(audience.scope)} and doc_id == {literal(doc_id)}"
    )


def partition_of(tenant: str, scope: str) -> str:
    """The partition that holds an audience's passages: a stable hash of (tenant, scope) into a few buckets.

    Searches name only the partitions of the scopes they may see, so the engine skips the rest of the
    collection (Milvus Lite scans every row of the partitions it searches). The filter expression still
    decides visibility: several scopes share a bucket.
    """
    digest = hashlib.sha256(f"{tenant}\x1f{scope}".encode()).digest()
    return f"a{int.from_bytes(digest[:4], 'big') % PARTITIONS:02d}"


def audience_partitions(audience: Audience) -> list[str]:
    return sorted({partition_of(audience.tenant, s) for s in audience.visible_scopes})


def _key(*parts: str) -> str:
    """A deterministic primary key from its parts (Milvus VARCHAR keys: 40 hex characters)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


def chunk_key(audience: Audience, doc_id: str, content_hash: str, number: int) -> str:
    """A passage's key: ingesting the same version twice overwrites instead of duplicating."""
    return _key(audience.tenant, audience.scope, doc_id, content_hash, str(number))


@dataclass(frozen=True)
class SearchWeights:
    """Weighted reciprocal-rank fusion, tuned on the development questions (see README, "Retrieval").

    BM25 is the stronger signal on this kind of corpus (exact names, versions, numbers); the multilingual dense
    vector adds the paraphrases and the cross-language questions. A small `rrf_k` lets the top of each list
    count; one passage per document keeps the top k from being five passages of the same page.
    """

    rrf_k: int = 10
    dense: float = 0.7
    bm25: float = 1.0
    candidates: int = 50
    one_per_document: bool = True


def fuse(dense: Sequence[Hit], bm25: Sequence[Hit], weights: SearchWeights, k: int) -> list[Hit]:
    """Weighted reciprocal-rank fusion of two ranked lists; the fused score replaces each hit's score."""
    scores: dict[tuple[str, str, int], float] = {}
    hits: dict[tuple[str, str, int], Hit] = {}
    for weight, ranked in ((weights.dense, dense), (weights.bm25, bm25)):
        for rank, hit in enumerate(ranked, 1):
            key = (hit.scope, hit.doc_id, hit.chunk)
            scores[key] = scores.get(key, 0.0) + weight / (weights.rrf_k + rank)
            hits.setdefault(key, replace(hit, similarity=hit.score) if ranked is dense else hit)
    fused: list[Hit] = []
    seen: set[tuple[str, str]] = set()
    for key in sorted(scores, key=scores.__getitem__, reverse=True):
        if weights.one_per_document:
            if key[:2] in seen:
                continue
            seen.add(key[:2])
        fused.append(replace(hits[key], score=round(scores[key], 6)))
        if len(fused) == k:
            break
    return fused


_NOT_LOADED = 101
"""Milvus' CollectionNotLoaded: what every read gets after the server restarted, until someone loads again."""


class _ReloadingClient(MilvusClient):  # type: ignore[misc]
    """A MilvusClient whose reads load the collection again when a restarted server has released it.

    Without this, every process connected across a Milvus restart (workers, bots) would fail all its reads
    until it was restarted itself, and the ingestion jobs' retries would run out.
    """

    def _again(self, method: Any, collection: str, *args: Any, **kwargs: Any) -> Any:
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


def _connect(uri: str, token: str) -> _ReloadingClient:
    """A client, tried twice: pymilvus shares one connection per address within a process and, when it has been
    idle for a while, revives it first. On a Milvus Lite server that revival can meet a connection the server
    has just dropped ("too many pings": idle keepalive pings) and fail once; half a second later it succeeds.
    """
    try:
        return _ReloadingClient(uri=uri, token=token)
    except MilvusException:
        time.sleep(0.5)
        return _ReloadingClient(uri=uri, token=token)


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
        self.client = _connect(uri, token or "")
        self.collection = collection
        self.catalog = f"{collection}_documents"
        self.dim = dim
        self.embedding_name = embedding_name
        self.weights = weights or SearchWeights()
        self.dense_index = dense_index
        self._ready = False
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="milvus-search")
        self._model_tag = f"{embedding_name} dim={dim} partitions={PARTITIONS}"

    # --- schema ----------------------------------------------------------------------------------------------
    def ensure_collection(self) -> None:
        """Create the collection on first use; refuse one built for another embedding model."""
        if self._ready:
            return
        if self.client.has_collection(self.collection):
            built = self.client.describe_collection(self.collection).get("properties", {}).get(_MODEL_PROPERTY)
            if built != self._model_tag:
                raise StoreError(
                    f"collection {self.collection!r} was built with {built!r}, not {self._model_tag!r}: "
                    "set EXPERTBOT_COLLECTION to a new name or EXPERTBOT_EMBEDDING_MODEL back"
                )
            self._ensure_partitions()
            self.client.load_collection(self.collection)
        else:
            self._create()
        if self.client.has_collection(self.catalog):
            self.client.load_collection(self.catalog)
        else:
            self._create_catalog()
        self._ready = True

    def _create_catalog(self) -> None:
        """One row per document version held (and one per content hash), looked up by primary key.

        Ingestion decides what to do from these rows instead of scanning passages, which on Milvus Lite costs
        a pass over every unflushed row. Milvus wants a vector in every collection: `unused` is that.
        """
        schema = self.client.create_schema(auto_id=False, description="expertbot documents")
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64)
        for name, length in (("tenant", 256), ("scope", 512), ("doc_id", 1024), ("source", 1024), ("title", 1024)):
            schema.add_field(name, DataType.VARCHAR, max_length=length)
        schema.add_field("kind", DataType.VARCHAR, max_length=16)
        schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
        schema.add_field("chunks", DataType.INT32)
        schema.add_field("created_at", DataType.INT64)
        schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)
        index = self.client.prepare_index_params()
        index.add_index("unused", index_type="AUTOINDEX", metric_type="L2")
        index.add_index("tenant", index_type="INVERTED")
        self.client.create_collection(self.catalog, schema=schema, index_params=index)

    def _create(self) -> None:
        schema = self.client.create_schema(auto_id=False, description="expertbot passages")
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("tenant", DataType.VARCHAR, max_length=256)
        schema.add_field("scope", DataType.VARCHAR, max_length=512)
        schema.add_field("doc_id", DataType.VARCHAR, max_length=1024)
        schema.add_field("source", DataType.VARCHAR, max_length=1024)
        schema.add_field("title", DataType.VARCHAR, max_length=1024)
        schema.add_field("heading", DataType.VARCHAR, max_length=2048)
        schema.add_field("chunk", DataType.INT32)
        schema.add_field("text", DataType.VARCHAR, max_length=65535)
        schema.add_field(
            "search_text",
            DataType.VARCHAR,
            max_length=65535,
            enable_analyzer=True,
            analyzer_params={"tokenizer": "standard", "filter": ["lowercase"]},
        )
        schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
        schema.add_field("created_at", DataType.INT64)
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(
            Function(
                name="bm25",
                function_type=FunctionType.BM25,
                input_field_names=["search_text"],
                output_field_names=["sparse"],
            )
        )
        index = self.client.prepare_index_params()
        index.add_index("dense", index_type=self.dense_index, metric_type="COSINE")
        index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        index.add_index("tenant", index_type="INVERTED")
        index.add_index("scope", index_type="INVERTED")
        index.add_index("doc_id", index_type="INVERTED")
        self.client.create_collection(
            self.collection, schema=schema, index_params=index, properties={_MODEL_PROPERTY: self._model_tag}
        )
        self._ensure_partitions()

    def _ensure_partitions(self) -> None:
        """Create whichever audience partitions are missing.

        Creating a collection and its partitions takes many calls: a process killed in between (kill -9 of a
        worker on its first job) leaves a collection without some partitions, and every later write to them
        would fail. So every process checks, once, when it opens the collection.
        """
        existing = set(self.client.list_partitions(self.collection))
        for n in range(PARTITIONS):
            name = f"a{n:02d}"
            if name not in existing:
                try:
                    self.client.create_partition(self.collection, name)
                except MilvusException:  # another process created it meanwhile
                    if not self.client.has_partition(self.collection, name):
                        raise

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
        self.ensure_collection()
        now = int(time.time())
        rows = [
            {
                "pk": chunk_key(audience, doc_id, content_hash, c.number),
                "tenant": audience.tenant,
                "scope": audience.scope,
                "doc_id": _clip(doc_id, 1024),
                "source": _clip(source, 1024),
                "title": _clip(c.title, 1024),
                "heading": _clip(c.heading, 2048),
                "chunk": c.number,
                "text": _clip(c.text, 65535),
                "search_text": _clip(c.embedding_text, 65535),
                "content_hash": content_hash,
                "created_at": now,
                "dense": list(v),
            }
            for c, v in zip(chunks, vectors, strict=True)
        ]
        if rows:
            self.client.upsert(self.collection, rows, partition_name=partition_of(audience.tenant, audience.scope))

    def delete_chunks(self, audience: Audience, doc_id: str, content_hash: str, numbers: Sequence[int]) -> None:
        """Delete passages of one document version by primary key (no scan)."""
        if numbers:
            keys = [chunk_key(audience, doc_id, content_hash, n) for n in numbers]
            self.client.delete(self.collection, ids=keys, partition_name=partition_of(audience.tenant, audience.scope))

    def forget(self, audience: Audience, doc_id: str) -> int:
        """Remove every chunk of a document in this exact scope; returns how many there were."""
        self.ensure_collection()
        expr = document_expr(audience, doc_id)
        partition = partition_of(audience.tenant, audience.scope)
        count = len(self._query(expr, ["pk"], [partition], bounded=True))
        self.client.delete(self.collection, filter=expr, partition_name=partition)
        known = self.document(audience, doc_id)
        doomed = [_doc_key(audience, doc_id)] + ([_content_key(audience, known.content_hash)] if known else [])
        self.client.delete(self.catalog, ids=doomed)
        self.flush()
        return count

    def flush(self) -> None:
        """Seal written rows: Milvus Lite searches unflushed rows by brute force, slowly."""
        self.client.flush(self.collection)
        self.client.flush(self.catalog)

    def record_document(self, audience: Audience, doc: DocumentInfo) -> None:
        """Note that this version of the document is completely written (and its content known here)."""
        self.ensure_collection()
        row = {
            "tenant": audience.tenant,
            "scope": audience.scope,
            "doc_id": _clip(doc.doc_id, 1024),
            "source": _clip(doc.source, 1024),
            "title": _clip(doc.title, 1024),
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
        self.ensure_collection()
        expr = f'kind == "doc" and tenant == {literal(tenant)}'
        if scopes is not None:
            expr += f" and scope in [{', '.join(literal(s) for s in scopes)}]"
        rows = self.client.query(self.catalog, filter=expr, output_fields=_CATALOG_FIELDS, limit=MAX_QUERY_ROWS)
        return sorted((_document(r) for r in rows), key=lambda d: (d.scope, d.doc_id))

    def passages(self, audience: Audience) -> list[tuple[str, str]]:
        """(document id, text) of every passage stored in exactly this scope, in document order.

        For adapter training, which reads the tenant-wide scope only (never a private one); at most MAX_QUERY_ROWS.
        """
        rows = self._query(
            f"tenant == {literal(audience.tenant)} and scope == {literal(audience.scope)}",
            ["doc_id", "chunk", "text"],
            audience_partitions(audience),
            bounded=True,
        )
        rows.sort(key=lambda r: (r["doc_id"], r["chunk"]))
        return [(str(r["doc_id"]), str(r["text"])) for r in rows]

    def _catalog_get(self, key: str) -> DocumentInfo | None:
        self.ensure_collection()
        rows = self.client.get(self.catalog, ids=[key], output_fields=_CATALOG_FIELDS)
        return _document(rows[0]) if rows else None

    def count(self, audience: Audience | None = None) -> int:
        self.ensure_collection()
        if audience is None:
            res = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        else:
            res = self.client.query(
                self.collection,
                filter=audience_expr(audience),
                output_fields=["count(*)"],
                partition_names=audience_partitions(audience),
            )
        return int(res[0]["count(*)"])

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
        self.ensure_collection()
        where = (audience_expr(audience), audience_partitions(audience))
        if mode == "dense":
            return [
                replace(h, similarity=h.score) for h in self._search(where, [list(query_vector)], "dense", "COSINE", k)
            ]
        if mode == "bm25":
            return self._search(where, [query], "sparse", "BM25", k)
        n = max(k * 4, self.weights.candidates)
        # The two searches are independent: run them side by side (the dense one mostly waits on faiss/gRPC).
        dense = self._pool.submit(self._search, where, [list(query_vector)], "dense", "COSINE", n)
        bm25 = self._search(where, [query], "sparse", "BM25", n)
        weights = self.weights if one_per_document is None else replace(self.weights, one_per_document=one_per_document)
        return fuse(dense.result(), bm25, weights, k)

    def _search(self, where: tuple[str, list[str]], data: list[Any], field: str, metric: str, limit: int) -> list[Hit]:
        expr, partitions = where
        res = self.client.search(
            self.collection,
            data=data,
            anns_field=field,
            limit=limit,
            filter=expr,
            partition_names=partitions,
            output_fields=_HIT_FIELDS,
            search_params={"metric_type": metric},
        )
        return [_hit(row) for row in res[0]]

    # --- helpers ---------------------------------------------------------------------------------------------
    def _query(
        self, expr: str, fields: list[str], partitions: list[str] | None, *, bounded: bool = False
    ) -> list[dict[str, Any]]:
        """Rows matching expr; `bounded` (at most MAX_QUERY_ROWS) takes one round trip instead of an iterator."""
        self.ensure_collection()
        if bounded:
            return list(
                self.client.query(
                    self.collection, filter=expr, output_fields=fields, partition_names=partitions, limit=MAX_QUERY_ROWS
                )
            )
        rows: list[dict[str, Any]] = []
        iterator = self.client.query_iterator(
            self.collection, batch_size=1000, filter=expr, output_fields=fields, partition_names=partitions
        )
        try:
            while batch := iterator.next():
                rows.extend(batch)
        finally:
            iterator.close()
        return rows


def _doc_key(audience: Audience, doc_id: str) -> str:
    return _key("doc", audience.tenant, audience.scope, doc_id)


def _content_key(audience: Audience, content_hash: str) -> str:
    return _key("content", audience.tenant, audience.scope, content_hash)


def _document(row: dict[str, Any]) -> DocumentInfo:
    return DocumentInfo(
        doc_id=row["doc_id"],
        source=row["source"],
        title=row["title"],
        scope=row["scope"],
        chunks=int(row["chunks"]),
        content_hash=row["content_hash"],
        updated_at=float(row["created_at"]),
    )


def _hit(row: dict[str, Any]) -> Hit:
    e = row.get("entity", row)
    return Hit(
        doc_id=e["doc_id"],
        source=e["source"],
        title=e["title"],
        heading=e["heading"],
        scope=e["scope"],
        chunk=int(e["chunk"]),
        text=e["text"],
        score=float(row.get("distance", 0.0)),
    )
