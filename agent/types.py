"""The small value types that cross module boundaries: audiences, chunks, search hits, chat requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

TENANT_WIDE = "*"
"""The scope of documents every conversation of a tenant may see."""
EXTERNAL_PREFIX = "ext:"
"""Scopes of conversations with people from outside the tenant (Slack Connect): they see only their own documents."""

Route = Literal["retrieve", "domain", "smalltalk"]


@dataclass(frozen=True)
class Audience:
    """Who may see a document: one tenant (workspace/team) and one scope (channel, chat, DM or tenant-wide)."""

    tenant: str
    scope: str
    also: tuple[str, ...] = ()
    """Other scopes this question may read (never written to): a Slack channel the asker is viewing and is a
    member of, while they talk to the bot in its own chat."""

    def __post_init__(self) -> None:
        if not self.tenant or not self.scope:
            raise ValueError("an audience needs both a tenant and a scope")

    @property
    def visible_scopes(self) -> list[str]:
        """A question asked in this scope sees the scope's own documents (and those of `also`) and the tenant-wide
        ones; in a conversation shared with people outside the tenant (an `ext:` scope), only the documents shared
        there."""
        if self.scope == TENANT_WIDE or self.scope.startswith(EXTERNAL_PREFIX):
            return [self.scope]
        return list(dict.fromkeys([self.scope, *self.also, TENANT_WIDE]))


@dataclass(frozen=True)
class Section:
    """A run of a document's text under one heading path ("Guide > Install > Linux")."""

    heading: str
    text: str


@dataclass(frozen=True)
class ParsedDocument:
    title: str
    kind: str
    sections: list[Section]

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.sections)


@dataclass(frozen=True)
class Chunk:
    """One searchable passage, with the title and heading it came from."""

    number: int
    title: str
    heading: str
    text: str
    lead: str = ""
    """The document's opening sentence, when this passage does not hold it (`chunking.lead_sentence`)."""

    @property
    def embedding_text(self) -> str:
        """What is embedded: the passage with its title and heading as context."""
        context = " > ".join(p for p in (self.title, self.heading) if p)
        return f"{context}\n{self.text}" if context else self.text

    @property
    def search_text(self) -> str:
        """What BM25 indexes: the embedded text and the document's lead, so a short passage far down the page
        ("Requirements: ... Azure Compute A100") is found by the names the page opens with ("TruthfulQA").
        Not embedded: in the dense vector the same sentence on every passage of a page blurs them together
        (on the development questions: accepted 0.78 -> 0.76 with it embedded, 0.78 with it only here)."""
        return f"{self.lead}\n{self.embedding_text}" if self.lead else self.embedding_text


@dataclass(frozen=True)
class Hit:
    """A retrieved passage with where it came from."""

    doc_id: str
    source: str
    title: str
    heading: str
    scope: str
    chunk: int
    text: str
    score: float
    similarity: float | None = None
    """Cosine similarity to the question, when the dense search returned this passage (a relevance signal)."""


def best_similarity(hits: list[Hit]) -> float:
    """How well the best passage matches the question (0 when no dense search returned any)."""
    return max((h.similarity or 0.0 for h in hits), default=0.0)


@dataclass(frozen=True)
class DocumentInfo:
    doc_id: str
    source: str
    title: str
    scope: str
    chunks: int
    content_hash: str
    updated_at: float


@dataclass
class ChatRequest:
    """One message to answer, in platform-neutral terms."""

    text: str
    audience: Audience
    user: str = "local-user"
    thread: str = "console"
    forced_route: Route | None = None


@dataclass
class ChatReply:
    text: str
    route: Route
    confidence: float
    why: str
    sources: list[Hit] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
