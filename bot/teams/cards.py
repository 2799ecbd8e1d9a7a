"""The Adaptive Card of an answer in a channel: the route, numbered sources and 👍/👎 buttons.

The buttons are `Action.Execute` (Universal Actions, card version 1.4): Teams sends their click to the bot as
an `adaptiveCard/action` invoke carrying `verb` and `data`, which the handler stores as a vote. Card text is
plain Adaptive Card markdown, never HTML, so a `<term>` in a document is shown as written.
"""

from __future__ import annotations

from typing import Any

from bot.conversation import Answer

CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
FEEDBACK_VERB = "feedback"


def _text(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def _escape(text: str) -> str:
    """Keep document titles from being read as markdown links or lists."""
    return text.replace("[", "\\[").replace("]", "\\]")


def sources_card(answer: Answer) -> dict[str, Any]:
    """What a channel message adds under the answer's text (Teams draws no citations or feedback in channels):
    the route, the sources numbered as the text cites them with links, and 👍/👎."""
    reply = answer.reply
    body: list[dict[str, Any]] = [
        _text(f"Route: {answer.route_label} (confidence {reply.confidence:.2f})", isSubtle=True, size="Small")
    ]
    if answer.sources:
        body.append(_text("Sources", weight="Bolder", size="Small", spacing="Medium"))
        for n, hit in answer.sources:
            title = _escape(hit.title or hit.doc_id) + (f" › {_escape(hit.heading)}" if hit.heading else "")
            link = answer.links.get(hit.doc_id)
            where = f"[{_escape(hit.doc_id)}]({link})" if link else _escape(hit.doc_id)
            body.append(_text(f"{n}. {title} ({where})", size="Small", spacing="None"))
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
