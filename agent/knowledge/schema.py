"""The Milvus schemas of a knowledge base (the catalog and the passage buckets) and how their rows read back."""

from __future__ import annotations

from typing import Any

from pymilvus import CollectionSchema, DataType, Function, FunctionType, MilvusClient
from pymilvus.milvus_client.index import IndexParams

from agent.types import DocumentInfo, Hit

MODEL_PROPERTY = "expertbot.embedding"
CATALOG_FIELDS = ["doc_id", "source", "title", "scope", "content_hash", "chunks", "created_at"]
HIT_FIELDS = ["doc_id", "source", "title", "heading", "scope", "chunk", "text"]
STORED_FIELDS = ["pk", "tenant", *HIT_FIELDS, "search_text", "content_hash", "created_at", "dense"]
"""Every field of a passage but `sparse`, which Milvus computes from search_text."""


def catalog_schema(client: MilvusClient) -> tuple[CollectionSchema, IndexParams]:
    """One row per document version held (and one per content hash), looked up by primary key.

    Ingestion decides what to do from these rows instead of scanning passages, which on Milvus Lite costs
    a pass over every unflushed row. Milvus wants a vector in every collection: `unused` is that.
    """
    schema = client.create_schema(auto_id=False, description="expertbot documents")
    schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64)
    for name, length in (("tenant", 256), ("scope", 512), ("doc_id", 1024), ("source", 1024), ("title", 1024)):
        schema.add_field(name, DataType.VARCHAR, max_length=length)
    schema.add_field("kind", DataType.VARCHAR, max_length=16)
    schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
    schema.add_field("chunks", DataType.INT32)
    schema.add_field("created_at", DataType.INT64)
    schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)
    index = client.prepare_index_params()
    index.add_index("unused", index_type="AUTOINDEX", metric_type="L2")
    index.add_index("tenant", index_type="INVERTED")
    return schema, index


def bucket_schema(client: MilvusClient, dim: int, dense_index: str) -> tuple[CollectionSchema, IndexParams]:
    schema = client.create_schema(auto_id=False, description="expertbot passages")
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
    schema.add_field("dense", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(
        Function(
            name="bm25",
            function_type=FunctionType.BM25,
            input_field_names=["search_text"],
            output_field_names=["sparse"],
        )
    )
    index = client.prepare_index_params()
    index.add_index("dense", index_type=dense_index, metric_type="COSINE")
    index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    index.add_index("tenant", index_type="INVERTED")
    index.add_index("scope", index_type="INVERTED")
    index.add_index("doc_id", index_type="INVERTED")
    return schema, index


def document_from_row(row: dict[str, Any]) -> DocumentInfo:
    return DocumentInfo(
        doc_id=row["doc_id"],
        source=row["source"],
        title=row["title"],
        scope=row["scope"],
        chunks=int(row["chunks"]),
        content_hash=row["content_hash"],
        updated_at=float(row["created_at"]),
    )


def hit_from_row(row: dict[str, Any], *, bm25: bool = False) -> Hit:
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
