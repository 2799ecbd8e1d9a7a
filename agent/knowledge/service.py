"""The knowledge base as the rest of the code sees it: a store and the embedding model that fills it."""

from __future__ import annotations

from dataclasses import dataclass

from agent.knowledge.embeddings import PackagedEmbeddings, get_embeddings, use_threads
from agent.knowledge.fusion import SearchMode
from agent.knowledge.store import KnowledgeStore
from agent.settings import Settings
from agent.types import Audience, Hit


@dataclass
class Knowledge:
    store: KnowledgeStore
    settings: Settings

    @property
    def embeddings(self) -> PackagedEmbeddings:
        return get_embeddings(self.settings.embedding_model)

    def search(
        self,
        audience: Audience,
        query: str,
        *,
        k: int = 5,
        mode: SearchMode = "hybrid",
        one_per_document: bool | None = None,
    ) -> list[Hit]:
        """The best k passages for a question, only from what `audience` may see."""
        query = query.strip()
        if not query:
            return []
        vector = self.embeddings.embed_query(query)
        return self.store.search(audience, query, vector, k=k, mode=mode, one_per_document=one_per_document)


def open_knowledge(settings: Settings) -> Knowledge:
    """Connect to the configured Milvus (a Lite server or a cluster) with the configured embedding model."""
    if settings.embed_threads:  # else the default: all cores, or a Celery worker's share (workers/celery_app.py)
        use_threads(settings.embed_threads)
    model = get_embeddings(settings.embedding_model)
    store = KnowledgeStore(
        settings.effective_milvus_uri,
        token=settings.milvus_token,
        collection=settings.collection,
        dim=model.dim,
        embedding_name=model.name,
    )
    return Knowledge(store, settings)
