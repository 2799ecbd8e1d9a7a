"""Heading-aware chunking: passages of about `max_chars` that never straddle two sections.

Each chunk keeps its document title and section heading, which are embedded and indexed with the passage
(see `Chunk.embedding_text`): a passage that says "run the command below" is found by the heading above it.
BM25 also indexes the document's lead sentence with every passage (`Chunk.search_text`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from agent.sentences import looks_like_code, looks_like_heading, split_sentences
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


LEAD_CHARS = 200
LEAD_SEARCH_CHARS = 4000


def lead_sentence(doc: ParsedDocument) -> str:
    """The document's first sentence of prose: what the whole page is about ("This sample fine-tunes Phi-3-mini
    on TruthfulQA's data"), which a short passage far below it ("Requirements: ... Azure Compute A100") no
    longer says. Empty when the document opens with no such sentence."""
    opening = ""
    for section in doc.sections:  # the first few paragraphs, without joining a whole book
        opening = f"{opening}\n\n{section.text}"
        if len(opening) >= LEAD_SEARCH_CHARS:
            break
    for sentence in split_sentences(opening[:LEAD_SEARCH_CHARS]):
        if len(sentence) >= 30 and not looks_like_heading(sentence) and not looks_like_code(sentence):
            return sentence[:LEAD_CHARS]
    return ""


def chunk_document(doc: ParsedDocument, max_chars: int = 1000) -> list[Chunk]:
    """Merge each section's paragraphs greedily into chunks of at most max_chars characters."""
    chunks: list[Chunk] = []
    lead = lead_sentence(doc)
    for section in doc.sections:
        paragraphs = [p.strip() for p in section.text.split("\n\n") if p.strip()]
        pieces = [piece for p in paragraphs for piece in _split_long(p, max_chars)]
        for text in pack(pieces, max_chars, "\n\n"):
            context = lead if lead and lead not in " ".join(text.split()) else ""
            chunks.append(Chunk(len(chunks), doc.title, section.heading, text, context))
    return chunks
