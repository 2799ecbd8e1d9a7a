"""Heading-aware chunking: passages of about `max_chars` that never straddle two sections.

Each chunk keeps its document title and section heading, which are embedded and indexed with the passage
(see `Chunk.embedding_text`): a passage that says "run the command below" is found by the heading above it.
"""

from __future__ import annotations

import re

from agent.types import Chunk, ParsedDocument

_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])")


def _split_long(paragraph: str, max_chars: int) -> list[str]:
    """Split a paragraph longer than max_chars at sentence ends, then hard at max_chars."""
    if len(paragraph) <= max_chars:
        return [paragraph]
    pieces: list[str] = []
    current = ""
    for sentence in (s for s in _SENTENCE_END.split(paragraph) if s):
        while len(sentence) > max_chars:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(sentence[:max_chars])
            sentence = sentence[max_chars:]
        if current and len(current) + 1 + len(sentence) > max_chars:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}" if current else sentence
    if current:
        pieces.append(current)
    return pieces


def chunk_document(doc: ParsedDocument, max_chars: int = 1000) -> list[Chunk]:
    """Merge each section's paragraphs greedily into chunks of at most max_chars characters."""
    chunks: list[Chunk] = []
    for section in doc.sections:
        paragraphs = [p.strip() for p in section.text.split("\n\n") if p.strip()]
        pieces = [piece for p in paragraphs for piece in _split_long(p, max_chars)]
        current: list[str] = []
        size = 0
        for piece in pieces:
            if current and size + 2 + len(piece) > max_chars:
                chunks.append(Chunk(len(chunks), doc.title, section.heading, "\n\n".join(current)))
                current, size = [], 0
            current.append(piece)
            size += len(piece) + (2 if size else 0)
        if current:
            chunks.append(Chunk(len(chunks), doc.title, section.heading, "\n\n".join(current)))
    return chunks
