"""Security scenarios of the reliability suite (issue 20): an unauthenticated Teams endpoint reached from
elsewhere, and a forgotten document that must leave nothing behind. (Poison documents: `poison.py`.)"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiohttp
import redis

from agent.knowledge.service import open_knowledge
from agent.settings import ConfigError, load_settings
from agent.types import Audience
from bot.assistant import Assistant
from bot.bench.reliability.harness import Harness
from bot.conversation import Conversation

ADMIN = "U-bench-admin"
FORGET_SENTENCE = "The Vellichor archive seals its ledgers with cipher Ostrakon-77 every full moon."


def unauthenticated_remote(n: int = 30) -> dict[str, Any]:
    """No app id (the Emulator mode): the endpoint must refuse to listen on 0.0.0.0, and requests that forge a
    tenant, an admin and a remote serviceUrl, name another channel or come as text/plain must all be refused."""
    settings = load_settings(teams_app_id="", teams_host="0.0.0.0", admins=ADMIN)
    from bot.teams.app import check_listen_address

    try:
        check_listen_address(settings)
        listens = True
    except ConfigError:
        listens = False
    sent, accepted, statuses = asyncio.run(_forged(settings.model_copy(update={"teams_host": "127.0.0.1"}), n))
    return {
        "name": "unauthenticated_remote_teams",
        "ok": not listens and accepted == 0 and sent == n,
        "listens_on_0.0.0.0": listens,
        "sent": sent,
        "accepted": accepted,
        "statuses": statuses,
    }


async def _forged(settings: Any, n: int) -> tuple[int, int, dict[str, list[int]]]:
    from bot.bench.teams import _endpoint, personal_message

    kinds = ("remote serviceUrl", "other channel", "text/plain")
    by_kind: dict[str, list[int]] = {k: [] for k in kinds}
    async with _endpoint(settings) as (url, connector), aiohttp.ClientSession() as http:
        for i in range(n):
            kind = kinds[i % len(kinds)]
            act = personal_message(connector.url, "forget handbook.pdf", conversation="*", activity_id=uuid4().hex)
            act["from"]["aadObjectId"] = ADMIN
            act["channelData"] = {"tenant": {"id": "victim-tenant"}}
            if kind == "remote serviceUrl":
                act["serviceUrl"] = "http://203.0.113.66:8080/"
            elif kind == "other channel":
                act["channelId"] = "directline"
            if kind == "text/plain":
                body = aiohttp.payload.JsonPayload(act, content_type="text/plain; application/json")
                async with http.post(url, data=body) as resp:
                    by_kind[kind].append(resp.status)
            else:
                async with http.post(url, json=act) as resp:
                    by_kind[kind].append(resp.status)
        await asyncio.sleep(0.5)
        replies = len(connector.sent)
    statuses = [s for v in by_kind.values() for s in v]
    return len(statuses), sum(1 for s in statuses if s < 400) + replies, {k: sorted(set(v)) for k, v in by_kind.items()}


def redis_holds(client: redis.Redis[bytes], needle: bytes) -> list[str]:
    """Every key whose value (string, hash, list, set or sorted set) contains `needle`."""
    found = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()  # type: ignore[no-untyped-call]
        values: list[bytes] = []
        if kind == "string":
            values = [client.get(key) or b""]
        elif kind == "hash":
            values = list(client.hvals(key))
        elif kind == "list":
            values = list(client.lrange(key, 0, -1))
        elif kind == "set":
            values = list(client.smembers(key))
        elif kind == "zset":
            values = list(client.zrange(key, 0, -1))
        if any(needle in v for v in values):
            found.append(key.decode(errors="replace"))
    return found


def files_holding(folder: Path, pattern: str, needle: bytes) -> list[str]:
    return sorted(p.name for p in folder.glob(pattern) if needle in p.read_bytes())


def forget_leaves_nothing(h: Harness, questions: int = 4) -> dict[str, Any]:
    """Share a document, ask about it (answers quote it), vote, forget it; then look for its text in every Redis
    value, in the conversation memory's files and in Milvus."""
    settings = h.settings.model_copy(update={"admins": ADMIN, "answer_processes": 0})
    h.start_worker("forget")
    audience = Audience("reliability", f"forget-{uuid4().hex[:6]}")
    reader = Conversation("bench", audience, f"thread-{uuid4().hex[:6]}", "U-reader", private=False)
    admin = Conversation("bench", audience, f"thread-{uuid4().hex[:6]}", ADMIN, private=False)
    assistant = Assistant(settings)
    document = f"# Vellichor Archive\n\n## Ledgers\n\n{FORGET_SENTENCE}\n\n## Keepers\n\nTwo keepers hold the keys.\n"
    needle = b"Ostrakon-77"
    started = time.monotonic()

    async def scenario() -> tuple[str, int, str]:
        last = ""
        async for step in assistant.share(reader, document.encode(), "vellichor.md"):
            last = step.text
        quoted = 0
        for k in range(questions):
            question = "How does the Vellichor archive seal its ledgers?" if k % 2 == 0 else "and how often?"
            answer = await assistant.answer(reader, question)
            quoted += "Ostrakon-77" in answer.reply.text
            if answer.answer_id:
                assistant.vote(answer.answer_id, "U-reader", True)
        return last, quoted, await assistant.command(admin, "forget vellichor.md")

    shared, quoted, forgot = asyncio.run(scenario())
    in_redis = redis_holds(assistant.redis, needle)
    in_memory = files_holding(settings.data_dir, "memory.sqlite*", needle)
    store = open_knowledge(settings).store
    store.flush()
    left = store.count(audience)
    conn = sqlite3.connect(settings.memory_path)
    try:
        threads = conn.execute("SELECT COUNT(*) FROM expertbot_citations WHERE scope = ?", (audience.scope,))
        citing = int(threads.fetchone()[0])
    finally:
        conn.close()
    return {
        "ok": "ready" in shared and quoted > 0 and not in_redis and not in_memory and left == 0 and citing == 0,
        "answers_quoting_it": quoted,
        "forget_reply": forgot,
        "redis_keys_with_text": len(in_redis),
        "memory_files_with_text": len(in_memory),
        "milvus_passages_left": left,
        "conversations_citing_it": citing,
        "seconds": round(time.monotonic() - started, 1),
        **({"problems": (in_redis + in_memory)[:5]} if in_redis or in_memory else {}),
    }
