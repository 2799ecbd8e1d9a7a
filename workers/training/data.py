"""Training data per tenant, each example with its provenance, built only from tenant-wide material.

A LoRA adapter can repeat what it was trained on and every conversation of the tenant uses it, so anything
taught, voted on or shared in a private channel or a direct message is left out here, at the source.

Curated items are split into a training part and a held-out part (by a stable hash, so the split does not move
between nights). The evaluation gate asks about held-out items, and about every trained term with a question
phrasing the trainer never uses: the candidate must know the term, not a string it has seen.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from agent.learning import AnswerRecord, CuratedItem, LearningStore, tenant_wide_only
from workers.training.examples import TRAIN_TERM_PROMPTS, Example, ExampleKind, read_examples

__all__ = [
    "TRAIN_TERM_PROMPTS",
    "Dataset",
    "Example",
    "ExampleKind",
    "Probe",
    "build_dataset",
    "make_dataset",
    "read_examples",
]

EVAL_TERM_PROMPT = "Explain the term {term}."
HOLDOUT_EVERY = 5
"""One curated item in HOLDOUT_EVERY is held out (when there are at least that many)."""


@dataclass(frozen=True)
class Probe:
    """A gate question: the right answer and distractors (other answers of the same kind)."""

    prompt: str
    answer: str
    distractors: tuple[str, ...]
    heldout: bool


@dataclass
class Dataset:
    tenant: str
    train: list[Example]
    probes: list[Probe]
    heldout_text: list[str]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def data_hash(self) -> str:
        """Identifies the training inputs: a checkpoint is resumed only for the same data."""
        digest = hashlib.sha256()
        for ex in self.train:
            digest.update(json.dumps(asdict(ex), sort_keys=True, ensure_ascii=False).encode())
        return digest.hexdigest()[:16]

    def with_train(self, train: list[Example]) -> Dataset:
        return replace(self, train=train)

    def write(self, folder: Path) -> Path:
        """train.jsonl (what the trainer reads) and eval.json beside it, for inspection; returns train.jsonl."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "train.jsonl"
        path.write_text("".join(json.dumps(asdict(e), ensure_ascii=False) + "\n" for e in self.train), "utf-8")
        probes = [asdict(p) for p in self.probes]
        (folder / "eval.json").write_text(
            json.dumps({"probes": probes, "heldout_text": self.heldout_text}, ensure_ascii=False, indent=1), "utf-8"
        )
        return path


def _held_out(key: str, n_items: int) -> bool:
    if n_items < HOLDOUT_EVERY:
        return False
    return int(hashlib.sha1(key.casefold().encode()).hexdigest(), 16) % HOLDOUT_EVERY == 0


def _distractors(answer: str, pool: Sequence[str], n: int = 3) -> tuple[str, ...]:
    """n other answers, chosen by a stable hash so that every night (and both models) face the same choice."""
    others = sorted({a for a in pool if a != answer}, key=lambda a: hashlib.sha1((answer + a).encode()).hexdigest())
    return tuple(others[:n])


def build_dataset(
    store: LearningStore, tenant: str, documents: Iterable[tuple[str, str]], *, max_doc_passages: int = 2000
) -> Dataset:
    """Examples from the tenant's curated items, helpful answers and tenant-wide passages ((doc id, text) pairs).

    `documents` must already be tenant-wide only; curated items and answers are filtered here by their scope.
    """
    curated = tenant_wide_only(store.curated(tenant))
    helpful = tenant_wide_only(store.helpful_answers(tenant))
    return make_dataset(tenant, curated, helpful, documents, max_doc_passages=max_doc_passages)


def make_dataset(
    tenant: str,
    curated: Sequence[CuratedItem],
    helpful: Sequence[AnswerRecord],
    documents: Iterable[tuple[str, str]],
    *,
    max_doc_passages: int = 2000,
) -> Dataset:
    """The examples and gate probes of already filtered (tenant-wide) inputs."""
    train: list[Example] = []
    probes: list[Probe] = []
    pools: dict[str, list[str]] = {}
    for item in curated:
        pools.setdefault(item.kind, []).append(item.text)
    for item in curated:
        heldout = _held_out(f"{item.kind}:{item.prompt}", len(curated))
        source = f"{item.source} ({item.kind})"
        if item.kind == "term":
            if not heldout:
                train += [Example("term", source, p.format(term=item.prompt), item.text) for p in TRAIN_TERM_PROMPTS]
                train.append(Example("document", source, text=f"{item.prompt}: {item.text}"))
            prompt = EVAL_TERM_PROMPT.format(term=item.prompt)
        else:
            if not heldout:
                train.append(Example(item.kind, source, item.prompt, item.text))
            prompt = item.prompt
        distractors = _distractors(item.text, pools[item.kind])
        if distractors:
            probes.append(Probe(prompt, item.text, distractors, heldout))
    for answer in helpful:
        train.append(Example("helpful", f"helpful answer {answer.answer_id}", answer.question, answer.answer))
    heldout_text: list[str] = []
    n_docs = 0
    for i, (doc_id, text) in enumerate(documents):
        if i >= max_doc_passages:
            break
        if _held_out(f"{doc_id}:{i}", HOLDOUT_EVERY):
            heldout_text.append(text)
        else:
            train.append(Example("document", f"document {doc_id}", text=text))
            n_docs += 1
    counts = {
        "curated": len(curated),
        "curated_heldout": sum(p.heldout for p in probes),
        "helpful": len(helpful),
        "document_passages": n_docs,
        "heldout_passages": len(heldout_text),
        "train_examples": len(train),
        "probes": len(probes),
    }
    return Dataset(tenant, train, probes, heldout_text, counts)
