"""Suggested prompts for a new conversation with the bot, from what the asker can see, in their language.

Slack shows up to four of them when a person opens the bot's own chat (`assistant.threads.setSuggestedPrompts`).
They are built from the terms taught in this audience (the tenant's and this scope's) and from the titles of the
documents visible here, so that every suggestion is a question the bot can answer from its knowledge.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.learning import LearningStore
from agent.types import TENANT_WIDE, Audience, DocumentInfo

MAX_PROMPTS = 4
TITLE_CHARS = 75
"""Slack cuts a suggested prompt's title; the message itself may be longer."""

# (what does <term> mean?, what does <document> say?, what can you do?, its title)
_TEMPLATES: dict[str, tuple[str, str, str, str]] = {
    "en": ("What does {term} mean?", "What are the key points of {doc}?", "What can you help me with?",
           "What can you do?"),
    "de": ("Was bedeutet {term}?", "Was sind die wichtigsten Punkte in {doc}?", "Wobei kannst du mir helfen?",
           "Was kannst du?"),
    "fr": ("Que signifie {term} ?", "Quels sont les points clés de {doc} ?", "En quoi peux-tu m'aider ?",
           "Que sais-tu faire ?"),
    "es": ("¿Qué significa {term}?", "¿Cuáles son los puntos clave de {doc}?", "¿En qué me puedes ayudar?",
           "¿Qué puedes hacer?"),
    "it": ("Cosa significa {term}?", "Quali sono i punti chiave di {doc}?", "In cosa puoi aiutarmi?",
           "Cosa sai fare?"),
    "nl": ("Wat betekent {term}?", "Wat zijn de belangrijkste punten van {doc}?", "Waarmee kun je me helpen?",
           "Wat kun je?"),
    "pt": ("O que significa {term}?", "Quais são os pontos principais de {doc}?", "Em que você pode me ajudar?",
           "O que você sabe fazer?"),
}  # fmt: skip


@dataclass(frozen=True)
class Suggestion:
    title: str
    """What the button shows."""
    message: str
    """What is sent as the person's question when they pick it."""


def language_of_locale(locale: str | None) -> str:
    """ "de-DE" -> "de"; a language without templates falls back to English."""
    code = (locale or "en").replace("_", "-").split("-", 1)[0].lower()
    return code if code in _TEMPLATES else "en"


def _short(text: str) -> str:
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1].rstrip() + "…"


def suggestions(
    learning: LearningStore, documents: list[DocumentInfo], audience: Audience, language: str
) -> list[Suggestion]:
    """Up to four questions: terms taught here (newest first), then the documents visible here, then what the bot
    does. Only what this audience may see is used: tenant-wide items and this audience's own scopes."""
    term_q, doc_q, help_q, help_title = _TEMPLATES.get(language, _TEMPLATES["en"])
    visible = {*audience.visible_scopes, TENANT_WIDE}
    out: list[Suggestion] = []
    terms = [i for i in learning.curated(audience.tenant) if i.kind == "term" and i.scope in visible]
    for item in sorted(terms, key=lambda i: -i.at)[:2]:
        question = term_q.format(term=item.prompt)
        out.append(Suggestion(_short(question), question))
    for doc in sorted(documents, key=lambda d: -d.updated_at):
        if len(out) >= MAX_PROMPTS - 1:
            break
        question = doc_q.format(doc=doc.title or doc.doc_id)
        out.append(Suggestion(_short(question), question))
    out.append(Suggestion(help_title, help_q))
    return out[:MAX_PROMPTS]
