"""Speed benchmarks. Each one starts its own temporary services, so it never touches a real knowledge base,
and prints its figures beside the baseline they should be judged against, measured in the same run."""

from __future__ import annotations

import bisect
import collections
import itertools
import multiprocessing
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil

from agent.evaluation import corpus_files
from agent.knowledge.chunking import chunk_document
from agent.knowledge.embeddings import get_embeddings, use_threads
from agent.knowledge.fusion import SEARCH_MODES, SearchMode
from agent.knowledge.parsers import DocumentError, parse_document
from agent.knowledge.store import KnowledgeStore
from agent.settings import EmbeddingModelName, Settings, load_settings
from agent.types import Audience

if TYPE_CHECKING:
    from bot.localstack import LocalStack, ManagedProcess


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
    with temporary_local_stack(base, worker=worker) as stack:
        yield stack.settings


@contextmanager
def temporary_local_stack(base: Settings, *, worker: bool) -> Iterator[LocalStack]:
    """`temporary_stack`, giving the stack itself (its processes) rather than only its settings."""
    from bot.localstack import LocalStack, free_port

    with tempfile.TemporaryDirectory(prefix="expertbot-bench-") as tmp:
        overrides = {
            "EXPERTBOT_DATA_DIR": tmp,
            "EXPERTBOT_LOCAL_REDIS_PORT": str(free_port()),
            "EXPERTBOT_LOCAL_MILVUS_PORT": str(free_port()),
            "EXPERTBOT_COLLECTION": f"bench_{os.getpid()}",
            "EXPERTBOT_WORKER_CONCURRENCY": str(base.worker_concurrency),  # as the caller set it
        }
        with temporary_environ(overrides):  # the worker process inherits these
            settings = load_settings(milvus_uri=None, redis_url=base.redis_url)
            with LocalStack(settings, worker=worker) as stack:
                yield stack


def wait_until_idle(pid: int, *, quiet_s: float = 3.0, timeout_s: float = 900.0) -> float:
    """Wait until a process has used (almost) no CPU for `quiet_s`; return the seconds waited.

    After a bulk load Milvus Lite compacts segments and builds their indexes in the background, for seconds to
    minutes; searches meanwhile share the cores with that work. The search benchmark measures the steady state.
    """
    process = psutil.Process(pid)
    started = time.monotonic()
    quiet_since = started
    used = sum(process.cpu_times()[:2])
    while time.monotonic() - quiet_since < quiet_s and time.monotonic() - started < timeout_s:
        time.sleep(0.5)
        now = sum(process.cpu_times()[:2])
        if now - used > 0.05:  # more than 10% of a core over the last half second
            quiet_since = time.monotonic()
        used = now
    return time.monotonic() - started


def bench_ingest(base: Settings, corpus: Path) -> dict[str, Any]:
    """Chunks per second through Redis → worker → Milvus, against the raw embedding speed on the same chunks.

    The raw speed is the best of the layouts the cores allow, each measured before and after the end-to-end run
    (this machine's speed drifts): one process using every core; one single-threaded process per core; and, when
    it differs, the worker's own layout (`EXPERTBOT_WORKER_CONCURRENCY`, `--processes`). So the ratio measures what
    the pipeline costs, never a gain from using the cores differently from the baseline.
    """
    from agent.settings import get_settings
    from workers.client import submit_ingest, wait_for_job

    files = [(p.relative_to(corpus).as_posix(), p.read_bytes()) for p in corpus_files(corpus)]
    texts = _passage_texts(base, files)
    batches = [texts[i : i + base.embed_batch] for i in range(0, len(texts), base.embed_batch)]
    processes, cores = base.ingest_processes, os.cpu_count() or 1
    pools = {"per_core": cores} | ({"worker_layout": processes} if processes != cores else {})

    def raw() -> dict[str, float]:
        _log(f"embedding {len(texts)} chunks in one process, then in pools of {sorted(set(pools.values()))} ...")
        speeds = {"one_process": len(texts) / _embed_seconds(base, batches, 0)}
        return speeds | {name: len(texts) / _embed_seconds(base, batches, n) for name, n in pools.items()}

    before = raw()
    with temporary_local_stack(base, worker=True) as stack:
        settings = stack.settings
        get_settings.cache_clear()  # the job client reads the temporary stack's settings
        # What really runs, as a check on the settings.
        pool_size = len(psutil.Process(_process(stack, "worker-ingest").pid).children())
        audience = Audience("bench", "bench")
        # Warm-up jobs, a few per worker process, make sure every process has loaded the model (each loads it
        # when it starts) and opened its connections before the clock starts.
        warm_up = [
            submit_ingest(settings, audience, f"# Warm-up {n}\n\nWarming up.".encode(), f"warmup{n}.md")
            for n in range(3 * processes)
        ]
        for job in warm_up:
            state = wait_for_job(job, timeout_s=300)
            if state.state != "done" or state.result.get("status") != "ready":
                raise RuntimeError(f"bench ingest: a warm-up job did not ingest its document: {state}")
        _log(f"ingesting {len(files)} files through the worker ({processes} processes) ...")
        started = time.perf_counter()
        jobs = [submit_ingest(settings, audience, data, name, name) for name, data in files]
        # Polled often: the clock stops when the last job is seen done, so a slow poll would count as ingest time.
        results = [wait_for_job(job, timeout_s=1800, poll_s=0.02) for job in jobs]
        e2e_s = time.perf_counter() - started
        chunks = sum(int(r.result.get("chunks", 0)) for r in results if r.state == "done")
    get_settings.cache_clear()
    after = raw()
    layouts = {k: (before[k] + after[k]) / 2 for k in before}
    e2e, best = chunks / e2e_s, max(layouts.values())
    # "ratio" is against the fastest layout; "ratio_one_process" against the model embedding in one process.
    return {
        "files": len(files),
        "chunks": chunks,
        "embedding_model": base.embedding_model,
        "worker_processes": pool_size,
        "e2e_chunks_per_s": round(e2e, 1),
        "embed_chunks_per_s": round(best, 1),
        **{f"embed_{k}_chunks_per_s": [round(before[k], 1), round(after[k], 1)] for k in before},
        "ratio": round(e2e / best, 3),
        "ratio_one_process": round(e2e / layouts["one_process"], 3),
    }


def _passage_texts(settings: Settings, files: list[tuple[str, bytes]]) -> list[str]:
    """Every passage of the files, as it is embedded and indexed; files that do not parse are left out."""
    texts: list[str] = []
    for name, data in files:
        try:
            texts += [c.embedding_text for c in chunk_document(parse_document(data, name), settings.chunk_chars)]
        except DocumentError:
            continue
    return texts


def _embed_seconds(settings: Settings, batches: list[list[str]], processes: int) -> float:
    """Seconds to embed the batches: in this process with every core (processes=0), or in a pool of processes
    with one thread each, the layout of an ingest worker. Model loading is left out of the timing."""
    if not processes:
        model = get_embeddings(settings.embedding_model)
        model.embed_documents(["warm-up"])
        started = time.perf_counter()
        for batch in batches:
            model.embed_documents(batch)
        return time.perf_counter() - started
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no BLAS threads inherited
    name = settings.embedding_model
    with ProcessPoolExecutor(processes, context, _load_single_threaded, (name,)) as pool:
        list(pool.map(_embed_in_child, [(name, ["warm-up"])] * 2 * processes))  # all started and loaded
        started = time.perf_counter()
        list(pool.map(_embed_in_child, [(name, batch) for batch in batches]))
        return time.perf_counter() - started


def _load_single_threaded(name: EmbeddingModelName) -> None:
    use_threads(1)
    get_embeddings(name).embed_documents(["warm-up"])


def _embed_in_child(job: tuple[EmbeddingModelName, list[str]]) -> int:
    name, batch = job
    return len(get_embeddings(name).embed_documents(batch))


_WORDS = [f"w{n}" for n in range(20_000)]
_ZIPF = list(itertools.accumulate(1 / rank for rank in range(1, len(_WORDS) + 1)))
QUERY_WORDS = 14
"""The development questions' mean length in words (../shared/eval/qa_dev.jsonl)."""
_TOKEN = re.compile(r"\w+")
"""How Milvus' standard analyzer cuts text into words, which is what BM25 works on."""


def _synthetic_text(rng: random.Random, words: int = 150) -> str:
    """Words drawn by Zipf's law (the r-th commonest word has frequency ∝ 1/r), as in natural text.

    The commonest word is then 9.5% of all words, more than "the" in the evaluation corpus (2.9%), so the BM25
    posting lists of common query words are at least as long as in real passages.
    """
    total = _ZIPF[-1]
    return " ".join(_WORDS[bisect.bisect_left(_ZIPF, rng.random() * total)] for _ in range(words))


@dataclass(frozen=True)
class BenchText:
    """Where the search benchmark's passages and questions come from.

    What a BM25 search costs on Milvus Lite is the length of the posting lists it walks, so what matters is how
    many passages each question's words occur in. Synthetic Zipf text (the default) needs no data; a corpus gives
    its own passage lengths and word frequencies, with real questions.
    """

    name: str
    passage: Callable[[random.Random], str]
    question: Callable[[random.Random], str]


ZIPF_TEXT = BenchText("zipf", _synthetic_text, lambda rng: _synthetic_text(rng, QUERY_WORDS))


def corpus_text(settings: Settings, corpus: Path, qa_file: Path) -> BenchText:
    """Passages as long as the corpus's own (in words), with words drawn by the corpus's word frequencies, and
    the questions of `qa_file`. Words are drawn independently, so each spreads over more passages than in the
    real text, where words of a topic come together: the posting lists are if anything longer than real ones."""
    from agent.evaluation import read_questions

    counts: collections.Counter[str] = collections.Counter()
    lengths: list[int] = []
    for text in _passage_texts(settings, [(p.name, p.read_bytes()) for p in corpus_files(corpus)]):
        words = _TOKEN.findall(text)
        counts.update(words)
        lengths.append(len(words))
    vocabulary = list(counts)
    cumulative = list(itertools.accumulate(counts[w] for w in vocabulary))
    questions = [q.question for q in read_questions(qa_file)]
    if not lengths or not questions:
        raise ValueError(f"no passages in {corpus} or no questions in {qa_file}")

    def passage(rng: random.Random) -> str:
        draws = (bisect.bisect_left(cumulative, rng.random() * cumulative[-1]) for _ in range(rng.choice(lengths)))
        return " ".join(vocabulary[i] for i in draws)

    return BenchText(f"corpus:{corpus}", passage, lambda rng: rng.choice(questions))


def _units(rng: random.Random, n: int, dim: int) -> list[list[float]]:
    """n random unit vectors: uniform on the sphere, so every dense search does real work."""
    matrix = np.random.default_rng(rng.randrange(2**32)).standard_normal((n, dim)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix.tolist()  # type: ignore[no-any-return]


def bench_search(
    base: Settings,
    n_chunks: int,
    n_queries: int = 1000,
    seed: int = 7,
    text: BenchText = ZIPF_TEXT,
    *,
    upstream_baseline: bool = True,
) -> dict[str, Any]:
    """p50/p99 of a filtered top-5 search over n_chunks passages in 21 scopes of 3 tenants.

    With `upstream_baseline`, the BM25 and hybrid searches are timed again on the same passages after
    restarting the Milvus Lite server with milvus-lite's own BM25 scorer (`bot.localstack.milvus_server`), reported
    under "upstream_bm25".
    """
    from agent.types import Chunk
    from bot.localstack import start_milvus

    rng = random.Random(seed)
    dim = get_embeddings(base.embedding_model).dim
    audiences = [Audience(f"t{t}", f"s{s}") for t in range(3) for s in range(7)]
    with temporary_local_stack(base, worker=False) as stack:
        settings = stack.settings
        store = KnowledgeStore(
            settings.effective_milvus_uri, collection=settings.collection, dim=dim, embedding_name="bench"
        )
        _log(f"inserting {n_chunks} {text.name} passages ...")
        batch = 2000
        for start in range(0, n_chunks, batch):
            size = min(batch, n_chunks - start)
            audience = audiences[(start // batch) % len(audiences)]
            chunks = [Chunk(start + i, "Bench", "Section", text.passage(rng)) for i in range(size)]
            store.upsert_chunks(
                audience,
                doc_id=f"doc{start}",
                source="bench",
                content_hash="h",
                chunks=chunks,
                vectors=_units(rng, size, dim),
            )
        store.flush()
        report: dict[str, Any] = {"chunks": store.count(), "text": text.name, "queries": n_queries}
        store.client.close()
        modes: tuple[SearchMode, ...] = tuple(sorted(SEARCH_MODES, key=lambda m: m == "hybrid"))  # hybrid last
        report.update(_time_server(stack, settings, dim, audiences, modes, n_queries, text, seed))
        if upstream_baseline:
            _log("restarting Milvus Lite with milvus-lite's own BM25 scorer (the baseline) ...")
            milvus = _process(stack, "milvus")
            milvus.stop()
            stack.processes.remove(milvus)
            port = settings.local_milvus_port
            stack.processes.append(start_milvus(settings.data_dir, port, upstream_bm25=True))
            baseline = _time_server(stack, settings, dim, audiences, ("bm25", "hybrid"), n_queries, text, seed)
            report["upstream_bm25"] = baseline
    return report


def _time_server(
    stack: LocalStack,
    settings: Settings,
    dim: int,
    audiences: list[Audience],
    modes: tuple[SearchMode, ...],
    n_queries: int,
    text: BenchText,
    seed: int,
) -> dict[str, Any]:
    """Wait for the stack's Milvus Lite to settle, then time `modes`; the same questions for the same seed."""
    milvus = _process(stack, "milvus")
    _log("waiting for Milvus Lite's background compaction and index building ...")
    timings: dict[str, Any] = {"settle_s": round(wait_until_idle(milvus.pid), 1), "bm25_scorer": _scorer(milvus)}
    store = KnowledgeStore(
        settings.effective_milvus_uri, collection=settings.collection, dim=dim, embedding_name="bench"
    )
    try:
        for mode in modes:
            rng = random.Random(f"{seed}-{mode}")
            timings.update(_time_searches(store, rng, audiences, dim, n_queries, mode, text))
    finally:
        store.client.close()
    return timings


def _process(stack: LocalStack, name: str) -> ManagedProcess:
    return next(p for p in stack.processes if p.name == name)


def _scorer(milvus: ManagedProcess) -> str:
    """Which BM25 scorer the Milvus Lite server says it runs (`bot.localstack.milvus_server`)."""
    from bot.localstack.milvus_server import SCORER_LOG_PREFIX

    lines = [line for line in milvus.log_tail(None).splitlines() if line.startswith(SCORER_LOG_PREFIX)]
    return lines[-1].removeprefix(SCORER_LOG_PREFIX).split()[0] if lines else "unknown"


def _time_searches(
    store: KnowledgeStore,
    rng: random.Random,
    audiences: list[Audience],
    dim: int,
    n: int,
    mode: SearchMode,
    text: BenchText,
) -> dict[str, float]:
    for audience in audiences:  # warm-up: an audience's first search builds its segments' search structures
        store.search(audience, text.question(rng), _units(rng, 1, dim)[0], k=5, mode=mode)
    latencies = []
    for i in range(n):
        query, vector = text.question(rng), _units(rng, 1, dim)[0]
        started = time.perf_counter()
        store.search(audiences[i % len(audiences)], query, vector, k=5, mode=mode)
        latencies.append(1000 * (time.perf_counter() - started))
    latencies.sort()
    prefix = "" if mode == "hybrid" else f"{mode}_"
    return {
        f"{prefix}p50_ms": round(statistics.median(latencies), 1),
        f"{prefix}p99_ms": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1),
    }
