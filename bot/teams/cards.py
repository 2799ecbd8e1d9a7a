"""Adaptive Cards for answers: the text, the route, numbered sources and 👍/👎 buttons.

The buttons are `Action.Execute` (Universal Actions, card version 1.4): Teams sends their click to the bot as
an `adaptiveCard/action` invoke carrying `verb` and `data`, which the handler stores as a vote. Card text is
plain Adaptive Card markdown, never HTML, so a `<term>` in a document is shown as written.
"""

from __future__ import annotations

from typing import Any

from bot.assistant import Answer

CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
FEEDBACK_VERB = "feedback"
MAX_CARD_TEXT = 12_000
"""Teams refuses messages over about 28 KB; an answer longer than this is cut (the sources still follow)."""


def _text(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def _escape(text: str) -> str:
    """Keep document titles from being read as markdown links or lists."""
    return text.replace("[", "\\[").replace("]", "\\]")


def answer_card(answer: Answer) -> dict[str, Any]:
    """The card for one answer; quoted passages (lines starting with '> ') are set apart as quotes."""
    reply = answer.reply
    text = reply.text if len(reply.text) <= MAX_CARD_TEXT else reply.text[:MAX_CARD_TEXT] + " …"
    body: list[dict[str, Any]] = []
    for line in (ln.strip() for ln in text.splitlines()):
        if not line:
            continue
        if line.startswith(">"):
            quote = _text(line.lstrip("> ").strip())
            body.append({"type": "Container", "style": "emphasis", "items": [quote]})
        else:
            body.append(_text(line))
    body.append(_text(f"Route: {answer.route_label} (confidence {reply.confidence:.2f})", isSubtle=True, size="Small"))
    if reply.sources:
        body.append(_text("Sources", weight="Bolder", size="Small", spacing="Medium"))
        for i, hit in enumerate(reply.sources, 1):
            title = _escape(hit.title or hit.doc_id) + (f" › {_escape(hit.heading)}" if hit.heading else "")
            link = answer.links.get(hit.doc_id)
            where = f"[{_escape(hit.doc_id)}]({link})" if link else _escape(hit.doc_id)
            body.append(_text(f"{i}. {title} ({where})", size="Small", spacing="None"))
    return {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.4",
        "body": body,
        "actions": [
            _vote_action(answer.answer_id, True, "👍 Helpful"),
            _vote_action(answer.answer_id, False, "👎 Not helpful"),
        ],
    }


def _vote_action(answer_id: str, helpful: bool, title: str) -> dict[str, Any]:
    return {
        "type": "Action.Execute",
        "title": title,
        "verb": FEEDBACK_VERB,
        "data": {"answer_id": answer_id, "helpful": helpful},
    }


def read_vote(data: object) -> tuple[str, bool] | None:
    """(answer id, helpful) from a button's data; None when it is not one of our votes (or was tampered with)."""
    if not isinstance(data, dict):
        return None
    answer_id, helpful = data.get("answer_id"), data.get("helpful")
    if not isinstance(answer_id, str) or not answer_id or not isinstance(helpful, bool):
        return None
    return answer_id, helpful
