"""Simulated users chatting through `Assistant`, the core every chat surface calls: questions on the shared
documents, small talk, domain questions, commands and votes, with think time between messages, for a fixed
duration. Reports errors (any exception or empty reply) and the latency users saw.

The default pace, 5 to 30 s between one user's messages, is a busy chat; a shorter think time measures the
saturation point instead (the answers per second one bot process sustains)."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from typing import Any

from agent.knowledge.ingest import ingest_bytes
from agent.knowledge.service import open_knowledge
from agent.types import Audience
from bot.assistant import Assistant
from bot.bench.reliability.harness import Harness
from bot.bench.reliability.tail import AnswerTiming, GcPauses, QueueTimedExecutor, tail_report
from bot.conversation import Conversation

TOPICS = [
    ("Travel", "Employees travelling to Vilnius receive a per diem of 84 EUR.", "How much is the per diem in Vilnius?"),
    ("Leave", "Every employee has 27 vacation days a year.", "How many vacation days do I get?"),
    (
        "Equipment",
        "The home-office equipment allowance is 600 EUR every three years.",
        "What is the equipment allowance?",
    ),
    ("Security", "Laptops must use full-disk encryption and lock after 5 minutes.", "When must a laptop lock?"),
    ("Expenses", "Receipts must be uploaded within 30 days of the purchase.", "How soon must I upload receipts?"),
]
OTHER = ["hi there!", "thanks, that helps", "What does LoRA mean?", "Kiek dienpinigių gaunu Vilniuje?"]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1) if ordered else 0.0


async def _user(
    assistant: Assistant,
    conv: Conversation,
    rng: random.Random,
    until: float,
    think_s: tuple[float, float],
    out: dict[str, Any],
) -> None:
    last_answer: str | None = None
    await asyncio.sleep(rng.uniform(0, think_s[0]))  # users arrive spread out, not all in the same millisecond
    while time.monotonic() < until:
        roll = rng.random()
        started = time.perf_counter()
        try:
            if roll < 0.75:
                text = rng.choice(TOPICS)[2] if rng.random() < 0.7 else rng.choice(OTHER)
                answer = await assistant.answer(conv, text)
                if not answer.reply.text.strip():
                    raise RuntimeError(f"empty reply to {text!r}")
                ended = time.perf_counter()  # one instant for both: the tail's cutoff is the row's p99
                last_answer = answer.answer_id
                out["latencies"].append(1000 * (ended - started))
                reply = answer.reply
                out["timings"].append(AnswerTiming(started, ended, reply.route, reply.timings_ms))
                out["routes"][answer.reply.route] = out["routes"].get(answer.reply.route, 0) + 1
            elif roll < 0.9 and last_answer:
                if not await asyncio.to_thread(assistant.vote, last_answer, conv.user, rng.random() < 0.8):
                    raise RuntimeError("a vote on a fresh answer was refused")
                out["votes"] += 1
            else:
                said = await assistant.command(conv, rng.choice(["docs", "status", "help"]))
                if not said.strip():
                    raise RuntimeError("empty command reply")
                out["commands"] += 1
        except Exception as exc:
            out["errors"].append(f"{type(exc).__name__}: {str(exc)[:200]}")
        await asyncio.sleep(min(rng.uniform(*think_s), max(0.0, until - time.monotonic())))


async def _run(assistant: Assistant, users: int, duration_s: float, think_s: tuple[float, float]) -> dict[str, Any]:
    out: dict[str, Any] = {"latencies": [], "routes": {}, "votes": 0, "commands": 0, "errors": [], "timings": []}
    executor = QueueTimedExecutor()  # asyncio's default size: min(32, cores + 4)
    asyncio.get_running_loop().set_default_executor(executor)
    await assistant.warm_up()
    until = time.monotonic() + duration_s
    convs = [
        Conversation("bench", Audience("load", f"C{u % 5}"), f"thread-{u}", f"U{u:03d}", private=False)
        for u in range(users)
    ]
    with GcPauses() as pauses:
        await asyncio.gather(*(_user(assistant, c, random.Random(i), until, think_s, out) for i, c in enumerate(convs)))
    out["tail"] = tail_report(out["timings"], pauses, executor)
    return out


def simulated_users(
    h: Harness, users: int = 50, duration_s: float = 300, think_s: tuple[float, float] = (5.0, 30.0)
) -> dict[str, Any]:
    knowledge = open_knowledge(h.settings)
    for scope in range(5):
        for title, sentence, _ in TOPICS:
            data = f"# {title} policy\n\n## Rules\n\n{sentence} Questions go to hr@example.com.".encode()
            ingest_bytes(
                knowledge.store,
                knowledge.embeddings,
                Audience("load", f"C{scope}"),
                data=data,
                source=f"{title.lower()}.md",
                max_bytes=h.settings.max_upload_bytes,
                flush=False,
            )
    knowledge.store.flush()
    assistant = Assistant(h.settings)
    started = time.monotonic()
    out = asyncio.run(_run(assistant, users, duration_s, think_s))
    elapsed = time.monotonic() - started
    lat: list[float] = out["latencies"]
    return {
        "ok": not out["errors"] and len(lat) > 0,
        "users": users,
        "duration_s": round(elapsed, 1),
        "answers": len(lat),
        "votes": out["votes"],
        "commands": out["commands"],
        "errors": len(out["errors"]),
        "p50_ms": _percentile(lat, 0.5),
        "p99_ms": _percentile(lat, 0.99),
        "mean_ms": round(statistics.fmean(lat), 1) if lat else 0.0,
        "answers_per_s": round(len(lat) / elapsed, 2),
        "routes": out["routes"],
        "tail": out["tail"],
        **({"first_errors": out["errors"][:3]} if out["errors"] else {}),
    }
