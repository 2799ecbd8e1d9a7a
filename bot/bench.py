"""Speed benchmarks. Each one starts its own temporary services, so it never touches a real knowledge base,
and prints its figures beside the baseline they should be judged against, measured in the same run."""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from agent.evaluation import corpus_files
from agent.knowledge.chunking import chunk_document
from agent.knowledge.embeddings import get_embeddings
from agent.knowledge.parsers import DocumentError, parse_document
from agent.knowledge.store import KnowledgeStore, SearchMode
from agent.settings import Settings, load_settings
from agent.types import Audience


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextmanager
def temporary_environ(overrides: dict[str, str]) -> Iterator[None]:
    """Set environment variables (which child processes inherit) for the block; restore them afterwards."""
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def temporary_stack(base: Settings, *, worker: bool) -> Iterator[Settings]:
    """A throw-away Milvus Lite server (and Redis, unless REDIS_URL is set, and a worker) in a temp folder."""
    from bot.stack import LocalStack, free_port

    with tempfile.TemporaryDirectory(prefix="expertbot-bench-") as tmp:
        overrides = {
            "EXPERTBOT_DATA_DIR": tmp,
            "EXPERTBOT_LOCAL_REDIS_PORT": str(free_port()),
            "EXPERTBOT_LOCAL_MILVUS_PORT": str(free_port()),
            "EXPERTBOT_COLLECTION": f"bench_{os.getpid()}",
        }
        with temporary_environ(overrides):  # the worker process inherits these
            settings = load_settings(milvus_uri=None, redis_url=base.redis_url)
            with LocalStack(settings, worker=worker):
                yield settings


def bench_ingest(base: Settings, corpus: Path) -> dict[str, Any]:
    """Chunks per second through Redis → worker → Milvus, against the raw embedding speed on the same chunks."""
    from agent.settings import get_settings
    from workers.client import submit_ingest, wait_for_job

    files = [(p.relative_to(corpus).as_posix(), p.read_bytes()) for p in corpus_files(corpus)]
    texts: list[str] = []
    for name, data in files:
        try:
            texts += [c.embedding_text for c in chunk_document(parse_document(data, name), base.chunk_chars)]
        except DocumentError:
            continue
    model = get_embeddings(base.embedding_model)
    model.embed_documents(texts[:4])  # load the model outside the timing
    _log(f"embedding {len(texts)} chunks in-process ...")
    started = time.perf_counter()
    for i in range(0, len(texts), base.embed_batch):
        model.embed_documents(texts[i : i + base.embed_batch])
    embed_s = time.perf_counter() - started

    with temporary_stack(base, worker=True) as settings:
        get_settings.cache_clear()  # the job client reads the temporary stack's settings
        audience = Audience("bench", "bench")
        warm = submit_ingest(settings, audience, b"# Warm-up\n\nLoads the model in the worker.", "warmup.md")
        wait_for_job(warm, timeout_s=300)
        _log(f"ingesting {len(files)} files through the worker ...")
        started = time.perf_counter()
        jobs = [submit_ingest(settings, audience, data, name, name) for name, data in files]
        results = [wait_for_job(job, timeout_s=1800) for job in jobs]
        e2e_s = time.perf_counter() - started
        chunks = sum(int(r.result.get("chunks", 0)) for r in results if r.state == "done")
    get_settings.cache_clear()
    e2e, raw = chunks / e2e_s, len(texts) / embed_s
    return {
        "files": len(files),
        "chunks": chunks,
        "embedding_model": base.embedding_model,
        "e2e_chunks_per_s": round(e2e, 1),
        "embed_chunks_per_s": round(raw, 1),
        "ratio": round(e2e / raw, 3),
    }


_WORDS = [f"w{n}" for n in range(20_000)]


def _synthetic_text(rng: random.Random, words: int = 150) -> str:
    # Zipf-like word frequencies make the BM25 posting lists as skewed as in real text.
    return " ".join(_WORDS[min(int(rng.paretovariate(1.1)) - 1, len(_WORDS) - 1)] for _ in range(words))


def _units(rng: random.Random, n: int, dim: int) -> list[list[float]]:
    """n random unit vectors: uniform on the sphere, so every dense search does real work."""
    matrix = np.random.default_rng(rng.randrange(2**32)).standard_normal((n, dim)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix.tolist()  # type: ignore[no-any-return]


def bench_search(base: Settings, n_chunks: int, n_queries: int = 200, seed: int = 7) -> dict[str, Any]:
    """p50/p99 of a filtered top-5 search over n_chunks synthetic passages in 20 scopes of 3 tenants."""
    from agent.types import Chunk

    rng = random.Random(seed)
    dim = get_embeddings(base.embedding_model).dim
    audiences = [Audience(f"t{t}", f"s{s}") for t in range(3) for s in range(7)]
    with temporary_stack(base, worker=False) as settings:
        store = KnowledgeStore(
            settings.effective_milvus_uri, collection=settings.collection, dim=dim, embedding_name="bench"
        )
        _log(f"inserting {n_chunks} synthetic chunks ...")
        batch = 2000
        for start in range(0, n_chunks, batch):
            size = min(batch, n_chunks - start)
            audience = audiences[(start // batch) % len(audiences)]
            chunks = [Chunk(start + i, "Bench", "Section", _synthetic_text(rng)) for i in range(size)]
            store.upsert_chunks(
                audience,
                doc_id=f"doc{start}",
                source="bench",
                content_hash="h",
                chunks=chunks,
                vectors=_units(rng, size, dim),
            )
        store.flush()
        store.client.load_collection(store.collection)
        report: dict[str, Any] = {"chunks": store.count(), "queries": n_queries}
        modes: tuple[SearchMode, ...] = ("dense", "bm25", "hybrid")
        for mode in modes:
            report.update(_time_searches(store, rng, audiences, dim, n_queries, mode))
        store.client.close()
    return report


def _time_searches(
    store: KnowledgeStore, rng: random.Random, audiences: list[Audience], dim: int, n: int, mode: SearchMode
) -> dict[str, float]:
    for i in range(20):  # warm-up: the first searches after a flush build the segments' indexes
        store.search(audiences[i % len(audiences)], _synthetic_text(rng, 8), _units(rng, 1, dim)[0], k=5, mode=mode)
    latencies = []
    for i in range(n):
        query, vector = _synthetic_text(rng, 8), _units(rng, 1, dim)[0]
        started = time.perf_counter()
        store.search(audiences[i % len(audiences)], query, vector, k=5, mode=mode)
        latencies.append(1000 * (time.perf_counter() - started))
    latencies.sort()
    prefix = "" if mode == "hybrid" else f"{mode}_"
    return {
        f"{prefix}p50_ms": round(statistics.median(latencies), 1),
        f"{prefix}p99_ms": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1),
    }
