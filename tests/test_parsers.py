"""Parsers turn every supported format into titled sections, and refuse bad files with a readable reason."""

from __future__ import annotations

import io
import random
import zipfile
from pathlib import Path

import docx
import pytest
from fpdf import FPDF
from pypdf import PdfReader, PdfWriter

from agent.knowledge.parsers import DocumentError, detect_kind, parse_document

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def make_pdf(pages: list[str], title: str | None = None, font: Path | None = None) -> bytes:
    pdf = FPDF()
    if title:
        pdf.set_title(title)
    if font:
        pdf.add_font("Body", fname=str(font))
    for text in pages:
        pdf.add_page()
        pdf.set_font("Body" if font else "Helvetica", size=12)
        pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


def encrypt(data: bytes, user_password: str) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password="owner-secret", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def make_docx() -> bytes:
    document = docx.Document()
    document.add_heading("Employee Handbook", level=0)
    document.add_paragraph("Welcome to the company.")
    document.add_heading("Install", level=1)
    document.add_paragraph("Run the installer.")
    document.add_heading("Linux", level=2)
    document.add_paragraph("Use   apt-get   install expert.")
    table = document.add_table(rows=2, cols=2)
    for row, values in zip(table.rows, [("OS", "Command"), ("Debian", "apt")], strict=True):
        for cell, value in zip(row.cells, values, strict=True):
            cell.text = value
    document.add_heading("Usage", level=1)
    document.add_paragraph("Ask the bot.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def zip_with(members: dict[str, bytes], zeros: int = 0) -> bytes:
    """A zip holding the given members, plus word/document.xml of `zeros` zero bytes written in chunks."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path, content in members.items():
            archive.writestr(path, content)
        if zeros:
            chunk = bytes(1024 * 1024)
            with archive.open("word/document.xml", "w") as member:
                for _ in range(zeros // len(chunk)):
                    member.write(chunk)
    return out.getvalue()


def refused(data: bytes, filename: str) -> str:
    with pytest.raises(DocumentError) as caught:
        parse_document(data, filename)
    message = str(caught.value)
    assert filename.rsplit("/", 1)[-1] in message
    return message


# ---- PDF ----


def test_pdf_two_pages_with_metadata_title():
    data = make_pdf(["First page: café crème, Größe.", "Second page text."], title="Staff Guide")
    assert detect_kind(data, "guide.pdf") == "pdf"
    parsed = parse_document(data, "guide.pdf")
    assert parsed.kind == "pdf"
    assert parsed.title == "Staff Guide"
    # No "Page N" headings: a finished sentence at a page end ends its paragraph.
    assert [(s.heading, s.text) for s in parsed.sections] == [
        ("", "First page: café crème, Größe.\n\nSecond page text.")
    ]


WRAPPED = "QLoRA can fine-tune a 70B model that needs 36 GPUs with only 2 GPUs on the Zorblax cluster. " * 3


def make_layout_pdf(blocks: list[tuple[int, str]]) -> bytes:
    """A PDF without title metadata whose blocks are (font size, text), each wrapped by fpdf2 at the margin."""
    pdf = FPDF()
    pdf.add_page()
    for size, text in blocks:
        pdf.set_font("Helvetica", size=size)
        pdf.multi_cell(0, size * 0.55, text, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(3)
    return bytes(pdf.output())


def test_pdf_wrapped_lines_are_reflowed_and_headings_come_from_the_layout():
    data = make_layout_pdf(
        [(20, "Zorblax Trainer Handbook"), (15, "Hardware"), (11, WRAPPED.strip()), (15, "Storage"),
         (11, "Checkpoints are written every five hundred steps to the shared disk of the training cluster.")]
    )  # fmt: skip
    assert len(PdfReader(io.BytesIO(data)).pages[0].extract_text().splitlines()) > 5  # the text does wrap
    parsed = parse_document(data, "handbook.pdf")
    assert parsed.title == "Zorblax Trainer Handbook"  # the first large line: the PDF has no title metadata
    assert [s.heading for s in parsed.sections] == ["Hardware", "Storage"]
    assert parsed.sections[0].text == WRAPPED.strip()  # one paragraph: the hard line wraps are gone
    assert "\n" not in parsed.sections[1].text


def test_pdf_title_falls_back_to_filename_stem():
    assert parse_document(make_pdf(["Hello."]), "uploads/annual report.pdf").title == "annual report"


@pytest.mark.skipif(not DEJAVU.exists(), reason="needs the DejaVu Sans font for Cyrillic glyphs")
def test_pdf_with_cyrillic_text():
    data = make_pdf(["Сайн байна уу, дэлхий.", "Монгол хэл."], font=DEJAVU)
    parsed = parse_document(data, "mn.pdf")
    assert parsed.sections[0].text == "Сайн байна уу, дэлхий.\n\nМонгол хэл."


def test_pdf_is_recognised_by_content_not_name():
    data = make_pdf(["Quarterly numbers."])
    assert detect_kind(data, "report.txt") == "pdf"
    assert parse_document(data, "report.txt").sections[0].text == "Quarterly numbers."


def test_encrypted_pdf_with_user_password_is_refused():
    message = refused(encrypt(make_pdf(["Secret."]), "hunter2"), "handbook.pdf")
    assert "password-protected" in message


def test_encrypted_pdf_with_empty_user_password_opens():
    parsed = parse_document(encrypt(make_pdf(["Readable."]), ""), "open.pdf")
    assert parsed.sections[0].text == "Readable."


@pytest.mark.parametrize("data", [b"%PDF-1.7\n" + bytes(range(256)) * 4, b"%PDF-1.4\ngarbage\n%%EOF\n"])
def test_corrupt_pdf_is_refused(data):
    assert "damaged or not a valid PDF" in refused(data, "broken.pdf")


def test_truncated_pdf_is_refused():
    data = make_pdf(["Hello there."])
    assert "damaged or not a valid PDF" in refused(data[: len(data) // 3], "cut.pdf")


def test_pdf_named_file_that_is_text_is_refused():
    assert "not a valid PDF" in refused(b"Access denied", "handbook.pdf")


def test_pdf_without_text_is_refused():
    pdf = FPDF()
    pdf.add_page()
    pdf.rect(10, 10, 50, 50)
    assert "no extractable text" in refused(bytes(pdf.output()), "scan.pdf")


# ---- DOCX ----


def test_docx_headings_and_table():
    data = make_docx()
    assert detect_kind(data, "handbook.docx") == "docx"
    parsed = parse_document(data, "handbook.docx")
    assert parsed.kind == "docx"
    assert parsed.title == "Employee Handbook"
    assert [(s.heading, s.text) for s in parsed.sections] == [
        ("", "Welcome to the company."),
        ("Install", "Run the installer."),
        ("Install > Linux", "Use apt-get install expert.\n\nOS | Command\nDebian | apt"),
        ("Usage", "Ask the bot."),
    ]


def test_docx_without_title_style_uses_first_heading_1_then_core_title():
    document = docx.Document()
    document.core_properties.title = "Core Title"
    document.add_heading("Overview", level=1)
    document.add_paragraph("First.")
    document.add_heading("Details", level=1)
    document.add_paragraph("Second.")
    out = io.BytesIO()
    document.save(out)
    parsed = parse_document(out.getvalue(), "plain.docx")
    assert parsed.title == "Overview"
    assert [(s.heading, s.text) for s in parsed.sections] == [("", "First."), ("Details", "Second.")]

    untitled = docx.Document()
    untitled.core_properties.title = "Core Title"
    untitled.add_paragraph("Body only.")
    out = io.BytesIO()
    untitled.save(out)
    assert parse_document(out.getvalue(), "plain.docx").title == "Core Title"


def test_docx_recognised_by_content_under_any_name():
    assert detect_kind(make_docx(), "download") == "docx"


def test_docx_zip_bomb_is_refused_quickly():
    bomb = zip_with({"[Content_Types].xml": b"<Types/>"}, zeros=300 * 1024 * 1024)
    assert len(bomb) < 2 * 1024 * 1024
    assert detect_kind(bomb, "bomb.docx") == "docx"
    assert "zip bomb" in refused(bomb, "bomb.docx")


def test_docx_member_with_extreme_compression_ratio_is_refused():
    bomb = zip_with({"[Content_Types].xml": b"<Types/>"}, zeros=20 * 1024 * 1024)
    assert "zip bomb" in refused(bomb, "small-bomb.docx")


def test_corrupt_docx_is_refused():
    data = zip_with({"[Content_Types].xml": b"not xml", "word/document.xml": b"<w:document"})
    assert "could not be read as a Word document" in refused(data, "broken.docx")


def test_docx_named_file_that_is_not_a_zip_is_refused():
    assert "could not be read as a Word document" in refused(b"PK but not really", "notes.docx")


def test_other_zip_formats_are_unsupported():
    xlsx = zip_with({"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<workbook/>"})
    with pytest.raises(DocumentError, match=r"budget\.xlsx.*unsupported"):
        detect_kind(xlsx, "budget.xlsx")


def test_legacy_office_file_is_refused():
    data = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512)
    assert ".docx or PDF" in refused(data, "old.doc")


# ---- HTML ----

PAGE = b"""<!DOCTYPE html>
<html><head><title>Docs | Example</title><style>body { color: red }</style></head>
<body>
<nav><a href="/">Home</a> <a href="/pricing">Pricing</a></nav>
<script>var tracking = "should not appear";</script>
<h1>Expert Bot Guide</h1>
<p>An   introduction
   spread over lines.</p>
<h2>Install</h2>
<p>Get the <a href="https://example.com">package</a>.<br>Then run it.</p>
<h3>Linux</h3>
<ul><li>Debian</li><li>Fedora</li></ul>
<pre>apt-get install expert
  --yes</pre>
<h2>Limits</h2>
<table><tr><th>Plan</th><th>Docs</th></tr><tr><td>Free</td><td>10</td></tr></table>
<footer>Copyright 2024</footer>
</body></html>"""


def test_html_headings_paragraphs_and_dropped_chrome():
    assert detect_kind(PAGE, "guide.html") == "html"
    parsed = parse_document(PAGE, "guide.html")
    assert parsed.title == "Expert Bot Guide"
    assert [(s.heading, s.text) for s in parsed.sections] == [
        ("", "An introduction spread over lines."),
        ("Install", "Get the package.\nThen run it."),
        ("Install > Linux", "Debian\n\nFedora\n\napt-get install expert\n--yes"),
        ("Limits", "Plan | Docs\n\nFree | 10"),
    ]
    text = parsed.text
    for unwanted in ("tracking", "Pricing", "Copyright", "color"):
        assert unwanted not in text


def test_html_title_tag_is_the_fallback_title():
    page = b"<html><head><title>Release Notes</title></head><body><h2>v2</h2><p>Faster.</p></body></html>"
    parsed = parse_document(page, "notes.html")
    assert parsed.title == "Release Notes"
    assert parsed.sections[0].heading == "v2"


def test_html_detected_by_content_despite_name():
    page = b"\xef\xbb\xbf  \n<!doctype html><html><body><p>Hi</p></body></html>"
    assert detect_kind(page, "file.txt") == "html"


def test_html_after_comment_or_xml_prolog_is_detected():
    page = b'<?xml version="1.0"?>\n<!-- saved page -->\n<html><body><p>Hi</p></body></html>'
    assert detect_kind(page, "handbook.pdf") == "html"


def test_html_in_a_declared_legacy_charset():
    page = "<html><head><meta charset='windows-1251'><title>Справка</title></head><body><p>Привет</p>"
    parsed = parse_document(page.encode("cp1251"), "help.html")
    assert (parsed.title, parsed.text) == ("Справка", "Привет")


def test_html_fragment_detected_by_name():
    assert detect_kind(b"<p>Just a fragment</p>", "frag.htm") == "html"


@pytest.mark.parametrize(
    "page",
    [
        b"<html><body><form action='/login'><input name='email'>"
        b"<input type='PASSWORD' name='pw'><button>Go</button></form></body></html>",
        b"<!DOCTYPE html><html><head><title>Sign in | Slack</title></head>"
        b"<body><p>Continue with Google</p></body></html>",
    ],
)
def test_login_page_is_refused(page):
    # A platform that refuses a download serves its login page under the file's own name.
    message = refused(page, "handbook.pdf")
    assert "login page" in message
    assert "not authorised" in message


def test_long_article_about_signing_in_is_not_a_login_page():
    body = "<p>" + "Open the portal and choose your account. " * 80 + "</p>"
    page = f"<html><body><h1>How to sign in to the VPN</h1>{body}</body></html>".encode()
    assert parse_document(page, "vpn.html").title == "How to sign in to the VPN"


# ---- Markdown ----

MARKDOWN = """# Operations Manual

Intro with a [link](https://example.com/x) and `code`.

Setup
-----

Install it:

```bash
# not a heading
make install
```

### Linux

- first step
- second step

| Key | Value |
| --- | ----- |
| a   | 1     |

## Support

Mail us.
"""


def test_markdown_structure():
    assert detect_kind(MARKDOWN.encode(), "manual.md") == "markdown"
    parsed = parse_document(MARKDOWN.encode(), "manual.md")
    assert parsed.kind == "markdown"
    assert parsed.title == "Operations Manual"
    headings = [s.heading for s in parsed.sections]
    assert headings == ["", "Setup", "Setup > Linux", "Support"]
    intro, setup, linux, support = (s.text for s in parsed.sections)
    assert intro == "Intro with a link and code."
    assert "# not a heading\nmake install" in setup
    assert linux == "- first step\n- second step\n\nKey | Value\na | 1"
    assert support == "Mail us."
    assert "https://" not in parsed.text


def test_markdown_detected_by_content_under_txt_name():
    data = b"# Title\n\nSome text.\n\n## Part\n\nMore."
    assert detect_kind(data, "x.txt") == "markdown"
    parsed = parse_document(data, "x.txt")
    assert parsed.title == "Title"
    assert [s.heading for s in parsed.sections] == ["", "Part"]


def test_markdown_front_matter_is_not_content():
    data = b"---\ntitle: 'From Front Matter'\nauthor: me\n---\n## Section\n\nBody.\n"
    parsed = parse_document(data, "post.md")
    assert parsed.title == "From Front Matter"
    assert [(s.heading, s.text) for s in parsed.sections] == [("Section", "Body.")]


# ---- Plain text ----


def test_plain_text_with_stray_markup_characters_stays_text():
    data = b"Meeting notes\n\nWe discussed #general and 3 - 2 = 1.\n-----\nNext week."
    assert detect_kind(data, "notes.txt") == "text"


def test_chinese_text():
    data = "第一段。\n\n\n第二段，   有空格。\n".encode()
    assert detect_kind(data, "zh.txt") == "text"
    parsed = parse_document(data, "zh.txt")
    assert parsed.kind == "text"
    assert parsed.title == "zh"
    assert parsed.sections == [parsed.sections[0]]
    assert parsed.sections[0].heading == ""
    assert parsed.sections[0].text == "第一段。\n\n第二段， 有空格。"


def test_mongolian_cyrillic_text():
    data = "Монгол Улс\r\nнь Зүүн Азид оршдог.\r\n\r\nНийслэл нь Улаанбаатар.".encode()
    parsed = parse_document(data, "mongolia.txt")
    assert parsed.sections[0].text == "Монгол Улс\nнь Зүүн Азид оршдог.\n\nНийслэл нь Улаанбаатар."


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
def test_utf16_text_with_bom(encoding):
    data = "Hello UTF-16 — Сайн уу\n\nSecond paragraph.".encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data
    assert detect_kind(data, "wide.txt") == "text"
    assert parse_document(data, "wide.txt").text == "Hello UTF-16 — Сайн уу\n\nSecond paragraph."


def test_non_utf8_text_is_refused_with_advice():
    assert "UTF-8" in refused("Привет, мир".encode("cp1251"), "legacy.txt")


@pytest.mark.parametrize("data", [b"", b"  \n\t\r\n", " \n".encode("utf-16")])
def test_empty_file_is_refused(data):
    assert "is empty" in refused(data, "empty.txt")


def test_random_binary_named_markdown_is_refused():
    data = random.Random(7).randbytes(4096)
    message = refused(data, "notes.md")
    assert "looks like a binary file, not a document" in message
    with pytest.raises(DocumentError, match="binary"):
        detect_kind(data, "notes.md")


def test_text_with_nul_bytes_is_binary():
    assert "binary" in refused(b"hello\x00world" * 10, "notes.txt")
