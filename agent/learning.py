"""What people teach the bot: curated domain knowledge and votes on its answers, the inputs of adapter training.

Both live in Redis, so every chat surface and the trainer share them across processes and machines. Each item
keeps the audience it was given in: content taught or voted on in a private channel or a direct message must
never reach an adapter that the whole tenant uses (a LoRA adapter can repeat what it was trained on), so the
training-data builder reads `scope` and keeps only tenant-wide items.

Every write also stamps the tenant's "changed at" time, which lets the nightly retraining skip tenants with
nothing new.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol, TypeVar

import redis

from agent import keys
from agent.types import TENANT_WIDE, Audience

CuratedKind = Literal["term", "qa", "style"]
"""term: a word and its definition; qa: a question and its answer; style: a request and an answer in house style."""

ANSWER_TTL_S = 30 * 24 * 3600
"""How long an answer can still be voted on."""


@dataclass(frozen=True)
class CuratedItem:
    kind: CuratedKind
    prompt: str
    """The term, the question, or the request."""
    text: str
    """The definition, the answer, or the answer in house style."""
    tenant: str
    scope: str
    source: str
    """Provenance: "slack:U123", "teams:29:1abc", "file:glossary.csv" ..."""
    at: float = 0.0


@dataclass(frozen=True)
class AnswerRecord:
    """An answer the bot gave, remembered so that a 👍/👎 click (which carries only the id) can refer to it."""

    answer_id: str
    tenant: str
    scope: str
    question: str
    answer: str
    route: str
    at: float
    cited: list[str] = field(default_factory=list)
    """The documents the answer quotes, as "scope/doc_id": forgetting one forgets the answer too."""


@dataclass(frozen=True)
class Vote:
    answer_id: str
    tenant: str
    scope: str
    user: str
    helpful: bool
    at: float
    comment: str = ""
    """What the voter wrote with the vote (Teams' feedback form), if anything."""


class _Scoped(Protocol):
    @property
    def scope(self) -> str: ...


ScopedT = TypeVar("ScopedT", bound=_Scoped)


def tenant_wide_only(items: Iterable[ScopedT]) -> list[ScopedT]:
    """The items a tenant's shared adapter may learn from: those given tenant-wide, never a private scope's.

    Why a filter of its own: a LoRA adapter can repeat what it was trained on to anyone in the tenant, so
    whatever builds training data must pass curated items and voted answers through this.
    """
    return [item for item in items if item.scope == TENANT_WIDE]


def _cite(scope: str, doc_id: str) -> str:
    return f"{scope}/{doc_id}"


def parse_teach(text: str) -> tuple[str, str]:
    """`term :: definition` -> (term, definition); a ValueError says how to write it otherwise."""
    term, sep, definition = text.partition("::")
    term, definition = term.strip(), definition.strip()
    if not sep or not term or not definition:
        raise ValueError("write it as: teach <term> :: <definition>")
    if len(term) > 200 or len(definition) > 4000:
        raise ValueError("a term may have up to 200 characters and a definition up to 4,000")
    return term, definition


class LearningStore:
    """Curated items, remembered answers and votes, per tenant, in one Redis database."""

    def __init__(self, client: redis.Redis[bytes], *, private_vote_retention_s: float | None = None) -> None:
        self.client = client
        self.private_vote_retention_s = private_vote_retention_s
        """Votes in private scopes (never training data) are deleted after this long; None keeps them."""

    @classmethod
    def from_url(cls, url: str) -> LearningStore:
        return cls(redis.Redis.from_url(url))

    # --- curated knowledge ---------------------------------------------------------------------------------

    def add_curated(self, item: CuratedItem) -> bool:
        """Store an item; teaching the same prompt again in the same scope replaces its text. True when new."""
        item = item if item.at else CuratedItem(**{**asdict(item), "at": time.time()})
        field = hashlib.sha1(f"{item.kind}\0{item.scope}\0{item.prompt.casefold()}".encode()).hexdigest()
        created = self.client.hset(
            keys.learning("curated", item.tenant), field, json.dumps(asdict(item), ensure_ascii=False)
        )
        self._touch(item.tenant)
        return bool(created)

    def curated(self, tenant: str) -> list[CuratedItem]:
        rows = self.client.hvals(keys.learning("curated", tenant))
        return sorted((CuratedItem(**json.loads(r)) for r in rows), key=lambda i: (i.at, i.prompt))

    # --- answers and votes ---------------------------------------------------------------------------------

    def remember_answer(
        self, audience: Audience, question: str, answer: str, route: str, cited: Iterable[tuple[str, str]] = ()
    ) -> str:
        """Keep an answer for ANSWER_TTL_S so that votes can refer to it; returns its id.

        `cited` (scope, document id) pairs are indexed, so that forgetting a document forgets the answers quoting it.
        """
        docs = sorted({_cite(scope, doc) for scope, doc in cited})
        record = AnswerRecord(
            uuid.uuid4().hex, audience.tenant, audience.scope, question, answer, route, time.time(), docs
        )
        pipe = self.client.pipeline()
        pipe.set(
            keys.learning("answer", record.answer_id), json.dumps(asdict(record), ensure_ascii=False), ex=ANSWER_TTL_S
        )
        for doc in docs:
            pipe.sadd(keys.learning("cites", audience.tenant, doc), record.answer_id)
            pipe.expire(keys.learning("cites", audience.tenant, doc), ANSWER_TTL_S)
        pipe.execute()
        return record.answer_id

    def forget_document(self, tenant: str, scope: str, doc_id: str) -> int:
        """Delete every remembered or voted answer quoting the document, and the votes on them; returns how many."""
        doc = _cite(scope, doc_id)
        ids = {m.decode() for m in self.client.smembers(keys.learning("cites", tenant, doc))}
        for raw in self.client.hvals(keys.learning("voted", tenant)):
            record = AnswerRecord(**json.loads(raw))
            if doc in record.cited:
                ids.add(record.answer_id)
        self._delete_answers(tenant, ids)
        self.client.delete(keys.learning("cites", tenant, doc))
        return len(ids)

    def purge_private_votes(self, tenant: str, now: float | None = None) -> int:
        """Delete votes in private scopes older than the retention, with the answers voted on; returns how many."""
        if self.private_vote_retention_s is None:
            return 0
        cutoff = (now or time.time()) - self.private_vote_retention_s
        old = {v.answer_id for v in self.votes(tenant) if v.scope != TENANT_WIDE and v.at < cutoff}
        self._delete_answers(tenant, old)
        return len(old)

    def _delete_answers(self, tenant: str, ids: set[str]) -> None:
        if not ids:
            return
        votes = [f.decode() for f in self.client.hkeys(keys.learning("votes", tenant))]
        pipe = self.client.pipeline()
        pipe.delete(*(keys.learning("answer", i) for i in ids))
        pipe.hdel(keys.learning("voted", tenant), *ids)
        gone = [f for f in votes if f.split(":", 1)[0] in ids]
        if gone:
            pipe.hdel(keys.learning("votes", tenant), *gone)
        pipe.execute()

    def answer(self, answer_id: str) -> AnswerRecord | None:
        raw = self.client.get(keys.learning("answer", answer_id))
        return AnswerRecord(**json.loads(raw)) if raw else None

    def vote(self, answer_id: str, user: str, helpful: bool, comment: str = "") -> Vote | None:
        """Record a user's vote (their latest vote on an answer counts); None when the answer is unknown or expired.

        The voted answer is copied next to the votes without an expiry: it is training data from now on.
        """
        record = self.answer(answer_id)
        if record is None:
            return None
        vote = Vote(answer_id, record.tenant, record.scope, user, helpful, time.time(), comment)
        pipe = self.client.pipeline()
        pipe.hset(keys.learning("voted", record.tenant), answer_id, json.dumps(asdict(record), ensure_ascii=False))
        pipe.hset(keys.learning("votes", record.tenant), f"{answer_id}:{user}", json.dumps(asdict(vote)))
        pipe.execute()
        self._touch(record.tenant)
        # At most once an hour per tenant, votes past their retention go (a SET NX with a TTL is the hourly lock).
        if self.private_vote_retention_s is not None and self.client.set(
            keys.learning("vote-sweep", record.tenant), b"1", nx=True, ex=3600
        ):
            self.purge_private_votes(record.tenant)
        return vote

    def votes(self, tenant: str) -> list[Vote]:
        return sorted(
            (Vote(**json.loads(r)) for r in self.client.hvals(keys.learning("votes", tenant))), key=lambda v: v.at
        )

    def helpful_answers(self, tenant: str) -> list[AnswerRecord]:
        """Answers with more 👍 than 👎, oldest first."""
        score: dict[str, int] = {}
        for v in self.votes(tenant):
            score[v.answer_id] = score.get(v.answer_id, 0) + (1 if v.helpful else -1)
        records = [AnswerRecord(**json.loads(r)) for r in self.client.hvals(keys.learning("voted", tenant))]
        return sorted((r for r in records if score.get(r.answer_id, 0) > 0), key=lambda r: r.at)

    # --- change tracking -----------------------------------------------------------------------------------

    def _touch(self, tenant: str) -> None:
        self.client.set(keys.learning("changed", tenant), repr(time.time()))

    def mark_changed(self, tenant: str) -> None:
        """Note that a tenant's training inputs changed (e.g. a tenant-wide document was ingested)."""
        self._touch(tenant)

    def changed_tenants(self) -> list[str]:
        """Every tenant whose training inputs have ever changed (the nightly run checks which since it last ran)."""
        prefix = keys.learning("changed", "")
        found = self.client.scan_iter(match=prefix + "*", count=500)
        return sorted(k.decode()[len(prefix) :] for k in found)

    def changed_at(self, tenant: str) -> float:
        """When the tenant's training inputs last changed (0 when never)."""
        raw = self.client.get(keys.learning("changed", tenant))
        return float(raw) if raw else 0.0
