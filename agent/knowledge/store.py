"""The knowledge base: passages with a dense vector, a BM25 sparse vector and the audience fields, in Milvus.

Passages live in audience buckets: a stable hash of (tenant, scope) picks one of `BUCKETS` collections, and a
search reads only the buckets of the scopes its audience may see. Milvus Lite's BM25 search walks every row of
a collection on each query (to resolve row versions), so with one shared collection a search cost grew with the
whole deployment; per bucket it grows with what the audience can see (README, "Benchmarks").

Every read is still filtered by tenant and scope *inside* the Milvus expression (several scopes share a bucket),
so a passage from another scope can never reach a caller, whatever the question says. Milvus Lite does not
support bound filter parameters, so every value goes through `literal()`, which quotes and escapes it.
A catalog collection holds one row per document version. The same code talks to a Milvus Lite server
(`milvus-lite server`) or to a Milvus cluster.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from pymilvus import CollectionSchema, DataType, Function, FunctionType, MilvusClient
from pymilvus.exceptions import MilvusException
from pymilvus.milvus_client.index import IndexParams

from agent.types import Audience, Chunk, DocumentInfo, Hit

SearchMode = Literal["hybrid", "dense", "bm25"]

_MODEL_PROPERTY = "expertbot.embedding"
_CATALOG_FIELDS = ["doc_id", "source", "title", "scope", "content_hash", "chunks", "created_at"]
BUCKETS = 64
MAX_QUERY_ROWS = 16384  # Milvus caps one query's offset + limit here; ingestion keeps documents below it
_HIT_FIELDS = ["doc_id", "source", "title", "heading", "scope", "chunk", "text"]
_STORED_FIELDS = ["pk", "tenant", *_HIT_FIELDS, "search_text", "content_hash", "created_at", "dense"]
"""Every field of a passage but `sparse`, which Milvus computes from search_text."""


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


def bucket_of(tenant: str, scope: str) -> int:
    """The bucket that holds a scope's passages: a stable hash of (tenant, scope).

    The hash is the one the partitions of the single-collection layout used, so partition `aNN` of that layout
    is bucket NN of this one (see `KnowledgeStore.migrate`).
    """
    digest = hashlib.sha256(f"{tenant}\x1f{scope}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % BUCKETS


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
    candidates: int = 20
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
        """The name every collection of this knowledge base starts with (EXPERTBOT_COLLECTION)."""
        self.catalog = f"{collection}_documents"
        self.dim = dim
        self.embedding_name = embedding_name
        self.weights = weights or SearchWeights()
        self.dense_index = dense_index
        self._ready = False
        self._known: set[str] = set()  # bucket collections known to exist (any process may create one)
        self._opened: set[str] = set()  # bucket collections this process has checked, or made, ready to write
        self._model_tag = f"{embedding_name} dim={dim} buckets={BUCKETS}"

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
            built = self.client.describe_collection(self.catalog).get("properties", {}).get(_MODEL_PROPERTY)
            if built != self._model_tag:
                raise StoreError(
                    f"knowledge base {self.collection!r} was built with {built!r}, not {self._model_tag!r}: "
                    "set EXPERTBOT_COLLECTION to a new name or EXPERTBOT_EMBEDDING_MODEL back"
                )
            self.client.load_collection(self.catalog)
        else:
            self._create(self.catalog, *self._catalog_schema())
        self._known = {n for n in names if self._is_bucket(n)}
        self._ready = True

    def _catalog_schema(self) -> tuple[CollectionSchema, IndexParams]:
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
        return schema, index

    def _bucket_schema(self) -> tuple[CollectionSchema, IndexParams]:
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
        return schema, index

    def _create(self, name: str, schema: CollectionSchema, index: IndexParams) -> None:
        """Make a collection with its indexes, loaded; idempotent, and safe beside a process doing the same.

        Each step checks what is already there, so a process killed half-way (kill -9 of a worker on its first
        job into a bucket) leaves nothing that the next writer does not complete. The indexes are requested
        without waiting (`sync=False`): pymilvus would otherwise poll each one for half a second.
        """
        if not self.client.has_collection(name):
            try:
                self.client.create_collection(name, schema=schema, properties={_MODEL_PROPERTY: self._model_tag})
            except MilvusException:  # another process created it meanwhile
                if not self.client.has_collection(name):
                    raise
        missing = [i for i in index if not self.client.list_indexes(name, field_name=i.field_name)]
        for params in missing:
            try:
                self.client.create_index(name, IndexParams([params]), sync=False)
            except MilvusException:  # another process asked for it meanwhile
                if not self.client.list_indexes(name, field_name=params.field_name):
                    raise
        self.client.load_collection(name)

    def _open(self, name: str) -> str:
        """A bucket ready to write: made on first use, and checked (completed if needed) once per process."""
        if name not in self._opened:
            self._create(name, *self._bucket_schema())
            self._opened.add(name)
            self._known.add(name)
        return name

    def _writable(self, audience: Audience) -> str:
        """The bucket that holds the audience's own scope, ready to write."""
        self.ensure_ready()
        return self._open(self.bucket(audience.tenant, audience.scope))

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
        self._flush_buckets()
        self.client.flush(self.catalog)

    def _flush_buckets(self) -> None:
        for bucket in self.buckets():
            self.client.flush(bucket)

    def record_document(self, audience: Audience, doc: DocumentInfo) -> None:
        """Note that this version of the document is completely written (and its content known here)."""
        self.ensure_ready()
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

    def needs_migration(self) -> bool:
        """Whether passages of the single-collection layout (expertbot 0.1) are still here."""
        return bool(self.client.has_collection(self.collection))

    def migrate(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Move the passages of the single-collection layout (expertbot 0.1) into the buckets; returns how many.

        Safe to run again after an interruption: rows keep their keys, so a second pass overwrites, and the old
        collection is dropped only once every row has been copied and flushed.
        """
        if not self.needs_migration():
            return 0
        names = set(self.client.list_collections())
        built = str(self.client.describe_collection(self.collection).get("properties", {}).get(_MODEL_PROPERTY))
        if not built.startswith(f"{self.embedding_name} dim={self.dim} "):
            raise StoreError(
                f"collection {self.collection!r} was built with {built!r}, not {self.embedding_name!r} "
                f"(dim={self.dim}): set EXPERTBOT_EMBEDDING_MODEL to the model it was built with"
            )
        if self.catalog in names:
            self.client.alter_collection_properties(self.catalog, {_MODEL_PROPERTY: self._model_tag})
        else:
            self._create(self.catalog, *self._catalog_schema())
        self.client.load_collection(self.collection)
        total = int(self.client.query(self.collection, filter="", output_fields=["count(*)"])[0]["count(*)"])
        moved = 0
        iterator = self.client.query_iterator(self.collection, batch_size=500, output_fields=_STORED_FIELDS)
        try:
            while rows := iterator.next():
                by_bucket: dict[str, list[dict[str, Any]]] = {}
                for row in rows:
                    by_bucket.setdefault(self.bucket(row["tenant"], row["scope"]), []).append(row)
                for bucket, group in by_bucket.items():
                    self.client.upsert(self._open(bucket), group)
                moved += len(rows)
                if progress:
                    progress(moved, total)
        finally:
            iterator.close()
        self._flush_buckets()
        self.client.drop_collection(self.collection)
        return moved

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
        rows = self.client.query(self.catalog, filter=expr, output_fields=_CATALOG_FIELDS, limit=MAX_QUERY_ROWS)
        return sorted((_document(r) for r in rows), key=lambda d: (d.scope, d.doc_id))

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
        rows = self.client.get(self.catalog, ids=[key], output_fields=_CATALOG_FIELDS)
        return _document(rows[0]) if rows else None

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
                output_fields=_HIT_FIELDS,
                search_params={"metric_type": metric},
            )[0]
            hits += (_hit(row, bm25=metric == "BM25") for row in rows)
        return sorted(hits, key=lambda h: h.score, reverse=True)[:limit]

    # --- helpers ---------------------------------------------------------------------------------------------
    def _query(self, bucket: str, expr: str, fields: list[str]) -> list[dict[str, Any]]:
        """Rows of one bucket matching expr, at most MAX_QUERY_ROWS (ingestion keeps a document below that)."""
        return list(self.client.query(bucket, filter=expr, output_fields=fields, limit=MAX_QUERY_ROWS))


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


def _hit(row: dict[str, Any], *, bm25: bool = False) -> Hit:
    e = row.get("entity", row)
    distance = float(row.get("distance", 0.0))
    return Hit(
        doc_id=e["doc_id"],
        source=e["source"],
        title=e["title"],
        heading=e["heading"],
        scope=e["scope"],
        chunk=int(e["chunk"]),
        text=e["text"],
        score=abs(distance) if bm25 else distance,
    )
