"""A Word document's text read as a stream: paragraphs, headings and table rows in reading order, straight from
the package's XML, one block at a time.

Why not python-docx: it builds the whole document tree first, about 14 times the XML in memory, so a long
handbook had to be refused to keep a worker's memory bounded. Here lxml parses `word/document.xml` as it is
inflated, and every paragraph or table row is dropped from the tree once read: memory follows the longest row,
not the document. What is read matches python-docx's `paragraph.text` and the table reading it replaced: runs,
tabs and breaks; hyperlinks and tracked insertions too, deletions not; a cell merged across columns once, a cell
merged down the rows repeated on each row, so every row stays readable on its own. Footnotes and endnotes (which
python-docx did not read) follow the paragraph or table that refers to them, as paragraphs of their own: they
often hold the exception or the figure a question asks about, and next to their reference they keep its section.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Generator
from dataclasses import dataclass
from posixpath import dirname, join, normpath
from typing import IO, Any

from lxml import etree

from agent.knowledge.word_package import WordLimits

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}Relationship"
_DC_TITLE = "{http://purl.org/dc/elements/1.1/}title"
_HEADING = re.compile(r"heading (\d)", re.IGNORECASE)
_BODY_PARTS = {f"{_W}body", f"{_W}sdtContent"}
"""Where a top-level paragraph or table sits: the body, or a content control in it."""
_SKIP = {f"{_W}{tag}" for tag in ("p", "tbl", "txbxContent", "del", "moveFrom")}
"""Not part of a paragraph's own text: nested paragraphs and tables (text boxes), deleted or moved-away runs."""
_PARSER_OPTIONS: dict[str, Any] = {"resolve_entities": False, "no_network": True, "huge_tree": False}
_NOTE_KINDS = ("footnote", "endnote")
_NOTE_REFERENCES = tuple(f"{_W}{kind}Reference" for kind in _NOTE_KINDS)


class TooLarge(ValueError):
    """The document holds more than one upload may (the message says what, and how much is allowed)."""


@dataclass(frozen=True)
class Block:
    """A heading (its level; 0 for the "Title" style), a paragraph, or a table (one line per row)."""

    text: str
    level: int | None = None


def read_blocks(archive: zipfile.ZipFile, limits: WordLimits) -> Generator[Block, None, None]:
    """The document's blocks in reading order; raises TooLarge as soon as one of `limits` is passed."""
    main = _main_part(archive)
    parts = _related_parts(archive, main)
    levels = _heading_levels(archive, parts.get("styles") or join(dirname(main), "styles.xml"))
    notes, note_markup, note_text = _notes(archive, parts, limits)
    rows: list[str] = []
    merged: dict[int, str] = {}  # grid column -> text of the cell merged down from above
    in_table: list[str] = []  # the notes the rows of the table being read refer to
    tags = (f"{_W}p", f"{_W}tr", f"{_W}tbl")
    with archive.open(main) as raw:
        stream = _Metered(raw, limits, note_markup, note_text)
        for _, element in etree.iterparse(stream, events=("end",), tag=tags, **_PARSER_OPTIONS):
            parent = element.getparent()
            top_level = parent is not None and parent.tag in _BODY_PARTS
            block: Block | None = None
            after: list[str] = []
            chars = 0
            if element.tag == f"{_W}p" and top_level:
                block = Block(_paragraph_text(element), levels.get(_style_of(element)))
                chars = len(block.text)
                after = _referred(element, notes)
            elif element.tag == f"{_W}tr" and _top_level_table(parent):
                rows.append(_row_text(element, merged))
                chars = len(rows[-1])
                in_table += _referred(element, notes)
            elif element.tag == f"{_W}tbl" and top_level:
                block, rows, merged = Block("\n".join(rows)), [], {}
                after, in_table = in_table, []
            else:
                continue  # a paragraph or a row inside a table cell: read with its row
            _drop(element)
            stream.block_read(chars)
            if block is not None:
                yield block
                yield from (Block(text) for text in after)


def _notes(
    archive: zipfile.ZipFile, parts: dict[str, str], limits: WordLimits
) -> tuple[dict[tuple[str, str], str], int, int]:
    """Footnote and endnote texts by (kind, id), read before the body so each can follow its reference, and the
    XML and text read for them (counted against the limits with the body's). Separators and empty notes are left
    out."""
    notes: dict[tuple[str, str], str] = {}
    markup = chars = 0
    for kind in _NOTE_KINDS:
        part = parts.get(f"{kind}s")
        if part is None or part not in archive.namelist():
            continue
        with archive.open(part) as raw:
            stream = _Metered(raw, limits, markup, chars)
            for _, element in etree.iterparse(stream, events=("end",), tag=f"{_W}{kind}", **_PARSER_OPTIONS):
                text = " ".join(" ".join(_paragraph_text(p) for p in element.iterfind(f"{_W}p")).split())
                kept = bool(text) and element.get(f"{_W}type") in (None, "normal")
                if kept:
                    notes[(kind, str(element.get(f"{_W}id", "")))] = text
                _drop(element)
                stream.block_read(len(text) if kept else 0)
            markup, chars = stream.total, stream.text
    return notes, markup, chars


def _referred(element: Any, notes: dict[tuple[str, str], str]) -> list[str]:
    """The texts of the notes `element` refers to, in the order it refers to them, taken out of `notes`: a note
    is given once, at its first reference (Word gives each reference a note of its own; a file that refers to
    one note over and over must not multiply its text)."""
    found = []
    for reference in element.iter(*_NOTE_REFERENCES):
        kind = str(reference.tag)[len(_W) : -len("Reference")]
        if text := notes.pop((kind, str(reference.get(f"{_W}id", ""))), ""):
            found.append(text)
    return found


class _Metered:
    """The part's XML as lxml reads it, counted: more than `limits` allow in all, or since the last block was
    read, stops the parse from inside the read (lxml passes the exception on). The text of the blocks read is
    counted here too, so every part of a document is held to one text limit."""

    def __init__(self, raw: IO[bytes], limits: WordLimits, markup: int = 0, text: int = 0) -> None:
        self._raw, self._limits = raw, limits
        self.total = self._mark = markup  # XML and text of other parts of the same document, read before
        self.text = text

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.total += len(data)
        if self.total > self._limits.markup_bytes:
            raise TooLarge(f"more than {_mb(self._limits.markup_bytes)} of text markup")
        if self.total - self._mark > self._limits.block_bytes:
            raise TooLarge(f"a paragraph or table row of more than {_mb(self._limits.block_bytes)} of text markup")
        return data

    def block_read(self, chars: int) -> None:
        """A block of `chars` characters of text was read: the next block's XML is counted from here."""
        self._mark = self.total
        self.text += chars
        if self.text > self._limits.text_chars:
            raise TooLarge(f"more than {_mb(self._limits.text_chars)} of text")


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"


def core_title(archive: zipfile.ZipFile) -> str:
    """The title in the document's properties (docProps/core.xml), or ""."""
    try:
        root = _xml(archive, "docProps/core.xml")
    except (KeyError, etree.XMLSyntaxError):
        return ""
    found = root.find(_DC_TITLE)
    return " ".join((found.text or "").split()) if found is not None else ""


def _main_part(archive: zipfile.ZipFile) -> str:
    """The document part the package's relationships name (almost always word/document.xml)."""
    try:
        rels = _xml(archive, "_rels/.rels")
    except (KeyError, etree.XMLSyntaxError):
        return "word/document.xml"
    for rel in rels.iter(_REL):
        if str(rel.get("Type", "")).endswith("/officeDocument"):
            return str(rel.get("Target", "")).lstrip("/") or "word/document.xml"
    return "word/document.xml"


def _related_parts(archive: zipfile.ZipFile, main: str) -> dict[str, str]:
    """The parts of the package the main part's relationships name, by kind ("styles", "footnotes", ...; the
    first of each kind), read once per document."""
    folder = dirname(main)
    try:
        rels = _xml(archive, join(folder, "_rels", main.rsplit("/", 1)[-1] + ".rels"))
    except (KeyError, etree.XMLSyntaxError):
        return {}
    parts: dict[str, str] = {}
    for rel in rels.iter(_REL):
        kind, target = str(rel.get("Type", "")).rsplit("/", 1)[-1], str(rel.get("Target", ""))
        if target and rel.get("TargetMode") != "External":
            parts.setdefault(kind, target.lstrip("/") if target.startswith("/") else normpath(join(folder, target)))
    return parts


def _heading_levels(archive: zipfile.ZipFile, styles_part: str) -> dict[str, int]:
    """Style id -> heading level, from the styles part: "Title" is 0, "Heading N" is N (as python-docx read them)."""
    try:
        styles = _xml(archive, styles_part)
    except (KeyError, etree.XMLSyntaxError):
        return {}
    levels: dict[str, int] = {}
    for style in styles.iter(f"{_W}style"):
        name_element = style.find(f"{_W}name")
        name = str(name_element.get(f"{_W}val", "")) if name_element is not None else ""
        style_id = str(style.get(f"{_W}styleId", ""))
        if name.lower() == "title":
            levels[style_id] = 0
        elif heading := _HEADING.fullmatch(name):
            levels[style_id] = int(heading[1])
    return levels


def _xml(archive: zipfile.ZipFile, part: str) -> Any:
    """A small part (relationships, styles, properties), parsed whole."""
    return etree.fromstring(archive.read(part), etree.XMLParser(**_PARSER_OPTIONS))


def _style_of(paragraph: Any) -> str:
    found = paragraph.find(f"{_W}pPr/{_W}pStyle")
    return str(found.get(f"{_W}val", "")) if found is not None else ""


def _paragraph_text(paragraph: Any) -> str:
    parts: list[str] = []

    def walk(element: Any) -> None:
        for child in element:
            tag = child.tag
            if tag == f"{_W}t":
                parts.append(child.text or "")
            elif tag == f"{_W}tab":
                parts.append("\t")
            elif tag in (f"{_W}br", f"{_W}cr"):
                parts.append("\n")
            elif tag not in _SKIP and isinstance(tag, str):
                walk(child)

    walk(paragraph)
    return "".join(parts)


def _top_level_table(table: Any) -> bool:
    parent = table.getparent() if table is not None else None
    return table is not None and table.tag == f"{_W}tbl" and parent is not None and parent.tag in _BODY_PARTS


def _row_text(row: Any, merged: dict[int, str]) -> str:
    """One row, its non-empty cells joined by " | "; `merged` carries vertically merged cells down the rows."""
    cells: list[str] = []
    column = 0
    for cell in row.iterfind(f"{_W}tc"):
        span_element = cell.find(f"{_W}tcPr/{_W}gridSpan")
        span = int(span_element.get(f"{_W}val", "1")) if span_element is not None else 1
        vmerge = cell.find(f"{_W}tcPr/{_W}vMerge")
        if vmerge is not None and vmerge.get(f"{_W}val", "continue") != "restart":
            text = merged.get(column, "")
        else:
            text = " ".join("\n".join(_paragraph_text(p) for p in cell.iterfind(f"{_W}p")).split())
            if vmerge is not None:
                merged[column] = text
            else:
                merged.pop(column, None)
        if text:
            cells.append(text)
        column += max(span, 1)
    return " | ".join(cells)


def _drop(element: Any) -> None:
    """Free what was read: the element's subtree, and the siblings before it, already read too."""
    element.clear()
    parent = element.getparent()
    if parent is not None:
        while element.getprevious() is not None:
            del parent[0]
