"""A PDF's text as the reader sees it: title, headings from the font sizes, and paragraphs whose hard line
wraps are re-flowed, so that no sentence ends at a line end ("... reikia 36 GPU" / "naudojant tik 2").

pypdf reports each text run with its font size and position (`visitor_text`); runs on one baseline make a
line, the size that carries most characters is the body text, and larger lines are headings. Lines of a
paragraph are joined until a vertical gap wider than the usual line spacing, a heading, or a page break after
a finished sentence.
"""

from __future__ import annotations

import itertools
import re
import statistics
from collections import Counter
from dataclasses import dataclass

from pypdf import PageObject, PdfReader

HEADING_RATIO = 1.15
"""A line set this much larger than the body text is a heading."""
MAX_HEADING_CHARS = 120
_SENTENCE_END = (".", "!", "?", ":", "。", "！", "？", "।", "॥", "…")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_PAGE_NUMBER = re.compile(r"^(?:page\s*)?\d{1,4}(?:\s*(?:/|of)\s*\d{1,4})?$", re.IGNORECASE)


@dataclass
class Line:
    text: str
    size: float
    y: float
    page: int


def _page_lines(page: PageObject, number: int) -> list[Line]:
    runs: list[Line] = []

    def visit(text: str, cm: list[float], tm: list[float], font: object, size: float) -> None:
        if not text.strip():
            return
        y = tm[5] * cm[3] + cm[5]
        height = abs(size * (tm[3] or 1.0) * (cm[3] or 1.0))
        if runs and abs(runs[-1].y - y) < 1.0:
            runs[-1].text += text
            runs[-1].size = max(runs[-1].size, height)
        else:
            runs.append(Line(text, height, y, number))

    page.extract_text(visitor_text=visit)
    for run in runs:
        run.text = " ".join(run.text.split())
    return [r for r in runs if r.text and not _PAGE_NUMBER.match(r.text)]


def read_lines(reader: PdfReader) -> list[Line]:
    """Every visual line of every readable page, top to bottom, with its font size and baseline."""
    lines: list[Line] = []
    for number, page in enumerate(reader.pages):
        try:
            lines.extend(_page_lines(page, number))
        except Exception:  # one unreadable page should not cost the rest of the document
            continue
    return lines


def _join(left: str, right: str) -> str:
    """Join two wrapped lines: no space between CJK characters or after a hyphenated word break."""
    if not left:
        return right
    if (_CJK.match(left[-1]) and _CJK.match(right[0])) or (left.endswith("-") and right[:1].islower()):
        return left + right
    return f"{left} {right}"


def layout(lines: list[Line]) -> tuple[str, list[tuple[int, str]], list[list[str]]]:
    """(title from the first large line, headings as (level, text), paragraphs grouped under each heading).

    Returned as parallel lists: `blocks[i]` holds the paragraphs after `headings[i - 1]` (block 0: before any).
    """
    if not lines:
        return "", [], [[]]
    weights: Counter[float] = Counter()
    for line in lines:
        weights[round(line.size, 1)] += len(line.text)
    body = weights.most_common(1)[0][0]
    heading_sizes = sorted(
        {round(ln.size, 1) for ln in lines if ln.size >= body * HEADING_RATIO and len(ln.text) <= MAX_HEADING_CHARS},
        reverse=True,
    )
    gaps = [a.y - b.y for a, b in itertools.pairwise(lines) if a.page == b.page and 0 < a.y - b.y < body * 3]
    spacing = statistics.median(gaps) if gaps else body * 1.2
    title = ""
    headings: list[tuple[int, str]] = []
    blocks: list[list[str]] = [[]]
    paragraph = ""
    previous: Line | None = None
    for line in lines:
        size = round(line.size, 1)
        if size in heading_sizes and len(line.text) <= MAX_HEADING_CHARS:
            if paragraph:
                blocks[-1].append(paragraph)
                paragraph = ""
            wrapped = previous is not None and round(previous.size, 1) == size and previous.page == line.page
            if wrapped and title and not headings and blocks == [[]]:
                title = _join(title, line.text)  # a title wrapped over two lines
            elif wrapped and headings and blocks[-1] == []:
                level, text = headings[-1]  # a heading wrapped over two lines
                headings[-1] = (level, _join(text, line.text))
            elif not title and line.page == 0 and size == heading_sizes[0]:
                title = line.text
            else:
                headings.append((heading_sizes.index(size) + 1, line.text))
                blocks.append([])
            previous = line
            continue
        new_paragraph = (
            previous is None
            or (previous.page == line.page and previous.y - line.y > spacing * 1.4)
            or (previous.page != line.page and previous.text.endswith(_SENTENCE_END))
        )
        if previous is not None and round(previous.size, 1) in heading_sizes:
            new_paragraph = True
        if new_paragraph and paragraph:
            blocks[-1].append(paragraph)
            paragraph = ""
        paragraph = _join(paragraph, line.text)
        previous = line
    if paragraph:
        blocks[-1].append(paragraph)
    return title, headings, blocks
