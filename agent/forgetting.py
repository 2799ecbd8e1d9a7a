"""Forgetting a document everywhere it left a trace: its passages in Milvus, the remembered and voted answers that
quote it (Redis), and the conversations that cited it (the conversation memory). Every `forget` goes through here:
the chat command, the worker's forget job and the CLI."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.learning import LearningStore
from agent.memory import forget_in_memory
from agent.types import Audience

log = logging.getLogger(__name__)


class _Forgets(Protocol):
    def forget(self, audience: Audience, doc_id: str) -> int: ...


@dataclass(frozen=True)
class Forgotten:
    passages: int
    answers: int
    conversations: int


def forget_document(
    store: _Forgets, learning: LearningStore, memory_path: Path, audience: Audience, doc_id: str
) -> Forgotten:
    """Remove the document's passages, the answers quoting it and the conversations citing it."""
    passages = store.forget(audience, doc_id)
    answers = learning.forget_document(audience.tenant, audience.scope, doc_id)
    conversations = forget_in_memory(memory_path, audience.tenant, audience.scope, doc_id)
    log.info(
        "forgot %s in %s/%s: %d passages, %d answers, %d conversations",
        doc_id, audience.tenant, audience.scope, passages, answers, conversations,
    )  # fmt: skip
    return Forgotten(passages, answers, conversations)
