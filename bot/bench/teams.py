"""Measurements of the Teams endpoint on loopback, each starting what it needs in a temporary folder.

- `bench_teams`: latency of the acknowledgement (the endpoint's HTTP answer to the connector, what Teams waits
  for) with the endpoint in its own process, as `expertbot up` runs it, and a local connector receiving the replies.
- `duplicate_deliveries` and `unauthenticated_requests`: figures for the reliability suite.
"""

from __future__ import annotations

import asyncio
import copy
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from aiohttp import web

from agent.settings import Settings, load_settings
from bot.bench.fakes.bot_connector import LoopbackConnector

TARGET_P99_MS = 200.0
APP_ID = "6d0c2f3a-9b1e-4c5d-8e7f-0a1b2c3d4e5f"
"""A well-formed app id for the authentication figures (no such registration exists)."""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def personal_message(service_url: str, text: str, *, conversation: str = "", activity_id: str = "") -> dict[str, Any]:
    """A message in a personal chat, shaped like the ones Teams sends."""
    return {
        "type": "message",
        "id": activity_id or uuid.uuid4().hex,
        "timestamp": "2026-03-02T09:15:07.437Z",
        "serviceUrl": service_url,
        "channelId": "msteams",
        "from": {"id": "29:bench-user", "name": "Bench User", "aadObjectId": "00000000-bench-4000-8000-000000000001"},
        "conversation": {
            "conversationType": "personal",
            "tenantId": "bench-tenant",
            "id": conversation or f"a:{uuid.uuid4().hex}",
        },
        "recipient": {"id": f"28:{APP_ID}", "name": "Expert"},
        "textFormat": "plain",
        "text": text,
        "channelData": {"tenant": {"id": "bench-tenant"}},
        "locale": "en-US",
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def _fire(
    url: str, activities: list[dict[str, Any]], concurrency: int, headers: dict[str, str] | None = None
) -> tuple[list[float], list[int], float]:
    """POST every activity with at most `concurrency` in flight; (latencies in ms, statuses, wall seconds)."""
    slots = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    statuses: list[int] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(activity: dict[str, Any]) -> None:
            async with slots:
                began = time.perf_counter()
                async with http.post(url, json=activity, headers=headers or {}) as resp:
                    await resp.read()
                    latencies.append((time.perf_counter() - began) * 1000)
                    statuses.append(resp.status)

        began = time.perf_counter()
        await asyncio.gather(*(one(a) for a in activities))
        return latencies, statuses, time.perf_counter() - began


# --- the benchmark ---------------------------------------------------------------------------------------------


def bench_teams(
    base: Settings, *, concurrency: int = 50, requests: int = 2000, questions: bool = False
) -> dict[str, Any]:
    """Acknowledgement latency of POST /api/messages under `concurrency` parallel requests; replies counted too."""
    from bot.bench.speed import temporary_stack
    from bot.localstack import free_port, start_teams

    with temporary_stack(base, worker=False) as settings:
        port = free_port()
        _log(f"starting the Teams endpoint on 127.0.0.1:{port} ...")
        proc = start_teams(settings, port)
        try:
            return asyncio.run(_bench(f"http://127.0.0.1:{port}", concurrency, requests, questions))
        finally:
            proc.stop()


async def _wait_idle(base_url: str, timeout_s: float = 120) -> None:
    """Until the endpoint's background work (the model warm-up) is done, so that it does not skew the figures."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            async with http.get(f"{base_url}/livez") as resp:
                if (await resp.json()).get("busy") == 0:
                    return
            await asyncio.sleep(0.5)


async def _bench(base_url: str, concurrency: int, requests: int, questions: bool) -> dict[str, Any]:
    connector = LoopbackConnector()
    service_url = await connector.start()
    try:
        await _wait_idle(base_url)
        texts = ["What is the per diem in Vilnius?", "How do I book a flight?"] if questions else ["help"]
        # One message per connection first (as the Slack benchmark does), so the load generator's TCP connections
        # and the endpoint's first-use setup are not timed as acknowledgement latency.
        warm = [personal_message(service_url, texts[0]) for _ in range(min(max(20, concurrency), requests))]
        await _fire(f"{base_url}/api/messages", warm, concurrency)
        await connector.wait_for(lambda _: connector.posted >= len(warm), 120)
        connector.sent.clear()
        connector.posted = 0

        activities = [personal_message(service_url, texts[i % len(texts)]) for i in range(requests)]
        ids = {a["id"] for a in activities}
        _log(f"{requests} messages ({'questions' if questions else 'help'}), {concurrency} at a time ...")
        began = time.monotonic()
        latencies, statuses, wall = await _fire(f"{base_url}/api/messages", activities, concurrency)
        answered = await _answered(connector, ids, began + 600)
        last_reply_s = max(answered.values(), default=began) - began
    finally:
        await connector.stop()
    return {
        "name": "teams",
        "mode": "questions" if questions else "help command",
        "requests": requests,
        "concurrency": concurrency,
        "p50_ms": round(statistics.median(latencies), 1),
        "p90_ms": round(_percentile(latencies, 0.90), 1),
        "p99_ms": round(_percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies), 1),
        "target_p99_ms": TARGET_P99_MS,
        "acknowledged_per_s": round(requests / wall, 1),
        "non_201": sum(1 for s in statuses if s != 201),
        "answered": len(answered),
        "all_replied_after_s": round(last_reply_s, 1),
    }


async def _answered(connector: LoopbackConnector, ids: set[str], deadline: float) -> dict[str, float]:
    """Activity id -> when its answer arrived (not the "working on it" acknowledgement), once all did or time is up."""
    answered: dict[str, float] = {}
    while True:
        for sent in connector.messages():
            if sent.reply_to in ids and (sent.card is not None or not sent.text.startswith("Working on it")):
                answered.setdefault(sent.reply_to, sent.at)
        if len(answered) >= len(ids) or time.monotonic() > deadline:
            return answered
        await asyncio.sleep(0.5)


# --- reliability figures ---------------------------------------------------------------------------------------


@asynccontextmanager
async def _endpoint(settings: Settings) -> AsyncIterator[tuple[str, LoopbackConnector]]:
    """The Teams app in this process on a free port, and a loopback connector."""
    from bot.assistant import Assistant
    from bot.teams.app import create_app

    connector = LoopbackConnector()
    await connector.start()
    runner = web.AppRunner(create_app(settings, assistant=Assistant(settings)), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/api/messages", connector
    finally:
        await runner.cleanup()
        await connector.stop()


def duplicate_deliveries(n: int = 20) -> dict[str, Any]:
    """The same activity delivered `n` times (half at once, half one after another): answered exactly once."""
    from bot.localstack import free_port, start_redis

    with tempfile.TemporaryDirectory(prefix="expertbot-teams-dup-") as tmp:
        port = free_port()
        redis_proc = start_redis(Path(tmp), port)
        try:
            settings = load_settings(redis_url=f"redis://127.0.0.1:{port}/0", data_dir=Path(tmp))
            statuses, answered = asyncio.run(_duplicates(settings, n))
        finally:
            redis_proc.stop()
    ok = answered == 1 and all(s == 201 for s in statuses)
    return {"name": "teams_duplicate_deliveries", "ok": ok, "delivered": len(statuses), "answered": answered}


async def _duplicates(settings: Settings, n: int) -> tuple[list[int], int]:
    async with _endpoint(settings) as (url, connector):
        activity = personal_message(connector.url, "help")
        burst = n // 2
        _, statuses, _ = await _fire(url, [copy.deepcopy(activity) for _ in range(burst)], max(1, burst))
        for _ in range(n - burst):
            statuses += (await _fire(url, [copy.deepcopy(activity)], 1))[1]
        await connector.wait_for(lambda sent: connector.messages(), 30)
        await asyncio.sleep(1.0)  # a second answer, if any, would arrive by now
        return statuses, len(connector.messages())


def unauthenticated_requests(n: int = 30) -> dict[str, Any]:
    """With an app id set: requests without a token, with a malformed one, or one for another app; none accepted."""
    settings = load_settings(teams_app_id=APP_ID, teams_app_password="not-a-real-secret")
    sent, accepted, by_kind = asyncio.run(_unauthenticated(settings, n))
    return {
        "name": "teams_unauthenticated_requests",
        "ok": accepted == 0 and sent == n,
        "sent": sent,
        "accepted": accepted,
        "statuses": by_kind,
    }


async def _unauthenticated(settings: Settings, n: int) -> tuple[int, int, dict[str, list[int]]]:
    other_app = jwt.encode(
        {"aud": "another-app", "iss": "https://api.botframework.com", "exp": int(time.time()) + 3600},
        "a-key-that-is-not-the-bot-framework-one-anyway",
        algorithm="HS256",
    )
    kinds: dict[str, dict[str, str]] = {
        "no token": {},
        "malformed": {"Authorization": "Bearer this-is-not-a-jwt"},
        "wrong audience": {"Authorization": f"Bearer {other_app}"},
    }
    by_kind: dict[str, list[int]] = {k: [] for k in kinds}
    async with _endpoint(settings) as (url, connector):
        names = list(kinds)
        for i in range(n):
            kind = names[i % len(names)]
            by_kind[kind] += (await _fire(url, [personal_message(connector.url, "help")], 1, kinds[kind]))[1]
        await asyncio.sleep(0.5)
        replies = len(connector.sent)
    statuses = [s for v in by_kind.values() for s in v]
    accepted = sum(1 for s in statuses if s < 400) + replies
    return len(statuses), accepted, {k: sorted(set(v)) for k, v in by_kind.items()}


if __name__ == "__main__":
    print(duplicate_deliveries())
    print(unauthenticated_requests())
