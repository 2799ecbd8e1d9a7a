"""The chat core: `answer(request) -> reply`, the one entry point every surface (console, Slack, Teams) calls.

For now every question takes the retrieval route and is answered with the best passages and their citations;
the routing agent and the domain model plug in here without any surface changing.
"""

from __future__ import annotations

import time

from agent.knowledge.service import Knowledge
from agent.types import ChatReply, ChatRequest, Hit

MAX_QUESTION_CHARS = 4000
_SNIPPET_CHARS = 400


def _snippet(hit: Hit) -> str:
    text = " ".join(hit.text.split())
    return text if len(text) <= _SNIPPET_CHARS else text[: _SNIPPET_CHARS - 1].rstrip() + "…"


class ChatCore:
    def __init__(self, knowledge: Knowledge, *, k: int = 3) -> None:
        self.knowledge = knowledge
        self.k = k

    def answer(self, request: ChatRequest) -> ChatReply:
        question = request.text.strip()[:MAX_QUESTION_CHARS]
        if not question:
            return ChatReply(
                "Ask me a question about the documents shared here, or share a document with me.",
                route="smalltalk",
                confidence=1.0,
                why="empty message",
            )
        started = time.perf_counter()
        hits = self.knowledge.search(request.audience, question, k=self.k)
        search_ms = round(1000 * (time.perf_counter() - started), 1)
        if not hits:
            return ChatReply(
                "I found nothing about that in the documents shared here. Share the document that has the "
                "answer with me and ask again.",
                route="retrieve",
                confidence=0.0,
                why="no document is visible from this conversation",
                timings_ms={"search": search_ms},
            )
        lines = ["Here is what the shared documents say:"]
        lines += [f"[{i}] {_snippet(h)}" for i, h in enumerate(hits, 1)]
        return ChatReply(
            "\n\n".join(lines),
            route="retrieve",
            confidence=1.0,
            why="answered from the best passages",
            sources=hits,
            timings_ms={"search": search_ms},
        )
