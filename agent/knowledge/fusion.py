"""Rank fusion of the dense and BM25 result lists: pure functions, nothing to do with Milvus itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, get_args

from agent.types import Hit

SearchMode = Literal["hybrid", "dense", "bm25"]
SEARCH_MODES: tuple[SearchMode, ...] = get_args(SearchMode)
"""Every search mode, hybrid first: the one list the CLI, the evaluation and the benchmarks offer."""


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
    candidates: int = 40
    """How deep each list goes, at least (4 k when larger). A passage second by meaning but 30th by words needs its
    BM25 rank to be counted: with 20, the chat core's k = 6 searched 24 deep while `eval retrieval` (k = 10)
    measured 40 (README, "Retrieval")."""
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
