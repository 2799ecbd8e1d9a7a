"""Measuring Slack's contract: acknowledgement latency under load while answers are produced, deduplication
of redelivered events, and refusal of forged requests. Each function starts what it needs and stops it.

`bench_slack` runs the bot as its own process (`expertbot slack`, HTTP mode, as in production) against a
local Web API server in this process, which also plays Slack: it sends signed `app_mention` events from
`concurrency` connections and counts the answers the bot posts back.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiohttp

from agent.settings import Settings, load_settings
from agent.types import TENANT_WIDE, Audience
from bot.assistant import Assistant
from bot.bench.fakes.slack_api import LocalSlack
from bot.bench.fakes.slack_loopback import SECRET, Loopback, loopback, mention

TEAM = "T0BENCH"
DOCUMENT = b"""# Travel Policy

## Per diem

Employees travelling to Vilnius receive a per diem of 84 EUR. Travel to Oslo is paid at 95 EUR a day.

## Booking

Book flights through the Skyways portal at least 14 days ahead. Economy class is the default for flights
under six hours.

## Expenses

Submit receipts within 30 days of returning. Taxi rides over 60 EUR need a manager's approval.
"""
QUESTIONS = [
    "How much is the per diem in Vilnius?",
    "How early must flights be booked?",
    "When must receipts be submitted?",
    "Which class is the default for short flights?",
    "Hello! What can you do?",
    "Do taxi rides need approval?",
]


# The floor: the same load against an aiohttp endpoint that only answers 200, in its own process.
_BARE_SERVER = """
import sys
from aiohttp import web

async def ok(request):
    await request.read()
    return web.Response()

app = web.Application()
app.router.add_post("/slack/events", ok)
app.router.add_get("/healthz", ok)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else float("nan")


def _answered(slack: LocalSlack) -> list[float]:
    """When each answer was finished: a stopped stream, or a posted or edited message with the answer's blocks."""
    finals = ("chat.stopStream", "chat.postMessage", "chat.update")
    return [c.at for c in slack.calls if c.method in finals and c.args.get("blocks")]


# --- the load benchmark ---------------------------------------------------------------------------------------


def bench_slack(base: Settings, concurrency: int = 50, requests: int = 2000, drain_s: float = 120) -> dict[str, Any]:
    """Ack latency p50/p99 of `requests` signed events sent over `concurrency` connections, and answers/s.

    Answers are counted until all are posted or `drain_s` after the last acknowledgement, whichever is first;
    `answers_pending` says how many were still queued then (2 shared cores answer a few questions a second).
    """
    from bot.bench.speed import temporary_stack

    with temporary_stack(base, worker=False) as settings:
        _seed(settings)
        return asyncio.run(_drive(settings, concurrency, requests, drain_s))


def _seed(settings: Settings) -> None:
    """One tenant-wide document, ingested in this process, so that answers quote and cite it."""
    from agent.knowledge.ingest import ingest_bytes
    from agent.knowledge.service import open_knowledge

    knowledge = open_knowledge(settings)
    ingest_bytes(
        knowledge.store,
        knowledge.embeddings,
        Audience(TEAM, TENANT_WIDE),
        data=DOCUMENT,
        source="travel.md",
        max_bytes=settings.max_upload_bytes,
    )


async def _drive(settings: Settings, concurrency: int, requests: int, drain_s: float) -> dict[str, Any]:
    from bot.localstack import ManagedProcess, child_env, cli_command, free_port

    slack = LocalSlack(team=TEAM)
    for n in range(20):
        slack.add_channel(f"C0BENCH{n:02d}")
    await slack.start()
    port = free_port()
    env = child_env(
        settings,
        SLACK_BOT_TOKEN=slack.token,
        SLACK_SIGNING_SECRET=SECRET,
        SLACK_APP_TOKEN="",
        EXPERTBOT_SLACK_MODE="http",
        EXPERTBOT_SLACK_HOST="127.0.0.1",
        EXPERTBOT_SLACK_PORT=str(port),
        EXPERTBOT_SLACK_API_URL=slack.base_url,
    )
    floor = await _bare_floor(slack, settings, concurrency, requests)
    bot = ManagedProcess("slack-bench", cli_command("slack"), settings.data_dir, env=env)
    url = f"http://127.0.0.1:{port}/slack/events"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            await _wait_healthy(session, f"http://127.0.0.1:{port}/livez", bot)
            lb = Loopback(slack, None, url, session)
            _log(f"warming up: one event per connection ({concurrency}), not timed ...")
            started = time.monotonic()
            await _load(lb, concurrency, concurrency, first=requests)
            gc.collect()
            gc.freeze()  # the load generator's own collector pauses would count as the bot's latency
            _log(f"sending {requests} signed app_mention events over {concurrency} connections ...")
            began = time.monotonic()
            latencies, failures = await _load(lb, concurrency, requests)
            ack_s = time.monotonic() - began
            during_acks = len(_answered(slack))
            total = requests + concurrency
            _log(f"acknowledged in {ack_s:.1f} s; {during_acks} answers so far; waiting for the rest ...")
            deadline = time.monotonic() + drain_s
            while len(_answered(slack)) < total and time.monotonic() < deadline and bot.alive():
                await asyncio.sleep(0.5)
    finally:
        bot.stop()
        await slack.stop()
    answered = _answered(slack)
    span = (max(answered) - started) if answered else float("nan")
    return {
        "requests": requests,
        "concurrency": concurrency,
        "warmup_requests": concurrency,
        "ack_p50_ms": round(_percentile(latencies, 50), 1),
        "ack_p99_ms": round(_percentile(latencies, 99), 1),
        "ack_max_ms": round(max(latencies), 1) if latencies else None,
        "ack_mean_ms": round(statistics.fmean(latencies), 1) if latencies else None,
        "acks_per_s": round(len(latencies) / ack_s, 1),
        "non_200": failures,
        "answers_during_acks": during_acks,
        "events_sent": total,
        "answered": len(answered),
        "answers_pending": total - len(answered),
        "answer_window_s": round(span, 1),
        "answers_per_s": round(len(answered) / span, 2) if answered else 0.0,
        "answer_concurrency": settings.answer_concurrency,
        "answer_processes": settings.answer_processes,
        "floor_bare_aiohttp_p50_ms": floor[0],
        "floor_bare_aiohttp_p99_ms": floor[1],
        "cpus": os.cpu_count(),
    }


async def _bare_floor(slack: LocalSlack, settings: Settings, concurrency: int, requests: int) -> tuple[float, float]:
    """p50/p99 of the same load against a server that does nothing: what this machine allows right now."""
    from bot.localstack import ManagedProcess, free_port

    port = free_port()
    proc = ManagedProcess("bare-http", [sys.executable, "-c", _BARE_SERVER, str(port)], settings.data_dir)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            await _wait_healthy(session, f"http://127.0.0.1:{port}/healthz", proc)
            lb = Loopback(slack, None, f"http://127.0.0.1:{port}/slack/events", session)
            _log(f"floor: the same {requests} requests against a bare aiohttp endpoint ...")
            await _load(lb, concurrency, concurrency, first=10**7)
            latencies, _ = await _load(lb, concurrency, requests, first=2 * 10**7)
    finally:
        proc.stop()
    return round(_percentile(latencies, 50), 1), round(_percentile(latencies, 99), 1)


async def _wait_healthy(session: aiohttp.ClientSession, url: str, proc: Any, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"the Slack bot exited while starting:\n{proc.log_tail()}")
        try:
            async with session.get(url) as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.3)
    raise RuntimeError(f"the Slack bot was not ready after {timeout:.0f} s:\n{proc.log_tail()}")


async def _load(lb: Loopback, concurrency: int, requests: int, first: int = 0) -> tuple[list[float], int]:
    counter = itertools.count(first)
    latencies: list[float] = []
    failures = 0

    async def connection() -> None:
        nonlocal failures
        while (i := next(counter)) < first + requests:
            ts = f"{time.time():.6f}"
            event = mention(TEAM, f"C0BENCH{i % 20:02d}", f"<@U0BOT> {QUESTIONS[i % len(QUESTIONS)]}", ts, f"Ev{i:08d}")
            started = time.perf_counter()
            status, _ = await lb.post(event)
            latencies.append((time.perf_counter() - started) * 1000)
            if os.environ.get("SLACK_BENCH_TRACE"):
                _log(f"TRACE {started:.3f} {latencies[-1]:.1f}")
            failures += status != 200

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return latencies, failures


# --- reliability checks (called by the reliability suite) ------------------------------------------------------


def duplicate_deliveries(n: int = 20) -> dict[str, Any]:
    """`n` events, each delivered three times (the original, then X-Slack-Retry-Num 1 and 2) to two bot
    instances that share only Redis, all at once: each must be answered exactly once."""
    from bot.bench.speed import temporary_stack

    with temporary_stack(load_settings(), worker=False) as settings:
        return asyncio.run(_duplicates(settings, n))


async def _duplicates(settings: Settings, n: int) -> dict[str, Any]:
    one = Assistant(settings)
    await one.warm_up()
    two = Assistant(settings, core=one.core)  # a second process would share nothing but Redis and Milvus
    async with loopback(settings, one) as a, loopback(settings, two) as b:
        events = [mention(TEAM, "C0DUP", "<@U0BOT> Hello! What can you do?", f"{i + 1}.{uuid4().int % 10**6:06d}",
                          f"EvDUP{uuid4().hex[:12]}") for i in range(n)]  # fmt: skip
        sends = (
            [a.post(e) for e in events] + [b.post(e, retry=1) for e in events] + [a.post(e, retry=2) for e in events]
        )
        codes = await asyncio.gather(*sends)
        deadline = time.monotonic() + 60 + n
        while len(_answered(a.slack)) + len(_answered(b.slack)) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # room for a wrong second answer to arrive
        posts = [m for lb in (a, b) for m in lb.slack.answers()]
    threads = [m.get("thread_ts") for m in posts]
    answered_once = len(set(threads)) == len(threads) == n
    return {
        "name": "slack_duplicate_deliveries",
        "ok": answered_once and all(code == 200 for code, _ in codes),
        "events": n,
        "delivered": len(codes),
        "acknowledged": sum(code == 200 for code, _ in codes),
        "answered": len(posts),
    }


def forged_requests(n: int = 60) -> dict[str, Any]:
    """`n` requests with a wrong secret, a tampered body, a stale or future timestamp, or no signature at
    all: none may be accepted, while a correctly signed one is (so the check is not vacuous)."""
    with tempfile.TemporaryDirectory(prefix="expertbot-forged-") as tmp:
        settings = load_settings(data_dir=Path(tmp))
        return asyncio.run(_forged(settings, n))


async def _forged(settings: Settings, n: int) -> dict[str, Any]:
    challenge = {"token": "t", "challenge": "forged-check", "type": "url_verification"}
    now = int(time.time())
    async with loopback(settings, Assistant(settings)) as lb:

        async def unsigned() -> tuple[int, str]:
            async with lb.session.post(lb.url, json=challenge) as resp:
                return resp.status, await resp.text()

        kinds = [
            lambda: lb.post(challenge, secret="a-guessed-secret"),
            lambda: lb.post(challenge, tamper=True),
            lambda: lb.post(challenge, timestamp=now - 6 * 60),  # replayed after Slack's 5-minute window
            lambda: lb.post(challenge, timestamp=now + 6 * 60),
            unsigned,
        ]
        statuses = [(await kinds[i % len(kinds)]())[0] for i in range(n)]
        control = (await lb.post(challenge))[0]
    accepted = sum(s != 401 for s in statuses)
    return {
        "name": "slack_forged_requests",
        "ok": accepted == 0 and control == 200,
        "sent": n,
        "accepted": accepted,
        "rejected_401": sum(s == 401 for s in statuses),
        "signed_control_accepted": control == 200,
    }


if __name__ == "__main__":  # pragma: no cover
    print(duplicate_deliveries(), forged_requests())
