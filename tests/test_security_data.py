"""Issue 20, finding 5: data that outlives its purpose. Real Redis, Milvus Lite, SQLite memory and Celery workers.

The check for "forget leaves nothing" reads the raw bytes: every Redis value and the SQLite files themselves."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any
from uuid import uuid4

import pytest

from agent.knowledge.ingest import ingest_bytes
from agent.types import Audience
from bot.assistant import Assistant
from bot.bench.reliability.security import files_holding, redis_holds
from bot.conversation import Conversation

ADMIN = "U-admin-security"
SENTENCE = "The Quorvex vault rotates its master keys every 41 days under protocol Zephyr-9."
DOCUMENT = f"# Quorvex Vault\n\n## Keys\n\n{SENTENCE}\n\n## Access\n\nOnly the night shift opens the Quorvex vault.\n"
QUESTION = "How often does the Quorvex vault rotate its master keys?"


@pytest.fixture()
def world(services, knowledge) -> dict[str, Any]:
    tenant = f"sec-{uuid4().hex[:8]}"
    audience = Audience(tenant, "C-vault")
    result = ingest_bytes(
        knowledge.store, knowledge.embeddings, audience, data=DOCUMENT.encode(), source="vault.md",
        max_bytes=10**6, chunk_chars=400,
    )  # fmt: skip
    assert result.status == "ready"
    settings = services.model_copy(update={"admins": ADMIN, "answer_processes": 0})
    return {"tenant": tenant, "audience": audience, "assistant": Assistant(settings), "knowledge": knowledge}


def test_forget_leaves_no_passage_text_in_redis_milvus_or_the_conversation_memory(world):
    assistant: Assistant = world["assistant"]
    audience: Audience = world["audience"]
    user = Conversation("slack", audience, f"thread-{uuid4().hex[:6]}", "U-reader", private=False)
    admin = Conversation("slack", audience, f"thread-{uuid4().hex[:6]}", ADMIN, private=False)
    needle = b"Zephyr-9"

    async def scenario() -> tuple[str, str]:
        first = await assistant.answer(user, QUESTION)
        await assistant.answer(user, "and who opens it?")
        assistant.vote(first.answer_id, "U-reader", True)
        before = first.reply.text
        return before, await assistant.command(admin, "forget vault.md")

    answer, said = asyncio.run(scenario())
    assert "Zephyr-9" in answer, answer  # the answer quoted the passage: there was something to forget
    assert "Forgot 'vault.md'" in said
    data_dir = assistant.settings.data_dir
    assert files_holding(data_dir, "memory.sqlite*", needle) == []
    assert redis_holds(assistant.redis, needle) == []
    store = world["knowledge"].store
    assert store.count(audience) == 0
    hits = world["knowledge"].search(audience, QUESTION, k=5)
    assert all(needle.decode() not in h.text for h in hits)


def test_conversation_state_keeps_ids_not_passages_one_checkpoint_and_few_messages(world):
    assistant: Assistant = world["assistant"]
    thread = f"thread-{uuid4().hex[:6]}"
    conv = Conversation("slack", world["audience"], thread, "U-reader", private=False)

    async def scenario() -> None:
        for n in range(10):
            await assistant.answer(conv, QUESTION if n % 2 == 0 else f"and on day {n}?")

    asyncio.run(scenario())
    key = "\x1f".join((world["tenant"], "C-vault", thread))
    conn = sqlite3.connect(assistant.settings.data_dir / "memory.sqlite")
    try:
        rows = conn.execute("SELECT COUNT(*) FROM checkpoints WHERE thread_id = ?", (key,)).fetchone()[0]
        writes = conn.execute("SELECT COUNT(*) FROM writes WHERE thread_id = ? AND channel = 'hits'", (key,))
        hits_written = writes.fetchone()[0]
    finally:
        conn.close()
    state = assistant.core.graph.get_state({"configurable": {"thread_id": key}}).values
    assert rows == 1
    assert state["hits"] == [] and state["sources"] == []
    assert len(state["messages"]) <= assistant.settings.memory_messages < 20
    if hits_written:  # pending writes of the last step, if any were kept, carry no passages either
        assert all(v == [] for v in state.get("hits", []))


def test_conversations_and_private_votes_expire(world):
    from agent.learning import LearningStore
    from agent.memory import ConversationMemory

    assistant: Assistant = world["assistant"]
    conv = Conversation("teams", world["audience"], f"thread-{uuid4().hex[:6]}", "U-reader", private=True)
    answer = asyncio.run(assistant.answer(conv, QUESTION))
    assert assistant.vote(answer.answer_id, "U-reader", False)
    memory = assistant.core.graph.checkpointer
    assert isinstance(memory, ConversationMemory)
    later = time.time() + assistant.settings.memory_retention_days * 86400 + 60
    assert memory.purge_expired(now=later) >= 1
    key = "\x1f".join((world["tenant"], "C-vault", conv.thread))
    assert memory.get_tuple({"configurable": {"thread_id": key, "checkpoint_ns": ""}}) is None
    learning = LearningStore(assistant.redis, private_vote_retention_s=assistant.settings.vote_retention_days * 86400)
    assert learning.purge_private_votes(world["tenant"], now=later + 200 * 86400) == 1
    assert learning.votes(world["tenant"]) == [] and learning.answer(answer.answer_id) is None


def test_one_user_is_rate_limited_on_questions_and_shares(services, worker):
    settings = services.model_copy(update={"questions_per_minute": 2, "shares_per_hour": 1, "answer_processes": 0})
    assistant = Assistant(settings)
    conv = Conversation("slack", Audience(f"rate-{uuid4().hex[:6]}", "C-x"), "t", "U-eager", private=False)
    other = Conversation("slack", conv.audience, "t", "U-calm", private=False)

    async def scenario() -> tuple[list[str], str, str]:
        texts = [(await assistant.answer(conv, "hello there")).reply.text for _ in range(3)]
        calm = (await assistant.answer(other, "hello there")).reply.text
        shares = []
        for name in ("a.md", "b.md"):
            last = ""
            async for step in assistant.share(conv, b"# A\n\nSome text for the rate limit test.", name):
                last = step.text
            shares.append(last)
        return texts, calm, shares[1]

    texts, calm, second_share = asyncio.run(scenario())
    assert "faster than I answer" not in texts[0] and "faster than I answer" not in texts[1]
    assert "faster than I answer" in texts[2]
    assert "faster than I answer" not in calm
    assert "documents an hour" in second_share


@pytest.mark.slow
def test_a_job_stopped_by_its_time_limit_drops_its_blob(services, monkeypatch):
    from bot.bench.reliability.faults import make_document
    from bot.bench.reliability.poison import submit_raw
    from bot.localstack import start_worker
    from workers import blobs
    from workers.client import wait_for_job

    monkeypatch.setenv("EXPERTBOT_JOB_SOFT_TIME_LIMIT_S", "1")
    monkeypatch.setenv("EXPERTBOT_JOB_TIME_LIMIT_S", "3")
    queue = "time-limit-test"
    worker = start_worker(services, [queue], 1, f"limits-{uuid4().hex[:4]}")
    try:
        name, data = make_document("slow", 0, 400)
        job, key = submit_raw(services, Audience(f"lim-{uuid4().hex[:6]}", "C"), data, name, queue)
        status = wait_for_job(job, 180)
    finally:
        worker.stop()
    assert status.finished
    assert status.state == "error" or status.result.get("status") == "failed", status
    assert blobs.size(services, key) == 0
