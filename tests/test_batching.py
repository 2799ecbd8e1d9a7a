"""In-process generation without a queue of one: concurrent requests to Phi3Chat (the tiny Phi-3 on CPU) share
batches, give the same text as alone, can each be abandoned, and never mix tenants' adapters."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from agent.models.batching import BatchScheduler, GenRequest
from agent.models.phi3 import load_phi3
from agent.models.phi3_chat import Phi3Chat
from agent.models.registry import tenant_registry
from agent.models.tiny import build_tiny_adapter, build_tiny_phi3

MANIFEST = {"base_model": "tiny", "data_hash": "abc", "examples": {}, "metrics": {}}
QUESTIONS = [
    "How do I reset my VPN password?",
    "Wann ist das Büro offen?",
    "Expense reports?",
    "Où est la salle de réunion ? Ça coûte 12,50 €.",
    "Deployments run every Tuesday at 10:00 UTC. Why?",
    "badge",
    "Как сбросить пароль? Спасибо за помощь.",
    "What is the parking policy for visitors on Fridays?",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-batch")
    base = build_tiny_phi3(root / "base")
    return {"base": base, "a1": build_tiny_adapter(base, root / "a1", seed=1)}


def _messages(question: str) -> list[Any]:
    return [SystemMessage("Answer briefly."), HumanMessage(question)]


def _chat(tiny: dict[str, Path], root: Path | None = None) -> Phi3Chat:
    return Phi3Chat(model_id=str(tiny["base"]), registry_root=root, max_new_tokens=24)


def _at_once(chat: Phi3Chat, jobs: list[tuple[str, str]]) -> list[str]:
    """Ask every (tenant, question) at the same moment, from as many threads."""
    start = threading.Barrier(len(jobs))

    def ask(job: tuple[str, str]) -> str:
        start.wait()
        return str(chat.invoke(_messages(job[1]), tenant=job[0]).content)

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(ask, jobs))


def test_concurrent_questions_share_batches_and_answer_as_alone(tiny: dict[str, Path]) -> None:
    chat = _chat(tiny)
    alone = [str(chat.invoke(_messages(q)).content) for q in QUESTIONS]
    assert chat._scheduler is not None and chat._scheduler.batches == [1] * 8
    together = _at_once(chat, [("local", q) for q in QUESTIONS])
    assert together == alone  # left padding and masks: a row's text does not depend on its neighbours
    assert len(chat._scheduler.batches) <= 8 + 2 and max(chat._scheduler.batches[8:]) >= 4


def test_one_abandoned_stream_does_not_stop_the_others(tiny: dict[str, Path]) -> None:
    chat = _chat(tiny)
    expected = str(chat.invoke(_messages(QUESTIONS[0])).content)
    streams = [chat.stream(_messages(QUESTIONS[0])) for _ in range(3)]
    firsts = [next(s) for s in streams]  # all three are running, in one batch or more
    streams[1].close()  # type: ignore[attr-defined]
    rest = ["".join(str(c.content) for c in s) for i, s in enumerate(streams) if i != 1]
    assert [str(firsts[i].content) + rest[n] for n, i in enumerate((0, 2))] == [expected, expected]


def test_tenants_are_batched_apart_and_adapters_swap_between_batches(tiny: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "adapters"
    reg = tenant_registry(root, "tuned")
    reg.promote(reg.add(tiny["a1"], MANIFEST).name)
    chat = _chat(tiny, root)
    plain = str(chat.invoke(_messages(QUESTIONS[0]), tenant="plain").content)
    tuned = str(chat.invoke(_messages(QUESTIONS[0]), tenant="tuned").content)
    assert plain != tuned
    jobs = [("plain", QUESTIONS[0]), ("tuned", QUESTIONS[0])] * 3
    assert _at_once(chat, jobs) == [plain, tuned] * 3  # never another tenant's adapter
    reg.rollback()  # hot swap: the next batch for "tuned" runs on the base model
    assert _at_once(chat, [("tuned", QUESTIONS[0])] * 2) == [plain, plain]


def test_scheduler_limits_rows_and_reports_failures(tiny: dict[str, Path]) -> None:
    model, tokenizer = load_phi3(str(tiny["base"]), adapter=None, want_4bit=False)
    scheduler = BatchScheduler(lambda: model, pad_token_id=int(tokenizer.pad_token_id), max_batch=2, gather_s=0.05)
    ids = tokenizer("The VPN client", add_special_tokens=False)["input_ids"]
    streams = [scheduler.submit(GenRequest(ids, max_new_tokens=n, min_new_tokens=0)) for n in (3, 7, 5)]
    assert [len(list(s)) for s in streams] == [3, 7, 5]  # each row its own limit, in batches of at most 2
    assert scheduler.batches == [2, 1]
    failing = BatchScheduler(lambda: model, pad_token_id=0, resolve=lambda route: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        list(failing.submit(GenRequest(ids)))
