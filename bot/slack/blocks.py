"""Block Kit rendering of answers: text, route, numbered sources with links, and Slack's feedback buttons.

Slack's mrkdwn treats `&`, `<` and `>` as control characters, so document text is escaped (keeping the `> `
quote markers the extractive answers start lines with); a section holds at most 3,000 characters.

A streamed answer's text is already in the message when the stream stops: `footer_blocks` is what
`chat.stopStream` adds under it (route, sources, 👍/👎). `answer_blocks` is the whole message, for the
post-then-update fallback and for `/ask`.
"""

from __future__ import annotations

from typing import Any

from agent.knowledge.chunking import pack
from bot.conversation import Answer

VOTE_UP = "expertbot_vote_up"
VOTE_DOWN = "expertbot_vote_down"
"""The 👍/👎 buttons of messages sent before the feedback buttons (still answered)."""
FEEDBACK = "expertbot_feedback"
"""The `feedback_buttons` element's action id; its buttons' values are "up:<answer id>" and "down:<answer id>"."""
SECTION_LIMIT = 3000
Block = dict[str, Any]


def escape(text: str) -> str:
    """Escape mrkdwn control characters (https://api.slack.com/reference/surfaces/formatting#escaping)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_markdown(text: str) -> str:
    """For streamed `markdown_text`: no `<...>` can become a mention or link; `>` stays a quote marker."""
    return text.replace("&", "&amp;").replace("<", "&lt;")


def _escape_answer(text: str) -> str:
    lines = []
    for line in text.splitlines():
        quoted = line.startswith("> ")
        body = escape(line[2:] if quoted else line)
        lines.append(f"> {body}" if quoted else body)
    return "\n".join(lines)


def _link(url: str, label: str) -> str:
    safe = escape(label).replace("|", "¦")
    return f"<{url}|{safe}>" if url.startswith(("https://", "http://")) else safe


def _sections(text: str) -> list[Block]:
    """Split long text into sections at line ends, each within Slack's limit."""
    chunks = pack(text.splitlines(), SECTION_LIMIT, "\n")
    return [{"type": "section", "text": {"type": "mrkdwn", "text": c}} for c in chunks if c.strip()]


def footer_blocks(answer: Answer) -> list[Block]:
    """Under the answer's text: the route, the sources (numbered as the text cites them), the feedback buttons."""
    reply = answer.reply
    route = f"*{escape(answer.route_label)}* · confidence {reply.confidence:.2f}"
    blocks: list[Block] = [{"type": "context", "elements": [{"type": "mrkdwn", "text": route}]}]
    if answer.sources:
        lines = []
        for n, hit in answer.sources:
            label = f"{hit.title} › {hit.heading}" if hit.heading else hit.title
            link = answer.links.get(hit.doc_id)
            where = _link(link, hit.doc_id) if link else escape(hit.doc_id)
            lines.append(f"[{n}] {escape(label)} ({where})")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "*Sources*\n" + "\n".join(lines)}})
    blocks.append(feedback_block(answer.answer_id))
    return blocks


def feedback_block(answer_id: str) -> Block:
    """Slack's own 👍/👎 (`context_actions` with `feedback_buttons`); a click arrives as a block action."""
    return {
        "type": "context_actions",
        "block_id": f"expertbot_feedback_{answer_id}"[:255],
        "elements": [
            {
                "type": "feedback_buttons",
                "action_id": FEEDBACK,
                "positive_button": {
                    "text": {"type": "plain_text", "text": "Helpful"},
                    "accessibility_label": "Mark this answer as helpful",
                    "value": f"up:{answer_id}",
                },
                "negative_button": {
                    "text": {"type": "plain_text", "text": "Not helpful"},
                    "accessibility_label": "Mark this answer as not helpful",
                    "value": f"down:{answer_id}",
                },
            }
        ],
    }


def read_feedback(action: dict[str, Any]) -> tuple[str, bool] | None:
    """(answer id, helpful) from a feedback or legacy vote action; None when it is not one of ours."""
    action_id, value = action.get("action_id"), str(action.get("value") or "")
    if action_id == FEEDBACK:
        kind, _, answer_id = value.partition(":")
        return (answer_id, kind == "up") if kind in ("up", "down") and answer_id else None
    if action_id in (VOTE_UP, VOTE_DOWN) and value:
        return value, action_id == VOTE_UP
    return None


def answer_blocks(answer: Answer, *, question: str | None = None, asker: str | None = None) -> list[Block]:
    """The whole answer message: optional question line, answer text, then the footer."""
    blocks: list[Block] = []
    if question:
        who = f"<@{asker}> asked" if asker else "Question"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"{who}: {escape(question)}"}]})
    blocks.extend(_sections(_escape_answer(answer.text)))
    return blocks + footer_blocks(answer)


def answer_fallback(answer: Answer) -> str:
    """The plain text notifications and screen readers show."""
    text = answer.text
    return text if len(text) <= 300 else text[:297] + "..."
