"""Milvus filter expressions and keys for the audience model: which tenant and scopes a read may see.

Milvus Lite does not support bound filter parameters, so every value goes through `literal()`, which quotes and
escapes it; every read's audience filter is built here, inside the Milvus expression, never applied afterwards.
"""

from __future__ import annotations

import hashlib

from agent.types import Audience

BUCKETS = 64
"""How many passage collections a knowledge base spreads its audiences over (see `bucket_of`)."""


def clip(text: str, limit: int) -> str:
    """Milvus VARCHAR limits count bytes; cut on a character boundary below the limit."""
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit].decode("utf-8", "ignore")


def literal(value: str) -> str:
    """A Milvus string literal: quoted, with backslashes and quotes escaped, control characters dropped."""
    clean = "".join(ch for ch in value if ch >= " " and ch != "\x7f")
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def audience_expr(audience: Audience) -> str:
    scopes = ", ".join(literal(s) for s in audience.visible_scopes)
    return f"tenant == {literal(audience.tenant)} and scope in [{scopes}]"


def document_expr(audience: Audience, doc_id: str) -> str:
    return (
        f"tenant == {literal(audience.tenant)} and scope == {literal(audience.scope)} and doc_id == {literal(doc_id)}"
    )


def bucket_of(tenant: str, scope: str) -> int:
    """The bucket that holds a scope's passages: a stable hash of (tenant, scope).

    The hash is the one the partitions of the single-collection layout used, so partition `aNN` of that layout
    is bucket NN of this one (see `agent.knowledge.migrate`).
    """
    digest = hashlib.sha256(f"{tenant}\x1f{scope}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % BUCKETS


def make_key(*parts: str) -> str:
    """A deterministic primary key from its parts (Milvus VARCHAR keys: 40 hex characters)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


def chunk_key(audience: Audience, doc_id: str, content_hash: str, number: int) -> str:
    """A passage's key: ingesting the same version twice overwrites instead of duplicating."""
    return make_key(audience.tenant, audience.scope, doc_id, content_hash, str(number))
