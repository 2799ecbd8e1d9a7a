"""The knowledge base against a real Milvus Lite server: audience isolation, idempotency, versions, forgetting."""

from __future__ import annotations

from uuid import uuid4

import pytest

from agent.knowledge.chunking import chunk_document, lead_sentence
from agent.knowledge.ingest import ingest_bytes
from agent.knowledge.parsers import parse_document
from agent.types import TENANT_WIDE, Audience

GUIDE = b"""# Zorblax Gateway Guide

## Installation

Download the Zorblax gateway 4.2 package and unpack it into /opt/zorblax.

## Ports

The Zorblax gateway listens on port 7341 for admin traffic and 7342 for data.
"""


def _ingest(knowledge, audience, data: bytes, name: str, doc_id: str | None = None):
    return ingest_bytes(
        knowledge.store,
        knowledge.embeddings,
        audience,
        data=data,
        source=name,
        doc_id=doc_id or name,
        max_bytes=1_000_000,
        chunk_chars=300,
    )


@pytest.fixture()
def tenant() -> str:
    return f"t-{uuid4().hex[:8]}"


def test_search_returns_passage_with_title_heading_and_scope(knowledge, tenant):
    audience = Audience(tenant, "C-eng")
    result = _ingest(knowledge, audience, GUIDE, "zorblax.md")
    assert result.status == "ready" and result.chunks == 2 and result.title == "Zorblax Gateway Guide"
    for mode in ("hybrid", "dense", "bm25"):
        hits = knowledge.search(audience, "Which port does the Zorblax gateway listen on?", k=3, mode=mode)
        assert hits, mode
        top = hits[0]
        assert (top.doc_id, top.title, top.heading, top.scope) == (
            "zorblax.md",
            "Zorblax Gateway Guide",
            "Ports",
            "C-eng",
        )
        assert "7341" in top.text


def test_document_shared_in_one_scope_is_never_returned_in_another(knowledge, tenant):
    _ingest(knowledge, Audience(tenant, "C-private"), GUIDE, "zorblax.md")
    for audience in (Audience(tenant, "C-other"), Audience(tenant, TENANT_WIDE), Audience(f"{tenant}-x", "C-private")):
        for mode in ("hybrid", "dense", "bm25"):
            assert knowledge.search(audience, "Zorblax gateway port 7341", k=10, mode=mode) == [], (audience, mode)


def test_tenant_wide_documents_are_visible_from_every_scope_of_that_tenant_only(knowledge, tenant):
    _ingest(knowledge, Audience(tenant, TENANT_WIDE), GUIDE, "zorblax.md")
    assert knowledge.search(Audience(tenant, "C-any"), "Zorblax port", k=3)[0].scope == TENANT_WIDE
    assert knowledge.search(Audience("someone-else", "C-any"), "Zorblax port", k=3) == []


def test_hostile_scope_strings_cannot_widen_the_filter(knowledge, tenant):
    _ingest(knowledge, Audience(tenant, "C-secret"), GUIDE, "zorblax.md")
    for scope in ['x" or scope != "', 'x\\" or tenant != \\"', "x' or 1==1 or '", 'C-secret"]']:
        assert knowledge.search(Audience(tenant, scope), "Zorblax port 7341", k=10) == []


def test_resharing_the_same_content_adds_nothing(knowledge, tenant):
    audience = Audience(tenant, "C-eng")
    assert _ingest(knowledge, audience, GUIDE, "zorblax.md").status == "ready"
    before = knowledge.store.count(audience)
    again = _ingest(knowledge, audience, GUIDE, "zorblax.md")
    renamed = _ingest(knowledge, audience, GUIDE, "copy-of-zorblax.md")
    assert again.status == "unchanged" and renamed.status == "unchanged"
    assert "zorblax.md" in renamed.reason
    assert knowledge.store.count(audience) == before == 2


def test_a_new_version_replaces_the_old_one(knowledge, tenant):
    audience = Audience(tenant, "C-eng")
    _ingest(knowledge, audience, GUIDE, "zorblax.md")
    v2 = GUIDE.replace(b"7341", b"9100") + b"\n## Upgrading\n\nStop the service before upgrading.\n"
    result = _ingest(knowledge, audience, v2, "zorblax.md")
    assert result.status == "ready"
    docs = knowledge.store.list_documents(tenant)
    assert len(docs) == 1 and docs[0].chunks == result.chunks == knowledge.store.count(audience)
    texts = " ".join(h.text for h in knowledge.search(audience, "Zorblax port", k=10, mode="bm25"))
    assert "9100" in texts and "7341" not in texts


def test_forget_removes_every_chunk(knowledge, tenant):
    audience = Audience(tenant, "C-eng")
    _ingest(knowledge, audience, GUIDE, "zorblax.md")
    _ingest(knowledge, audience, b"# Other\n\nSomething else entirely about llamas.", "other.md")
    assert knowledge.store.forget(audience, "zorblax.md") == 2
    assert [d.doc_id for d in knowledge.store.list_documents(tenant)] == ["other.md"]
    assert all(h.doc_id != "zorblax.md" for h in knowledge.search(audience, "Zorblax port 7341", k=10))
    assert knowledge.store.forget(audience, "zorblax.md") == 0


def test_bad_and_oversized_files_fail_with_a_reason_and_store_nothing(knowledge, tenant):
    audience = Audience(tenant, "C-eng")
    assert "over the" in _ingest(knowledge, audience, b"x" * 2_000_000, "big.txt").reason
    broken = _ingest(knowledge, audience, bytes(range(256)) * 40, "notes.md")
    assert broken.status == "failed" and "notes.md" in broken.reason
    assert knowledge.store.count(audience) == 0


def test_retrieval_crosses_languages(knowledge, tenant):
    audience = Audience(tenant, "C-eng")
    _ingest(knowledge, audience, GUIDE, "zorblax.md")
    _ingest(knowledge, audience, "# 食谱\n\n红烧肉需要五花肉、酱油和冰糖。".encode(), "recipe.md")
    hits = knowledge.search(audience, "¿En qué puerto escucha la pasarela Zorblax?", k=1)
    assert hits[0].doc_id == "zorblax.md"
    assert knowledge.search(audience, "红烧肉需要什么？", k=1)[0].doc_id == "recipe.md"


def test_chunks_keep_title_and_heading_and_respect_the_size():
    doc = parse_document(b"# Title\n\n## A\n\n" + b"Sentence one is here. " * 100 + b"\n\n## B\n\nShort.", "t.md")
    chunks = chunk_document(doc, max_chars=300)
    assert all(len(c.text) <= 300 for c in chunks)
    assert {c.heading for c in chunks} == {"A", "B"}
    assert chunks[-1].text == "Short." and chunks[-1].embedding_text.startswith("Title > B\n")
    assert [c.number for c in chunks] == list(range(len(chunks)))


SAMPLE = b"""# Introduction

This sample fine-tunes Phi-3-mini on the Quuxbench questions. It is a first end-to-end project.

## Requirements

- Python 3.10+
- CUDA 12.1
- Azure Compute A100
"""
QUUXBENCH = b"""# Notes

Quuxbench is a set of questions. Quuxbench scores a model; a Quuxbench sample is one question."""


def test_the_document_lead_goes_with_every_passage_to_bm25_but_not_into_the_vector():
    chunks = chunk_document(parse_document(SAMPLE, "intro.md"), max_chars=300)
    lead = "This sample fine-tunes Phi-3-mini on the Quuxbench questions."
    assert [c.lead for c in chunks] == ["", lead]  # the first passage holds it already
    assert chunks[1].search_text.startswith(lead) and lead not in chunks[1].embedding_text
    code_first = b"# T\n\n## Setup\n\npip install quux --upgrade\n\nShort line\n\nQuux reads the files you give it."
    assert lead_sentence(parse_document(code_first, "t.md")) == "Quux reads the files you give it."


def test_a_short_passage_is_found_by_the_names_its_document_opens_with(knowledge, tenant):
    audience = Audience(tenant, "C-eng")
    _ingest(knowledge, audience, SAMPLE, "intro.md")
    _ingest(knowledge, audience, QUUXBENCH, "notes.md")
    best = knowledge.search(audience, "What compute does the Quuxbench sample require?", k=1, mode="bm25")[0]
    assert "Azure Compute A100" in best.text
