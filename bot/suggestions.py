"""Suggested prompts for a new conversation with the bot, from what the asker can see, in their language.

Slack shows up to four of them when a person opens the bot's own chat (`assistant.threads.setSuggestedPrompts`).
They are built from the terms taught in this audience (the tenant's and this scope's) and from the titles of the
documents visible here, so that every suggestion is a question the bot can answer from its knowledge.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.language import phrase
from agent.learning import LearningStore
from agent.types import TENANT_WIDE, Audience, DocumentInfo

MAX_PROMPTS = 4
TITLE_CHARS = 75
"""Slack cuts a suggested prompt's title; the message itself may be longer."""


@dataclass(frozen=True)
class Suggestion:
    title: str
    """What the button shows."""
    message: str
    """What is sent as the person's question when they pick it."""


def _short(text: str) -> str:
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1].rstrip() + "…"


def suggestions(
    learning: LearningStore, documents: list[DocumentInfo], audience: Audience, language: str
) -> list[Suggestion]:
    """Up to four questions: terms taught here (newest first), then the documents visible here, then what the bot
    does. Only what this audience may see is used: tenant-wide items and this audience's own scopes."""
    visible = {*audience.visible_scopes, TENANT_WIDE}
    out: list[Suggestion] = []
    terms = [i for i in learning.curated(audience.tenant) if i.kind == "term" and i.scope in visible]
    for item in sorted(terms, key=lambda i: -i.at)[:2]:
        question = phrase("suggest_term", language, term=item.prompt)
        out.append(Suggestion(_short(question), question))
    for doc in sorted(documents, key=lambda d: -d.updated_at):
        if len(out) >= MAX_PROMPTS - 1:
            break
        question = phrase("suggest_doc", language, doc=doc.title or doc.doc_id)
        out.append(Suggestion(_short(question), question))
    out.append(Suggestion(phrase("suggest_help_title", language), phrase("suggest_help", language)))
    return out[:MAX_PROMPTS]
