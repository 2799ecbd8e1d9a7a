"""The surface-neutral assistant on real Redis, Milvus Lite and a Celery worker; downloads over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import aiohttp
import pytest
from aiohttp import web

from agent.models.registry import ADAPTER_FILES, tenant_registry
from agent.settings import Settings
from agent.types import TENANT_WIDE, Audience
from bot.assistant import Assistant
from bot.conversation import Conversation, ShareProgress
from bot.downloads import DownloadError, fetch_file

GUIDE = b"# Zorblax Guide\n\n## Ports\n\nThe Zorblax gateway listens on port 7341 for admin traffic.\n"


def _conv(tenant: str, scope: str, *, user: str = "U-user", private: bool = False) -> Conversation:
    return Conversation("test", Audience(tenant, scope), f"thread-{scope}", user, private)


@pytest.fixture()
def assistant(services, worker) -> Assistant:
    settings: Settings = services.model_copy(update={"admins": "U-admin"})
    return Assistant(settings)


async def _collect(progress: AsyncIterator[ShareProgress]) -> list[ShareProgress]:
    return [p async for p in progress]


def test_a_shared_file_is_ingested_with_progress_and_answered_with_a_link(assistant):
    tenant = f"asst-{uuid4().hex[:8]}"
    here = _conv(tenant, "C-eng")
    steps = asyncio.run(_collect(assistant.share(here, GUIDE, "guide.md", link="https://chat.example/C-eng/p1")))
    assert steps[0].text == "Reading guide.md: queued"
    assert steps[-1].finished and steps[-1].ok, steps
    assert "guide.md is ready" in steps[-1].text

    answer = asyncio.run(assistant.answer(here, "Which port does the Zorblax gateway use for admin traffic?"))
    assert answer.reply.route == "retrieve" and answer.route_label == "from documents"
    assert [s.doc_id for s in answer.reply.sources][:1] == ["guide.md"]
    assert answer.links == {"guide.md": "https://chat.example/C-eng/p1"}

    elsewhere = asyncio.run(assistant.answer(_conv(tenant, "C-other"), "docs: Zorblax gateway admin port?"))
    assert all(s.doc_id != "guide.md" for s in elsewhere.reply.sources)

    assert assistant.vote(answer.answer_id, "U-user", helpful=True)
    assert not assistant.vote("no-such-answer", "U-user", helpful=True)
    assert [r.answer_id for r in assistant.learning.helpful_answers(tenant)] == [answer.answer_id]


def test_oversized_and_empty_files_are_refused_before_any_job(assistant):
    conv = _conv("asst-limits", "C-x")
    big = b"x" * (assistant.settings.max_upload_bytes + 1)
    (step,) = asyncio.run(_collect(assistant.share(conv, big, "huge.txt")))
    assert step.finished and not step.ok and "limit" in step.text
    (step,) = asyncio.run(_collect(assistant.share(conv, b"", "empty.txt")))
    assert not step.ok and "empty" in step.text


def test_commands_teach_status_docs_and_admin_only_ones(assistant):
    tenant = f"asst-{uuid4().hex[:8]}"
    public, private = _conv(tenant, "C-pub"), _conv(tenant, "D-1", private=True)
    assert "teach <term> :: <definition>" in asyncio.run(assistant.command(public, "help"))
    assert "Learned 'PLM'" in asyncio.run(assistant.command(public, "teach PLM :: product lifecycle management"))
    assert "stays in this private" in asyncio.run(assistant.command(private, "teach codename :: Project Quux"))
    assert "couldn't read" in asyncio.run(assistant.command(public, "teach no separator here"))
    scopes = {i.prompt: i.scope for i in assistant.learning.curated(tenant)}
    assert scopes == {"PLM": TENANT_WIDE, "codename": "D-1"}

    assert "Only admins can forget" in asyncio.run(assistant.command(public, "forget guide.md"))
    assert "Only admins can retrain" in asyncio.run(assistant.command(public, "retrain"))
    admin = _conv(tenant, "C-pub", user="U-admin")
    asyncio.run(_collect(assistant.share(admin, GUIDE, "guide.md")))
    assert "guide.md" in asyncio.run(assistant.command(public, "docs"))
    assert "Documents here: 1" in asyncio.run(assistant.command(public, "status"))
    assert "Forgot 'guide.md'" in asyncio.run(assistant.command(admin, "forget guide.md"))
    assert "no document 'guide.md'" in asyncio.run(assistant.command(admin, "forget guide.md"))
    assert "don't know the command" in asyncio.run(assistant.command(public, "dance"))


def test_status_names_the_adapter_of_the_conversations_tenant(assistant, tmp_path):
    tenant, other = f"asst-{uuid4().hex[:8]}", f"asst-{uuid4().hex[:8]}"
    saved = tmp_path / "saved"
    saved.mkdir()
    for name in ADAPTER_FILES:
        (saved / name).write_bytes(b"{}")
    registry = tenant_registry(assistant.settings.adapter_registry, tenant)
    registry.add(saved, {"base_model": "tiny", "data_hash": "x", "examples": 1, "metrics": {}})
    registry.promote(registry.add(saved, {"base_model": "tiny", "data_hash": "y", "examples": 1, "metrics": {}}).name)
    assert "Domain adapter: v0002" in asyncio.run(assistant.command(_conv(tenant, "C-pub"), "status"))
    assert "Domain adapter: none" in asyncio.run(assistant.command(_conv(other, "C-pub"), "status"))


def test_status_and_answers_agree_on_the_domain_model(assistant):
    """With no domain model configured (the extractive generator), /status and a domain answer say the same."""
    conv = _conv(f"asst-{uuid4().hex[:8]}", "C-pub")
    status = asyncio.run(assistant.command(conv, "status"))
    assert "Domain model: none is configured (EXPERTBOT_GENERATOR=extractive)" in status
    assert "base model" not in status
    answer = asyncio.run(assistant.answer(conv, "What does LoRA mean?", forced_route="domain"))
    assert "no domain model is configured" in answer.reply.text


def test_a_redelivered_event_is_seen_once(assistant):
    event = uuid4().hex
    assert assistant.first_delivery("slack", event)
    assert not assistant.first_delivery("slack", event)
    assert assistant.first_delivery("teams", event)


async def _serve_and_fetch(name: str, body: bytes, content_type: str, max_bytes: int = 10**6) -> bytes:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type)

    app = web.Application()
    app.router.add_get("/f", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            return await fetch_file(session, f"http://127.0.0.1:{port}/f", name, max_bytes=max_bytes)
    finally:
        await runner.cleanup()


def test_downloads_refuse_login_pages_and_oversized_files_but_take_real_ones():
    login = b"<!DOCTYPE html><html><body><form>Sign in to Slack</form></body></html>"
    with pytest.raises(DownloadError, match=r"web page instead of handbook\.pdf"):
        asyncio.run(_serve_and_fetch("handbook.pdf", login, "text/html"))
    assert asyncio.run(_serve_and_fetch("page.html", login, "text/html")) == login
    with pytest.raises(DownloadError, match="limit"):
        asyncio.run(_serve_and_fetch("big.txt", b"y" * 5000, "text/plain", max_bytes=1000))
    assert asyncio.run(_serve_and_fetch("notes.txt", b"hello", "text/plain")) == b"hello"


def test_answers_stream_from_an_answer_process_as_from_a_thread(services):
    """`Assistant.stream` with answers computed in a child process (as the served bots run): the child's stream
    events come back through a manager's queue; the same question in a thread streams the same answer."""
    from agent.knowledge.ingest import ingest_bytes
    from agent.knowledge.service import open_knowledge
    from bot.answer_pool import answer_pool

    tenant = f"asst-{uuid4().hex[:8]}"
    knowledge = open_knowledge(services)
    ingest_bytes(knowledge.store, knowledge.embeddings, Audience(tenant, "C-eng"), data=GUIDE, source="guide.md",
                 max_bytes=10**7)  # fmt: skip
    question = "Which port does the Zorblax gateway use for admin traffic?"

    async def kinds(assistant: Assistant) -> tuple[list[str], Any]:
        events = [e async for e in assistant.stream(_conv(tenant, "C-eng"), question)]
        return [e.kind for e in events], events[-1].answer

    pool = answer_pool(services, 1)
    try:
        pooled, answer = asyncio.run(kinds(Assistant(services, answer_pool=pool)))
    finally:
        pool.shutdown(wait=True)
    threaded, same = asyncio.run(kinds(Assistant(services)))
    assert pooled[0] == "route" and "text" in pooled and pooled[-1] == "done" and pooled == threaded
    assert "7341" in answer.text and answer.text == same.text and answer.sources[0][1].doc_id == "guide.md"
    assert answer.answer_id != same.answer_id  # each remembered for its votes
