"""An answer as Teams shows an AI app's message: markdown text whose [n] markers Teams turns into citation pills,
the citations themselves (a `https://schema.org/Message` entity with one `Claim` per source: title at most 80
characters, abstract at most 160, a link to where the document was shared), the "AI generated" label
(`additionalType: ["AIGeneratedContent"]`) and Teams' own 👍/👎 (`channelData.feedbackLoopEnabled`), whose
submissions arrive as `message/submitAction` invokes.

Teams renders citations, the label and the feedback buttons in personal and group chats, not in channels: there,
a small Adaptive Card keeps the route, the sources with links and the vote buttons.
"""

from __future__ import annotations

import html
import json
from typing import Any

from botbuilder.core import CardFactory
from botbuilder.schema import Activity, ActivityTypes, Entity

from bot.conversation import Answer
from bot.teams.cards import sources_card

TITLE_LIMIT = 80
ABSTRACT_LIMIT = 160
MAX_TEXT = 12_000
"""Teams refuses messages over about 28 KB; a longer answer is cut."""


class OpenEntity(Entity):  # type: ignore[misc]
    """An entity with properties of its own: botbuilder's `Entity` serializes only `type`."""

    _attribute_map = {**Entity._attribute_map, "additional_properties": {"key": "", "type": "{object}"}}  # noqa: RUF012

    def __init__(self, entity_type: str, **properties: Any) -> None:
        super().__init__(type=entity_type)
        self.additional_properties = properties


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def citation_entity(answer: Answer) -> OpenEntity:
    """The AI label and one citation per source, numbered as the text cites them."""
    citations = []
    for n, hit in answer.sources:
        title = f"{hit.title} › {hit.heading}" if hit.heading else hit.title or hit.doc_id
        appearance: dict[str, Any] = {
            "@type": "DigitalDocument",
            "name": _cut(title, TITLE_LIMIT),
            "abstract": _cut(hit.text, ABSTRACT_LIMIT),
            "keywords": [_cut(hit.doc_id, 28)],
        }
        link = answer.links.get(hit.doc_id)
        if link and link.startswith(("https://", "http://")):
            appearance["url"] = link
        citations.append({"@type": "Claim", "position": n, "appearance": appearance})
    return OpenEntity(
        "https://schema.org/Message",
        **{"@type": "Message", "@context": "https://schema.org", "@id": "", "additionalType": ["AIGeneratedContent"]},
        citation=citations,
    )


def answer_text(answer: Answer, *, route_line: bool) -> str:
    """The answer as Teams markdown (HTML-escaped: a `<tag>` in a document shows as written)."""
    text = answer.text if len(answer.text) <= MAX_TEXT else answer.text[:MAX_TEXT] + " …"
    text = html.escape(text, quote=False)
    if route_line:
        text += f"\n\n*{answer.route_label} · confidence {answer.reply.confidence:.2f}*"
    return text


def answer_activity(answer: Answer, *, channel: bool) -> Activity:
    """The final answer message: text, citations, AI label; the feedback loop, or in a channel the card."""
    message = Activity(
        type=ActivityTypes.message,
        text=answer_text(answer, route_line=not channel),
        text_format="markdown",
        entities=[citation_entity(answer)],
        summary=_cut(answer.text, 120),  # shown in notifications
    )
    if channel:
        message.attachments = [CardFactory.adaptive_card(sources_card(answer))]
    else:
        message.channel_data = {"feedbackLoopEnabled": True}
    return message


def stream_entity(stream_type: str, sequence: int | None, stream_id: str | None) -> OpenEntity:
    """The `streaminfo` entity of Teams' streaming protocol (no sequence on the final message)."""
    props: dict[str, Any] = {"streamType": stream_type}
    if stream_id:
        props["streamId"] = stream_id
    if sequence is not None:
        props["streamSequence"] = sequence
    return OpenEntity("streaminfo", **props)


def read_feedback(value: object) -> tuple[bool, str] | None:
    """(helpful, comment) from a `message/submitAction` invoke's value; None when it is not Teams' feedback."""
    if not isinstance(value, dict) or value.get("actionName") != "feedback":
        return None
    action = value.get("actionValue")
    if not isinstance(action, dict) or action.get("reaction") not in ("like", "dislike"):
        return None
    comment = ""
    feedback = action.get("feedback")
    if isinstance(feedback, str) and feedback.strip():
        try:
            parsed = json.loads(feedback)
            comment = str(parsed.get("feedbackText") or "") if isinstance(parsed, dict) else feedback
        except json.JSONDecodeError:
            comment = feedback
    return action["reaction"] == "like", comment[:2000]
