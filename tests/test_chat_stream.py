"""ChatCore.stream: route, then text chunks, then sources, then the whole reply, on a real Milvus Lite server with
the extractive backend, the tiny Phi-3 in process, and a vLLM-speaking server with runtime LoRA."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import pytest

from agent.chat import ChatCore, StreamEvent
from agent.knowledge.ingest import ingest_bytes
from agent.models.factory import make_chat_model
from agent.models.phi3_chat import Phi3Chat
from agent.models.registry import adapter_name, tenant_registry
from agent.models.tiny import build_tiny_adapter, build_tiny_phi3
from agent.settings import load_settings
from agent.types import Audience, ChatRequest
from bot.fakes.vllm import FakeVllm

GUIDE = b"""# Zorblax Gateway Guide

## Ports

The Zorblax gateway listens on port 7341 for admin traffic. Data traffic uses port 7342.
"""
MANIFEST = {"base_model": "tiny", "data_hash": "t", "examples": {}, "metrics": {}}


@pytest.fixture()
def audience(knowledge) -> Audience:
    here = Audience(f"stream-{uuid4().hex[:8]}", "C-eng")
    result = ingest_bytes(
        knowledge.store, knowledge.embeddings, here, data=GUIDE, source="gateway.md", max_bytes=10**6, chunk_chars=400
    )
    assert result.status == "ready"
    return here


def _events(core: ChatCore, audience: Audience, text: str) -> list[StreamEvent]:
    return list(core.stream(ChatRequest(text=text, audience=audience, thread=uuid4().hex)))


def _check_shape(events: list[StreamEvent]) -> str:
    """route first, text chunks, sources, done last; returns the streamed text."""
    kinds = [e.kind for e in events]
    assert kinds[0] == "route" and kinds[-2:] == ["sources", "done"]
    assert set(kinds[1:-2]) == {"text"}
    return "".join(e.text for e in events if e.kind == "text")


def test_extractive_answer_streams_as_one_chunk(knowledge, audience) -> None:
    core = ChatCore(knowledge)
    question = "Which port does the Zorblax gateway use for admin traffic?"
    events = _events(core, audience, question)
    text = _check_shape(events)
    done = events[-1].reply
    assert done is not None and [e.kind for e in events].count("text") == 1
    assert events[0].route == "retrieve" and text == done.text and "7341" in text
    assert [(n, h.doc_id) for n, h in events[-2].sources] == [(1, "gateway.md")]
    whole = core.answer(ChatRequest(text=question, audience=audience, thread=uuid4().hex))
    assert (whole.text, whole.route) == (done.text, done.route)
    empty = _events(core, audience, "  ")
    assert [e.kind for e in empty] == ["route", "text", "sources", "done"] and empty[0].route == "smalltalk"


def test_phi3_answer_streams_token_by_token(knowledge, audience, tmp_path: Path) -> None:
    base = build_tiny_phi3(tmp_path / "base")
    core = ChatCore(knowledge, llm=Phi3Chat(model_id=str(base), max_new_tokens=16))
    events = _events(core, audience, "expert: Explain in plain words what a LoRA adapter is.")
    text = _check_shape(events)
    done = events[-1].reply
    assert done is not None and done.route == "domain" and events[0].route == "domain"
    assert [e.kind for e in events].count("text") > 3 and text.strip() == done.text


def test_vllm_answers_stream_and_name_the_promoted_adapter(knowledge, audience, tmp_path: Path) -> None:
    base = build_tiny_phi3(tmp_path / "base")
    root = tmp_path / "adapters"
    registry = tenant_registry(root, audience.tenant)
    version = registry.promote(registry.add(build_tiny_adapter(base, tmp_path / "a1"), MANIFEST).name).name
    with FakeVllm(words_per_chunk=1) as server:
        settings = load_settings(
            generator="openai", openai_base_url=server.base_url, openai_lora="runtime", adapters_dir=root
        )
        core = ChatCore(knowledge, llm=make_chat_model(settings))
        events = _events(core, audience, "expert: Explain in plain words what onboarding means here.")
        text = _check_shape(events)
        assert [e.kind for e in events].count("text") > 3  # token by token, not duplicated by the inner client
        assert text.startswith(f"[{adapter_name(audience.tenant, version)}]") and text.strip() == events[-1].reply.text  # type: ignore[union-attr]
        docs = _events(core, audience, "docs: Which port does the Zorblax gateway use for admin traffic?")
        assert _check_shape(docs).startswith(f"[{adapter_name(audience.tenant, version)}]")
        assert [h.doc_id for _, h in docs[-2].sources] == ["gateway.md"]


def test_console_prints_the_stream_as_it_comes(knowledge, audience) -> None:
    from rich.console import Console

    from bot.console import render_stream

    console = Console(record=True, width=200)
    events = ChatCore(knowledge).stream(
        ChatRequest(text="Which port does the Zorblax gateway use for admin traffic?", audience=audience)
    )
    reply = render_stream(events, console)
    shown = console.export_text()
    assert shown.startswith("route: ")
    assert reply.text in shown and "Sources" in shown and "[1] Zorblax Gateway Guide" in shown
