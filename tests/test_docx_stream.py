"""The streamed Word reader (`agent/knowledge/docx_stream.py`) reads what python-docx read, and what it leaves."""

from __future__ import annotations

import inspect
import io
import zipfile

import docx
from docx.table import Table

from agent.knowledge.docx_stream import Block, core_title, read_blocks
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
