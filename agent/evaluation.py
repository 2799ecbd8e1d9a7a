"""Retrieval evaluation: fill a fresh, temporary knowledge base from a corpus folder and score questions.

A question is a hit at k when one of the first k passages comes from one of its gold documents (paths relative
to the corpus folder). Runs in-process on an embedded Milvus Lite file, so it needs no running stack.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.knowledge.embeddings import get_embeddings
from agent.knowledge.fusion import SearchMode
from agent.knowledge.ingest import ingest_bytes
from agent.knowledge.service import Knowledge
from agent.knowledge.store import KnowledgeStore
from agent.settings import Settings
from agent.types import Audience, ChatRequest, Route, best_similarity

EVAL_AUDIENCE = Audience("eval", "corpus")


@dataclass(frozen=True)
class Question:
    question: str
    language: str
    gold_docs: frozenset[str]
    answer_keys: tuple[str, ...] = ()
    kind: str = ""


def read_questions(path: Path) -> list[Question]:
    questions = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        try:
            questions.append(
                Question(
                    row["question"],
                    row.get("language", ""),
                    frozenset(row["gold_docs"]),
                    tuple(row.get("answer_keys", ())),
                    row.get("kind", ""),
                )
            )
        except KeyError as exc:
            raise ValueError(f"{path}:{n}: missing field {exc}") from None
    return questions


def corpus_files(corpus: Path) -> list[Path]:
    return sorted(p for p in corpus.rglob("*") if p.is_file() and not p.name.startswith((".", "MANIFEST")))


@contextmanager
def temporary_knowledge(settings: Settings, corpus: Path) -> Iterator[tuple[Knowledge, int]]:
    """A knowledge base filled from the corpus in a temporary Milvus Lite file, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="expertbot-eval-") as tmp:
        knowledge, chunks = build_knowledge(settings, corpus, Path(tmp) / "eval.db", _stderr)
        try:
            yield knowledge, chunks
        finally:
            knowledge.store.client.close()


def build_knowledge(
    settings: Settings, corpus: Path, db_path: Path, log: Callable[[str], None] = print
) -> tuple[Knowledge, int]:
    """Ingest every file of the corpus (document id = path relative to the corpus) into a Milvus Lite file."""
    model = get_embeddings(settings.embedding_model)
    store = KnowledgeStore(str(db_path), collection="eval", dim=model.dim, embedding_name=model.name)
    files = corpus_files(corpus)
    chunks = 0
    for i, path in enumerate(files, 1):
        rel = path.relative_to(corpus).as_posix()
        result = ingest_bytes(
            store,
            model,
            EVAL_AUDIENCE,
            data=path.read_bytes(),
            source=rel,
            doc_id=rel,
            max_bytes=settings.max_upload_bytes,
            chunk_chars=settings.chunk_chars,
            batch_size=settings.embed_batch,
        )
        chunks += result.chunks
        if result.status == "failed":
            log(f"skipped {rel}: {result.reason}")
        if i % 25 == 0 or i == len(files):
            log(f"ingested {i}/{len(files)} files, {chunks} chunks")
    store.flush()
    return Knowledge(store, settings), chunks


def score(
    knowledge: Knowledge, questions: list[Question], *, mode: SearchMode = "hybrid", k: int = 5
) -> dict[str, Any]:
    """recall@1, recall@5, MRR@10, and recall@5 split by English / other languages."""
    ranks: list[int | None] = []
    started = time.perf_counter()
    for q in questions:
        hits = knowledge.search(EVAL_AUDIENCE, q.question, k=max(10, k), mode=mode)
        ranks.append(next((i for i, h in enumerate(hits, 1) if h.doc_id in q.gold_docs), None))
    elapsed = time.perf_counter() - started

    def recall(k: int, subset: list[int] | None = None) -> float:
        idx = range(len(questions)) if subset is None else subset
        picked = [ranks[i] for i in idx]
        return round(sum(1 for r in picked if r is not None and r <= k) / max(len(picked), 1), 3)

    english = [i for i, q in enumerate(questions) if q.language == "en"]
    other = [i for i, q in enumerate(questions) if q.language != "en"]
    return {
        "questions": len(questions),
        "mode": mode,
        "recall_at_1": recall(1),
        "recall_at_5": recall(5),
        f"recall_at_{k}": recall(k),
        "mrr_at_10": round(sum(1 / r for r in ranks if r is not None) / max(len(ranks), 1), 3),
        "recall_at_5_en": recall(5, english),
        "recall_at_5_other": recall(5, other),
        "search_ms_mean": round(1000 * elapsed / max(len(questions), 1), 1),
        "misses_at_5": [q.question for q, r in zip(questions, ranks, strict=True) if r is None or r > 5],
    }


def evaluate_retrieval(
    settings: Settings,
    corpus: Path,
    qa_file: Path,
    *,
    modes: tuple[SearchMode, ...] = ("hybrid",),
    k: int = 5,
) -> dict[str, Any]:
    questions = read_questions(qa_file)

    started = time.perf_counter()
    with temporary_knowledge(settings, corpus) as (knowledge, chunks):
        ingest_s = time.perf_counter() - started
        results = {mode: score(knowledge, questions, mode=mode, k=k) for mode in modes}
    report = dict(results[modes[0]])
    report.update(
        embedding_model=settings.embedding_model,
        chunks=chunks,
        ingest_s=round(ingest_s, 1),
        by_mode={m: {k: v for k, v in r.items() if k != "misses_at_5"} for m, r in results.items()},
    )
    return report


def evaluate_answers(
    settings: Settings,
    corpus: Path,
    qa_file: Path,
    *,
    forced: Route | None = None,
    answers_out: Path | None = None,
) -> dict[str, Any]:
    """Answer every question through the chat core and score the replies as a person would (`answer_quality`)."""
    questions = read_questions(qa_file)
    if not all(q.answer_keys for q in questions):
        raise ValueError(f"{qa_file}: every question needs answer_keys to score answers")
    with temporary_knowledge(settings, corpus) as (knowledge, chunks):
        report = answer_report(settings, knowledge, questions, forced=forced, answers_out=answers_out)
    report["chunks"] = chunks
    return report


def answer_report(
    settings: Settings,
    knowledge: Knowledge,
    questions: list[Question],
    *,
    forced: Route | None = None,
    answers_out: Path | None = None,
) -> dict[str, Any]:
    """The scoring loop of `evaluate_answers` on a knowledge base already filled."""
    from agent.answer_quality import judge, summarize
    from agent.chat import ChatCore
    from agent.models.factory import make_chat_model

    core = ChatCore(knowledge, llm=make_chat_model(settings))
    verdicts = []
    gold_hits = 0
    routes: dict[str, int] = {}
    misses: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for n, q in enumerate(questions):
        reply = core.answer(ChatRequest(q.question, EVAL_AUDIENCE, thread=f"eval-{n}", forced_route=forced))
        routes[reply.route] = routes.get(reply.route, 0) + 1
        verdict = judge(reply.text, q.language, q.answer_keys, q.kind)
        cites_gold = any(s.doc_id in q.gold_docs for s in reply.sources)
        verdicts.append(verdict)
        gold_hits += cites_gold
        if not (verdict.accepted and cites_gold):
            misses.append(
                {"question": q.question, "route": reply.route, "key": verdict.key_early, "gold": cites_gold,
                 "language": verdict.language, "chars": verdict.chars}
            )  # fmt: skip
        rows.append(
            {"question": q.question, "language": q.language, "answer_keys": list(q.answer_keys),
             "route": reply.route, "text": reply.text, "sources": [s.doc_id for s in reply.sources]}
        )  # fmt: skip
    elapsed = time.perf_counter() - started
    if answers_out is not None:
        answers_out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    total = max(len(questions), 1)
    summary = summarize(verdicts)
    return {
        "questions": len(questions),
        "generator": settings.generator,
        "accepted_rate": summary.pop("accepted_rate"),
        "answer_key_rate": summary["key_anywhere_rate"],
        "gold_citation_rate": round(gold_hits / total, 3),
        **summary,
        "routes": routes,
        "ms_per_answer": round(1000 * elapsed / total, 1),
        "misses": misses,
    }


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def routing_report(settings: Settings, data: Path, corpus: Path | None = None) -> dict[str, Any]:
    """Evaluate the router on labelled messages; with a corpus, each message also carries its search score."""
    from agent.eval_routing import evaluate_routing, read_routing_data
    from agent.routing import SemanticRouter

    rows = read_routing_data(data)
    router = SemanticRouter(get_embeddings(settings.embedding_model))
    if corpus is None:
        return evaluate_routing(router, rows)
    with temporary_knowledge(settings, corpus) as (knowledge, _):
        for row in rows:
            row["retrieval_score"] = best_similarity(knowledge.search(EVAL_AUDIENCE, row["text"], k=5))
    return evaluate_routing(router, rows)
