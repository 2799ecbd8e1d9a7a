"""Block Kit rendering of answers: text, route, numbered sources with links, and 👍 / 👎 buttons.

Slack's mrkdwn treats `&`, `<` and `>` as control characters, so document text is escaped (keeping the `> `
quote markers the extractive answers start lines with); a section holds at most 3,000 characters.
"""

from __future__ import annotations

from typing import Any

from agent.knowledge.chunking import pack
from bot.assistant import Answer

VOTE_UP = "expertbot_vote_up"
VOTE_DOWN = "expertbot_vote_down"
SECTION_LIMIT = 3000
Block = dict[str, Any]


def escape(text: str) -> str:
    """Escape mrkdwn control characters (https://api.slack.com/reference/surfaces/formatting#escaping)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


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


def answer_blocks(answer: Answer, *, question: str | None = None, asker: str | None = None) -> list[Block]:
    """The answer message: optional question line, answer text, route, sources with links, vote buttons."""
    reply = answer.reply
    blocks: list[Block] = []
    if question:
        who = f"<@{asker}> asked" if asker else "Question"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"{who}: {escape(question)}"}]})
    blocks.extend(_sections(_escape_answer(reply.text)))
    route = f"*{escape(answer.route_label)}* · confidence {reply.confidence:.2f}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": route}]})
    if reply.sources:
        lines = []
        for i, hit in enumerate(reply.sources, 1):
            label = f"{hit.title} › {hit.heading}" if hit.heading else hit.title
            link = answer.links.get(hit.doc_id)
            where = _link(link, hit.doc_id) if link else escape(hit.doc_id)
            lines.append(f"[{i}] {escape(label)} ({where})")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "*Sources*\n" + "\n".join(lines)}})
    blocks.append(
        {
            "type": "actions",
            "block_id": "expertbot_feedback",
            "elements": [
                _button("👍 Helpful", VOTE_UP, answer.answer_id),
                _button("👎 Not helpful", VOTE_DOWN, answer.answer_id),
            ],
        }
    )
    return blocks


def _button(label: str, action_id: str, value: str) -> Block:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": label, "emoji": True},
        "action_id": action_id,
        "value": value,
    }


def answer_fallback(answer: Answer) -> str:
    """The plain text notifications and screen readers show."""
    text = answer.reply.text
    return text if len(text) <= 300 else text[:297] + "..."
