"""Turning LangChain messages into chat-template input, and cutting generated text at stop strings."""

from __future__ import annotations

from langchain_core.messages import BaseMessage, ChatMessage

_ROLES = {"system": "system", "human": "user", "ai": "assistant"}


def to_chat(messages: list[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages as the role/content dicts a Hugging Face chat template expects."""
    out = []
    for m in messages:
        role = m.role if isinstance(m, ChatMessage) else _ROLES.get(m.type)
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"Phi-3's chat template has no place for a {m.type!r} message")
        out.append({"role": role, "content": m.text})
    return out


def cut_at_stop(text: str, stop: list[str] | None, *, hold_back: bool = False) -> tuple[str, str, bool]:
    """Split text at the first stop string: (text to emit, text held back, whether a stop string was reached).

    With `hold_back` (streaming) a tail that could be the start of a stop string is held back rather than
    emitted, because the next piece may complete it; the caller prepends it to that piece.
    """
    if not stop:
        return text, "", False
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    if cuts:
        return text[: min(cuts)], "", True
    if not hold_back:
        return text, "", False
    keep = max((n for s in stop for n in range(len(s) - 1, 0, -1) if text.endswith(s[:n])), default=0)
    return text[: len(text) - keep], text[len(text) - keep :], False
