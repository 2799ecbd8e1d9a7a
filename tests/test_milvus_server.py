"""The Milvus Lite server `expertbot up` runs: its vectorized BM25 scorer must give milvus-lite's own results."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

import numpy as np
import pytest
from milvus_lite.index.sparse_inverted import SparseInvertedIndex

from bot.localstack import milvus_server
from bot.localstack.milvus_server import install_vectorized_bm25, vectorized_bm25_search


def _zipf_index(rng: random.Random, rows: int, vocabulary: int) -> SparseInvertedIndex:
    """Rows of Zipf-distributed term counts: long posting lists for a few terms, and many tied scores."""
    docs: list[dict[int, float]] = []
    for _ in range(rows):
        doc: dict[int, float] = {}
        for _ in range(rng.randint(0, 40)):  # some rows are empty
            term = min(vocabulary - 1, int(rng.paretovariate(1.0)))
            doc[term] = doc.get(term, 0.0) + 1.0
        docs.append(doc)
    index = SparseInvertedIndex()
    index.build(docs)
    return index


def _queries(rng: random.Random, n: int, vocabulary: int) -> list[dict[int, float]]:
    def term() -> int:
        return min(vocabulary + 5, int(rng.paretovariate(0.8)))

    queries = [{term(): rng.choice([1.0, 1.0, 2.0]) for _ in range(rng.randint(1, 6))} for _ in range(n)]
    return [*queries, {}, {vocabulary + 1000: 1.0}]  # no terms; a term no row has


@pytest.mark.parametrize("top_k", [0, 1, 5, 20, 5000])
@pytest.mark.parametrize("masked", [False, True])
def test_vectorized_scorer_returns_exactly_what_milvus_lites_loop_returns(top_k: int, masked: bool):
    rng = random.Random(top_k * 2 + masked)
    index = _zipf_index(rng, rows=3000, vocabulary=200)
    queries = _queries(rng, 60, vocabulary=200)
    mask = np.array([rng.random() < 0.7 for _ in range(3000)]) if masked else None

    expected_ids, expected_distances = index.search(queries, top_k, valid_mask=mask)
    ids, distances = vectorized_bm25_search(index, queries, top_k, valid_mask=mask)

    assert ids.dtype == expected_ids.dtype and distances.dtype == expected_distances.dtype
    np.testing.assert_array_equal(ids, expected_ids)  # ties ranked alike, and the padding (-1, +inf) too
    np.testing.assert_array_equal(distances, expected_distances)  # bit for bit: the same float32 arithmetic
    if top_k == 20:  # ties at the cut are frequent here, so the order among equal scores was really tested
        assert any(len(set(row[row > -np.inf].tolist())) < top_k for row in expected_distances)


def test_equal_scores_rank_in_the_order_milvus_lite_meets_them_by_query_term_then_row():
    index = SparseInvertedIndex()
    index.build([{1: 1.0, 9: 1.0}, {2: 1.0, 9: 1.0}, {1: 1.0, 9: 1.0}, {2: 1.0, 9: 1.0}])  # terms 1 and 2 tie
    query = [{2: 1.0, 1: 1.0}]
    ids, distances = vectorized_bm25_search(index, query, 4)
    assert len(set(distances[0].tolist())) == 1 and ids.tolist() == [[1, 3, 0, 2]]  # term 2's rows first
    np.testing.assert_array_equal(ids, index.search(query, 4)[0])


def test_vectorized_scorer_follows_a_rebuilt_index_and_an_empty_one():
    rng = random.Random(3)
    index = _zipf_index(rng, rows=500, vocabulary=50)
    queries = _queries(rng, 20, vocabulary=50)
    vectorized_bm25_search(index, queries, 10)  # caches this build's posting arrays
    index.build([{1: 3.0}, {}, {1: 1.0, 2: 1.0}])
    np.testing.assert_array_equal(vectorized_bm25_search(index, queries, 10)[0], index.search(queries, 10)[0])

    empty = SparseInvertedIndex()
    empty.build([])
    ids, distances = vectorized_bm25_search(empty, [{1: 1.0}], 3)
    assert ids.tolist() == [[-1, -1, -1]] and np.isinf(distances).all()
    with pytest.raises(ValueError, match="valid_mask"):  # milvus-lite's own argument checks still apply
        vectorized_bm25_search(index, queries, 10, valid_mask=np.ones(7, dtype=bool))


def test_install_makes_every_bm25_index_use_the_vectorized_scorer(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(SparseInvertedIndex, "search", SparseInvertedIndex.search)  # restored after the test
    index = _zipf_index(random.Random(4), rows=200, vocabulary=30)
    assert install_vectorized_bm25()
    index.search([{1: 1.0}], 5)
    assert hasattr(index, "_expertbot_arrays")  # the call went through the vectorized scorer


def test_install_leaves_an_unexpected_milvus_lite_alone(monkeypatch: pytest.MonkeyPatch):
    original = SparseInvertedIndex.search
    monkeypatch.setattr(SparseInvertedIndex, "search", original)
    monkeypatch.setattr(milvus_server, "_INDEX_ATTRIBUTES", (*milvus_server._INDEX_ATTRIBUTES, "_renamed_field"))
    assert not install_vectorized_bm25()
    assert SparseInvertedIndex.search is original


_PINGING_CLIENT = """
import sys, time
from pymilvus import MilvusClient
# pymilvus pings every 10 s and at most twice per idle spell; this pings every second, without limit, so that
# gRPC's default server policy (no pings without a call, none more often than every 5 minutes) shows in seconds.
options = {"grpc.keepalive_time_ms": 1000, "grpc.http2.max_pings_without_data": 0}
client = MilvusClient(sys.argv[1], grpc_options=options)
client.list_collections()
time.sleep(5)
client.list_collections()
print("ok")
"""


@pytest.mark.slow
@pytest.mark.parametrize("server", ["expertbot", "milvus-lite"])
def test_the_server_accepts_idle_keepalive_pings(tmp_path: Path, server: str) -> None:
    """The `GOAWAY too_many_pings` lines in the logs: milvus-lite's own server refuses them, ours must not."""
    import subprocess
    import sys

    from bot.localstack import ManagedProcess, free_port
    from bot.localstack.processes import await_ready
    from bot.localstack.services import start_milvus

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    port = free_port()
    if server == "expertbot":
        proc = start_milvus(tmp_path, port)
    else:
        args = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(tmp_path / "lite")]
        proc = ManagedProcess("milvus-lite", [*args, "--port", str(port), "--host", "127.0.0.1"], tmp_path)
        await_ready(listening, 60, "milvus-lite", proc)
    try:
        client = subprocess.run(
            [sys.executable, "-c", _PINGING_CLIENT, f"http://127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "GRPC_VERBOSITY": "ERROR"},
        )
    finally:
        proc.stop()
    assert client.stdout.strip() == "ok", client.stderr
    assert ("too_many_pings" in client.stderr) is (server == "milvus-lite"), client.stderr
