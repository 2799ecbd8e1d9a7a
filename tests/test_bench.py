"""The ingestion and search benchmarks, run small: each starts its own services, as `expertbot bench` does."""

from __future__ import annotations

import collections
import os
import random
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent.knowledge import embeddings
from bot.bench.speed import ZIPF_TEXT, _synthetic_text, bench_ingest, bench_search, corpus_text
from workers.celery_app import _share_cores


def test_synthetic_passages_follow_zipfs_law():
    rng = random.Random(3)
    words = " ".join(_synthetic_text(rng) for _ in range(400)).split()
    counts = collections.Counter(words).most_common(3)
    shares = [n / len(words) for _, n in counts]
    assert 0.07 < shares[0] < 0.12  # 1/H(20000) ≈ 0.094: common words, but not one word in two
    assert shares[0] / shares[1] == pytest.approx(2, rel=0.3)


def test_each_worker_process_gets_its_share_of_the_cores(settings):
    cores = os.cpu_count() or 1
    try:
        _share_cores(SimpleNamespace(concurrency=cores))
        assert embeddings.threads() == 1
        _share_cores(SimpleNamespace(concurrency=1))
        assert embeddings.threads() == cores
        _share_cores(SimpleNamespace(concurrency="auto"))  # resolved by Celery later: one process per core
        assert embeddings.threads() == 1
    finally:
        embeddings.use_threads(0)
    assert embeddings.threads() == cores


@pytest.mark.slow
def test_ingest_benchmark_compares_with_every_raw_layout(services, tmp_path: Path):
    for n in range(3):
        body = "\n\n".join(f"Paragraph {p} of guide {n}: the build takes {p + n} minutes." for p in range(12))
        (tmp_path / f"guide{n}.md").write_text(f"# Guide {n}\n\n## Steps\n\n{body}\n")
    processes = (os.cpu_count() or 1) + 1  # not one per core, so the worker's own layout is timed too
    report = bench_ingest(services.model_copy(update={"worker_concurrency": processes}), tmp_path)
    assert report["files"] == 3 and report["chunks"] >= 3 and report["worker_processes"] == processes
    names = ("one_process", "per_core", "worker_layout")
    layouts = [sum(report[f"embed_{name}_chunks_per_s"]) / 2 for name in names]
    assert report["embed_chunks_per_s"] == pytest.approx(max(layouts), abs=0.2)  # the fastest layout
    assert report["ratio"] == pytest.approx(report["e2e_chunks_per_s"] / report["embed_chunks_per_s"], abs=0.01)


def _tiny_corpus(folder: Path) -> tuple[Path, Path]:
    corpus = folder / "corpus"
    corpus.mkdir()
    (corpus / "guide.md").write_text("# Gateway\n\n## Ports\n\nThe gateway listens on port 7341.\n")
    (corpus / "notes.txt").write_text("Rotate the gateway keys every ninety days and log it.\n")
    qa = folder / "qa.jsonl"
    qa.write_text('{"question": "Which port?", "language": "en", "gold_docs": ["guide.md"]}\n')
    return corpus, qa


def test_corpus_text_keeps_the_corpus_words_and_passage_lengths_and_asks_its_questions(settings, tmp_path: Path):
    text = corpus_text(settings, *_tiny_corpus(tmp_path))
    rng = random.Random(1)
    passages = [text.passage(rng).split() for _ in range(200)]
    vocabulary = {*re.findall(r"\w+", "Gateway Ports The gateway listens on port 7341")}
    vocabulary |= {*re.findall(r"\w+", "notes Rotate the gateway keys every ninety days and log it")}
    assert {len(p) for p in passages} == {8, 11}  # each passage with its title (and heading), in words
    assert set().union(*passages) <= vocabulary
    assert {text.question(rng) for _ in range(5)} == {"Which port?"} and text.name == f"corpus:{tmp_path / 'corpus'}"


@pytest.mark.slow
def test_search_benchmark_waits_for_milvus_then_times_every_mode(services, tmp_path: Path):
    for text, baseline in ((ZIPF_TEXT, True), (corpus_text(services, *_tiny_corpus(tmp_path)), False)):
        report = bench_search(services, n_chunks=2000, n_queries=20, text=text, upstream_baseline=baseline)
        assert report["chunks"] == 2000 and report["settle_s"] >= 3.0 and report["text"] == text.name
        assert report["bm25_scorer"] == "vectorized"
        for prefix in ("", "dense_", "bm25_"):
            assert 0 < report[f"{prefix}p50_ms"] <= report[f"{prefix}p99_ms"]
        if baseline:  # the same searches on the same passages, after a restart with milvus-lite's scorer
            upstream = report["upstream_bm25"]
            assert upstream["bm25_scorer"] == "upstream" and upstream["settle_s"] >= 3.0
            for prefix in ("", "bm25_"):
                assert 0 < upstream[f"{prefix}p50_ms"] <= upstream[f"{prefix}p99_ms"]
        else:
            assert "upstream_bm25" not in report
