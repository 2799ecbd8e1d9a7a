"""The streamed Word reader (`agent/knowledge/docx_stream.py`) reads what python-docx read, and what it leaves."""

from __future__ import annotations

import inspect
import io
import zipfile

import docx
import pytest
from docx.table import Table

from agent.knowledge.docx_stream import Block, TooLarge, core_title, read_blocks
from agent.knowledge.parsers import parse_document
from agent.knowledge.word_package import WordLimits
from bot.bench.reliability.poison import word_file

LIMITS = WordLimits.for_upload(25 * 1024 * 1024)


def _blocks(data: bytes) -> list[Block]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return list(read_blocks(archive, LIMITS))


def _handbook() -> bytes:
    document = docx.Document()
    document.add_heading("Travel Handbook", 0)
    document.add_heading("Flights", 1)
    paragraph = document.add_paragraph("Book flights ")
    paragraph.add_run("two weeks").bold = True
    paragraph.add_run(" ahead.\tEconomy only.")
    table = document.add_table(rows=3, cols=3)
    for row, cells in enumerate([("Method", "GPUs", "Memory"), ("QLoRA", "8", "10 GB"), ("", "4", "6 GB")]):
        for column, text in enumerate(cells):
            table.cell(row, column).text = text
    table.cell(1, 0).merge(table.cell(2, 0))  # merged down: "QLoRA" belongs to both rows
    table.cell(0, 1).merge(table.cell(0, 2))  # merged across: once
    document.add_heading("Meals", 2)
    document.add_paragraph("Meals are paid up to a daily limit.")
    document.core_properties.title = "Core Title"
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def _python_docx_reading(data: bytes) -> list[Block]:
    """How the parser read Word files before (python-docx), for comparison."""
    blocks = []
    for item in docx.Document(io.BytesIO(data)).iter_inner_content():
        if isinstance(item, Table):
            rows = []
            for row in item.rows:
                cells, seen = [], set()
                for cell in row.cells:
                    if id(cell._tc) not in seen and (text := " ".join(cell.text.split())):
                        cells.append(text)
                    seen.add(id(cell._tc))
                rows.append(" | ".join(cells))
            blocks.append(Block("\n".join(rows)))
        else:
            style = item.style.name if item.style is not None else ""
            level = 0 if style == "Title" else int(style[-1]) if style.startswith("Heading ") else None
            blocks.append(Block(item.text, level))
    return blocks


def test_a_handbook_reads_as_python_docx_read_it():
    data = _handbook()
    assert _blocks(data) == _python_docx_reading(data)
    assert Block("Method | GPUs Memory\nQLoRA | 8 | 10 GB\nQLoRA | 4 | 6 GB") in _blocks(data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert core_title(archive) == "Core Title"
    parsed = parse_document(data, "handbook.docx")
    assert parsed.title == "Travel Handbook"
    assert [s.heading for s in parsed.sections] == ["Flights", "Flights > Meals"]


def test_links_insertions_and_content_controls_are_read_deletions_and_text_boxes_are_not():
    body = (
        '<w:p><w:r><w:t xml:space="preserve">See </w:t></w:r><w:hyperlink r:id="rId9"><w:r><w:t>the portal</w:t>'
        "</w:r></w:hyperlink><w:r><w:t>.</w:t></w:r></w:p>"
        "<w:p><w:r><w:t>Limit: </w:t></w:r><w:del><w:r><w:delText>90</w:delText></w:r></w:del>"
        "<w:ins><w:r><w:t>120</w:t></w:r></w:ins><w:r><w:br/><w:t>euros</w:t></w:r></w:p>"
        "<w:sdt><w:sdtContent><w:p><w:r><w:t>Inside a content control.</w:t></w:r></w:p></w:sdtContent></w:sdt>"
        "<w:p><w:r><w:t>Main text.</w:t></w:r><w:r><w:drawing><w:txbxContent><w:p><w:r><w:t>Box</w:t></w:r></w:p>"
        "</w:txbxContent></w:drawing></w:r></w:p>"
    )
    texts = [b.text for b in _blocks(word_file(0, body=body))]
    assert texts[:4] == ["See the portal.", "Limit: 120\neuros", "Inside a content control.", "Main text."]


def test_memory_is_freed_as_blocks_are_read():
    """Every block read is dropped from the tree: the body keeps the block being read (and what the parser has
    read ahead), not the ones before it."""
    body = "".join(f"<w:p><w:r><w:t>Paragraph {n} of a long handbook.</w:t></w:r></w:p>" for n in range(20_000))
    with zipfile.ZipFile(io.BytesIO(word_file(0, body=body))) as archive:
        blocks = read_blocks(archive, LIMITS)
        for n in range(10_000):
            assert next(blocks).text == f"Paragraph {n} of a long handbook."
        current = inspect.getgeneratorlocals(blocks)["element"]  # the paragraph just read, still in the tree
        assert len(current) == 0 and current.getprevious() is None  # emptied, and the 9,999 before it gone


_NS = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
_RELS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


def _note(kind: str, number: int, text: str) -> str:
    return (
        f'<w:{kind} w:id="{number}"><w:p><w:pPr><w:pStyle w:val="{kind.title()}Text"/></w:pPr>'
        f'<w:r><w:rPr><w:rStyle w:val="{kind.title()}Reference"/></w:rPr><w:{kind}Ref/></w:r>'
        f'<w:r><w:t xml:space="preserve"> {text}</w:t></w:r></w:p></w:{kind}>'
    )


def _notes_part(kind: str, texts: dict[int, str]) -> str:
    """A footnotes or endnotes part as Word writes it: two separators, then the notes."""
    separators = (
        f'<w:{kind} w:type="separator" w:id="-1"><w:p><w:r><w:separator/></w:r></w:p></w:{kind}>'
        f'<w:{kind} w:type="continuationSeparator" w:id="0"><w:p><w:r><w:continuationSeparator/></w:r></w:p></w:{kind}>'
    )
    notes = "".join(_note(kind, n, text) for n, text in texts.items())
    return f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<w:{kind}s {_NS}>{separators}{notes}</w:{kind}s>'


def _with_notes(body: str, footnotes: dict[int, str], endnotes: dict[int, str]) -> bytes:
    """A Word file whose body refers to footnotes and endnotes kept in their own parts, linked as Word links them
    (relationships of the document part, content-type overrides)."""
    base = zipfile.ZipFile(io.BytesIO(word_file(0, body=body)))
    rels = base.read("word/_rels/document.xml.rels").decode()
    links = "".join(
        f'<Relationship Id="rIdNotes{kind}" Type="{_RELS}/{kind}s" Target="{kind}s.xml"/>'
        for kind in ("footnote", "endnote")
    )
    rels = rels.replace("</Relationships>", links + "</Relationships>")
    types = base.read("[Content_Types].xml").decode()
    overrides = "".join(
        f'<Override PartName="/word/{kind}s.xml" ContentType="application/'
        f'vnd.openxmlformats-officedocument.wordprocessingml.{kind}s+xml"/>'
        for kind in ("footnote", "endnote")
    )
    types = types.replace("</Types>", overrides + "</Types>")
    replaced = {"word/_rels/document.xml.rels": rels, "[Content_Types].xml": types}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for member in base.infolist():
            archive.writestr(member.filename, replaced.get(member.filename) or base.read(member))
        archive.writestr("word/footnotes.xml", _notes_part("footnote", footnotes))
        archive.writestr("word/endnotes.xml", _notes_part("endnote", endnotes))
    return out.getvalue()


def _refers(kind: str, number: int) -> str:
    return f'<w:r><w:rPr><w:rStyle w:val="{kind.title()}Reference"/></w:rPr><w:{kind}Reference w:id="{number}"/></w:r>'


def test_footnotes_and_endnotes_follow_the_paragraph_or_table_that_refers_to_them():
    body = (
        '<w:p><w:pPr><w:pStyle w:val="Title"/></w:pPr><w:r><w:t>Travel</w:t></w:r></w:p>'
        '<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Flights</w:t></w:r></w:p>'
        f"<w:p><w:r><w:t>Book flights two weeks ahead.</w:t></w:r>{_refers('footnote', 1)}</w:p>"
        "<w:tbl><w:tr><w:tc><w:p><w:r><w:t>Class</w:t></w:r></w:p></w:tc>"
        "<w:tc><w:p><w:r><w:t>Limit</w:t></w:r></w:p></w:tc></w:tr>"
        f"<w:tr><w:tc><w:p><w:r><w:t>Economy</w:t></w:r>{_refers('footnote', 2)}</w:p></w:tc>"
        "<w:tc><w:p><w:r><w:t>1,200 EUR</w:t></w:r></w:p></w:tc></w:tr></w:tbl>"
        '<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Meals</w:t></w:r></w:p>'
        f"<w:p><w:r><w:t>Meals are paid up to a daily limit.</w:t></w:r>{_refers('endnote', 1)}</w:p>"
    )
    data = _with_notes(
        body,
        {1: "Flights to Asia: four weeks ahead.", 2: "Business class from six hours of flight."},
        {1: "The daily limit is 60 EUR."},
    )
    assert [b.text for b in _blocks(data)] == [
        "Travel",
        "Flights",
        "Book flights two weeks ahead.",
        "Flights to Asia: four weeks ahead.",
        "Class | Limit\nEconomy | 1,200 EUR",
        "Business class from six hours of flight.",
        "Meals",
        "Meals are paid up to a daily limit.",
        "The daily limit is 60 EUR.",
    ]
    sections = {s.heading: s.text for s in parse_document(data, "travel.docx").sections}
    assert "four weeks ahead" in sections["Flights"] and "60 EUR" in sections["Meals"]


def test_notes_count_against_the_limits_and_are_given_once():
    """A note's text counts as the body's does, and a file that refers to one note a thousand times gets it
    once: the reading cannot be made to multiply text."""
    once = f"<w:p><w:r><w:t>Short.</w:t></w:r>{_refers('footnote', 1)}</w:p>"
    data = _with_notes(once * 1000, {1: "A long note. " * 50}, {})
    small = WordLimits(text_chars=7_000, markup_bytes=LIMITS.markup_bytes, block_bytes=LIMITS.block_bytes)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        texts = [b.text for b in read_blocks(archive, small)]
    assert texts[:3] == ["Short.", ("A long note. " * 50).strip(), "Short."]
    assert len(texts) == 1001
    smaller = WordLimits(text_chars=600, markup_bytes=LIMITS.markup_bytes, block_bytes=LIMITS.block_bytes)
    with zipfile.ZipFile(io.BytesIO(data)) as archive, pytest.raises(TooLarge, match="of text"):
        list(read_blocks(archive, smaller))
