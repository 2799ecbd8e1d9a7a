"""The Milvus Lite server that `expertbot up` starts: milvus-lite's own server, tuned for search latency.

`python -m bot.localstack.milvus_server [--upstream-bm25] server --data-dir D --port P` takes the `milvus-lite` CLI's
arguments and changes four things, in this process only:

- The gRPC server accepts the keep-alive pings pymilvus sends (every 10 s, also on idle connections). gRPC's
  defaults refuse pings more often than every 5 minutes without a call and answer the third with
  `GOAWAY too_many_pings`, which every idle client (workers, bots) logged and then had to reconnect.
- SIGTERM means KeyboardInterrupt: `milvus-lite server` closes its data folder cleanly (drains requests,
  releases the LOCK) only on that, and SIGINT may arrive already ignored (shells do that to background jobs).
- Garbage collection every 100,000 allocations instead of 700. The server holds millions of long-lived
  objects (BM25 posting lists) and each search allocates thousands more, so with the default threshold
  collections kept interrupting searches (README, "Where the time goes").
- BM25 scoring over numpy arrays. milvus-lite 3.2 scores a query with a Python loop over every posting of
  every query term, doing float32 numpy-scalar arithmetic per posting; that loop was 87% of a BM25 search.
  `vectorized_bm25_search` computes the same formula over whole posting lists at once, in the same float32
  arithmetic, and ranks ties the same way, so its results are identical; tests/test_milvus_server.py checks
  that against the installed milvus-lite (pinned in pyproject.toml: run them when upgrading it).
  `--upstream-bm25` keeps milvus-lite's own loop (`EXPERTBOT_MILVUS_LITE_BM25=upstream`; the baseline of
  `expertbot bench search`).

A Milvus server or cluster scores BM25 in C++ and needs none of this.
"""

from __future__ import annotations

import gc
import math
import signal
import sys
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

UPSTREAM_BM25_FLAG = "--upstream-bm25"
SCORER_LOG_PREFIX = "expertbot: BM25 scorer: "  # the server's log says which scorer it runs, for the bench

# The SparseInvertedIndex attributes the vectorized scorer reads; it is installed only if they all exist.
_INDEX_ATTRIBUTES = ("k1", "b", "doc_count", "avgdl", "_posting_lists", "_df", "_doc_lengths")


class _Term(NamedTuple):
    rows: npt.NDArray[np.int64]
    tf: npt.NDArray[np.float32]
    tf_k1: npt.NDArray[np.float32]
    idf: np.float32


class _PostingArrays:
    """One segment's posting lists as numpy arrays, converted term by term on first use.

    A segment's index is built once and then only read (milvus-lite rebuilds, never edits, a sealed
    segment's index), so the arrays stay valid as long as the index holds the same posting-list dict.
    """

    def __init__(self, index: Any) -> None:
        self.source = index._posting_lists
        lengths = np.asarray(index._doc_lengths, dtype=np.float32)
        avgdl = index.avgdl if index.avgdl > 0 else 1.0
        # BM25's length term k1 * (1 - b + b * |D| / avgdl), once per segment, in float32 and in the order
        # milvus-lite evaluates it (its |D| is a float32 numpy scalar), so that scores come out bit-identical.
        self.length_norm = index.k1 * ((1.0 - index.b) + (index.b * lengths) / np.float32(avgdl))
        self._index = index
        self._terms: dict[int, _Term | None] = {}

    def term(self, term_hash: int) -> _Term | None:
        """(row ids, tf, tf * (k1 + 1), IDF) of one term, or None when no row has it."""
        if term_hash not in self._terms:
            posting = self.source.get(term_hash)
            if not posting:
                self._terms[term_hash] = None
            else:
                rows = np.fromiter((row for row, _ in posting), dtype=np.int64, count=len(posting))
                tfs = np.fromiter((tf for _, tf in posting), dtype=np.float64, count=len(posting))
                n, df = self._index.doc_count, self._index._df[term_hash]
                idf = math.log((n - df + 0.5) / (df + 0.5) + 1.0)
                # milvus-lite multiplies tf * (k1 + 1) as Python floats, then meets float32
                numerator = (tfs * (self._index.k1 + 1.0)).astype(np.float32)
                self._terms[term_hash] = _Term(rows, tfs.astype(np.float32), numerator, np.float32(idf))
        return self._terms[term_hash]


def _arrays_of(index: Any) -> _PostingArrays:
    cached: _PostingArrays | None = getattr(index, "_expertbot_arrays", None)
    if cached is None or cached.source is not index._posting_lists:  # build() replaces the dict
        cached = _PostingArrays(index)
        index._expertbot_arrays = cached
    return cached


def vectorized_bm25_search(
    index: Any,
    query_sparse_vectors: list[dict[int, float]],
    top_k: int,
    valid_mask: npt.NDArray[np.bool_] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Drop-in for milvus-lite 3.2's `SparseInvertedIndex.search`: same arguments, same result shapes.

    Returns (row ids, distances), each (len(queries), top_k); distance = -score, padded with -1 / +inf.
    """
    from milvus_lite.index.sparse_common import empty_results, validate_mask

    rows_total = len(index._doc_lengths)
    valid_mask = validate_mask(valid_mask, rows_total)
    all_ids, all_dists = empty_results(len(query_sparse_vectors), top_k)
    if index.doc_count == 0 or top_k == 0:
        return all_ids, all_dists

    arrays = _arrays_of(index)
    for qi, query in enumerate(query_sparse_vectors):
        if not query:
            continue
        scores = np.zeros(rows_total, dtype=np.float32)
        # milvus-lite ranks equal scores in the order it first met the rows: by query term, then by row
        first_term = np.full(rows_total, len(query), dtype=np.int64)
        for term_index, (term_hash, weight) in enumerate(query.items()):
            term = arrays.term(term_hash)
            if term is None:
                continue
            tf_norm = term.tf_k1 / (term.tf + arrays.length_norm[term.rows])
            # A row appears once in a posting list, so fancy-indexed updates touch each row exactly once.
            scores[term.rows] += term.idf * tf_norm * np.float32(weight)
            first_term[term.rows] = np.minimum(first_term[term.rows], term_index)
        matched = first_term < len(query)
        if valid_mask is not None:
            matched &= valid_mask
        candidates = np.flatnonzero(matched)
        if candidates.size == 0:
            continue
        found = min(top_k, candidates.size)
        candidate_scores = scores[candidates]
        if found < candidates.size:  # keep the k best, and every row tied with the k-th
            cutoff = np.partition(candidate_scores, candidates.size - found)[candidates.size - found]
            keep = candidate_scores >= cutoff
            candidates, candidate_scores = candidates[keep], candidate_scores[keep]
        order = np.lexsort((candidates, first_term[candidates], -candidate_scores))[:found]
        all_ids[qi, :found] = candidates[order]
        all_dists[qi, :found] = -candidate_scores[order]
    return all_ids, all_dists


def install_vectorized_bm25() -> bool:
    """Make every milvus-lite BM25 index in this process score with `vectorized_bm25_search`.

    Returns False, changing nothing, when this milvus-lite's index lacks an attribute the scorer reads.
    """
    from milvus_lite.index.sparse_inverted import SparseInvertedIndex

    probe = SparseInvertedIndex()
    if not all(hasattr(probe, name) for name in _INDEX_ATTRIBUTES):
        return False

    SparseInvertedIndex.search = vectorized_bm25_search  # a plain function: the index is its first argument
    return True


KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_permit_without_calls", 1),  # pymilvus pings idle connections too
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 1000),  # pymilvus pings every 10 s
    ("grpc.http2.max_ping_strikes", 0),  # never GOAWAY a client for its pings
]


def accept_client_keepalive() -> bool:
    """Build milvus-lite's gRPC server with `KEEPALIVE_OPTIONS`; False, changing nothing, if its layout differs."""
    from milvus_lite.adapter.grpc import server as lite

    if not all(hasattr(lite, name) for name in ("_build_server", "grpc", "MilvusServicer", "milvus_pb2_grpc")):
        return False
    build = lite._build_server
    plain_server = lite.grpc.server

    def with_keepalive(*args: Any, options: list[tuple[str, Any]] | None = None, **kwargs: Any) -> Any:
        return plain_server(*args, options=[*(options or []), *KEEPALIVE_OPTIONS], **kwargs)

    def build_server(db: Any, max_workers: int) -> Any:
        lite.grpc.server = with_keepalive  # only while milvus-lite builds its server
        try:
            return build(db, max_workers)
        finally:
            lite.grpc.server = plain_server

    lite._build_server = build_server
    return True


def main(argv: list[str]) -> int:
    """Run `milvus-lite` with `argv` (its own arguments), after the changes this module describes."""
    gc.set_threshold(100_000, 50, 100)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    upstream = UPSTREAM_BM25_FLAG in argv
    argv = [arg for arg in argv if arg != UPSTREAM_BM25_FLAG]
    if upstream:
        scorer, why = "upstream", "milvus-lite's own loop (--upstream-bm25)"
    elif install_vectorized_bm25():
        scorer, why = "vectorized", "expertbot's vectorized scorer"
    else:
        scorer, why = "upstream", "milvus-lite's own loop: its BM25 index is not the one expertbot expects"
    print(f"{SCORER_LOG_PREFIX}{scorer} ({why})", flush=True)
    if not accept_client_keepalive():
        print("expertbot: milvus-lite's gRPC server is not the one expected; keep-alive pings may be refused")

    from milvus_lite.cmdline import main as milvus_lite_main

    return int(milvus_lite_main(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
