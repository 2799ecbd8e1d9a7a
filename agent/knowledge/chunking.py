"""Heading-aware chunking: passages of about `max_chars` that never straddle two sections.

Each chunk keeps its document title and section heading, which are embedded and indexed with the passage
(see `Chunk.embedding_text`): a passage that says "run the command below" is found by the heading above it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from agent.types import Chunk, ParsedDocument

_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])")


def pack(units: Iterable[str], max_chars: int, sep: str) -> list[str]:
    """Join consecutive units with `sep` into pieces of at most max_chars; a unit longer than that is cut hard.

    Shared by chunking (sentences, paragraphs) and by chat surfaces that must fit text into size-limited blocks.
    """
    pieces: list[str] = []
    current = ""
    for unit in units:
        while len(unit) > max_chars:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(unit[:max_chars])
            unit = unit[max_chars:]
        if current and len(current) + len(sep) + len(unit) > max_chars:
            pieces.append(current)
            current = unit
        else:
            current = f"{current}{sep}{unit}" if current else unit
    if current:
        pieces.append(current)
    return pieces


def _split_long(paragraph: str, max_chars: int) -> list[str]:
    """Split a paragraph longer than max_chars at sentence ends, then hard at max_chars."""
    if len(paragraph) <= max_chars:
        return [paragraph]
    return pack((s for s in _SENTENCE_END.split(paragraph) if s), max_chars, " ")


def chunk_document(doc: ParsedDocument, max_chars: int = 1000) -> list[Chunk]:
    """Merge each section's paragraphs greedily into chunks of at most max_chars characters."""
    chunks: list[Chunk] = []
    for section in doc.sections:
        paragraphs = [p.strip() for p in section.text.split("\n\n") if p.strip()]
        pieces = [piece for p in paragraphs for piece in _split_long(p, max_chars)]
        for text in pack(pieces, max_chars, "\n\n"):
            chunks.append(Chunk(len(chunks), doc.title, section.heading, text))
    return chunks
