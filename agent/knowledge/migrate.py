"""The one-off move of an expertbot 0.1 knowledge base (one collection) into the audience buckets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.knowledge.schema import MODEL_PROPERTY, STORED_FIELDS
from agent.knowledge.store import KnowledgeStore, StoreError


def needs_migration(store: KnowledgeStore) -> bool:
    """Whether passages of the single-collection layout (expertbot 0.1) are still here."""
    return bool(store.client.has_collection(store.collection))


def migrate(store: KnowledgeStore, progress: Callable[[int, int], None] | None = None) -> int:
    """Move the passages of the single-collection layout (expertbot 0.1) into the buckets; returns how many.

    Safe to run again after an interruption: rows keep their keys, so a second pass overwrites, and the old
    collection is dropped only once every row has been copied and flushed.
    """
    if not needs_migration(store):
        return 0
    names = set(store.client.list_collections())
    built = str(store.client.describe_collection(store.collection).get("properties", {}).get(MODEL_PROPERTY))
    if not built.startswith(f"{store.embedding_name} dim={store.dim} "):
        raise StoreError(
            f"collection {store.collection!r} was built with {built!r}, not {store.embedding_name!r} "
            f"(dim={store.dim}): set EXPERTBOT_EMBEDDING_MODEL to the model it was built with"
        )
    if store.catalog in names:
        store.client.alter_collection_properties(store.catalog, {MODEL_PROPERTY: store.model_tag})
    else:
        store.create(store.catalog, *store.catalog_schema())
    store.client.load_collection(store.collection)
    total = int(store.client.query(store.collection, filter="", output_fields=["count(*)"])[0]["count(*)"])
    moved = 0
    iterator = store.client.query_iterator(store.collection, batch_size=500, output_fields=STORED_FIELDS)
    try:
        while rows := iterator.next():
            by_bucket: dict[str, list[dict[str, Any]]] = {}
            for row in rows:
                by_bucket.setdefault(store.bucket(row["tenant"], row["scope"]), []).append(row)
            for bucket, group in by_bucket.items():
                store.client.upsert(store.open_bucket(bucket), group)
            moved += len(rows)
            if progress:
                progress(moved, total)
    finally:
        iterator.close()
    store.flush_buckets()
    store.client.drop_collection(store.collection)
    return moved
