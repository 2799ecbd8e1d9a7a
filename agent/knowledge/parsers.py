"""Turn a shared file (PDF, Word, HTML, Markdown or plain text) into a titled list of clean sections.

The kind is decided by the bytes first and the name second, because chat platforms hand us files whose
names lie: a PDF saved as ``report.txt``, or a login page served in place of ``handbook.pdf``.
"""

from __future__ import annotations

import codecs
import io
import re
import zipfile
from collections.abc import Callable
from pathlib import PurePath

from bs4 import BeautifulSoup, Tag
from bs4.element import NavigableString, PreformattedString
from lxml import etree
from markdown_it import MarkdownIt
from markdown_it.token import Token
from pypdf import PasswordType, PdfReader

from agent.knowledge.docx_stream import TooLarge, core_title, read_blocks
from agent.knowledge.formats import FORMATS
from agent.knowledge.pdf_layout import layout, read_lines
from agent.knowledge.word_package import UnsafePackage, WordLimits, check_word_package
from agent.types import ParsedDocument, Section

_MARKDOWN_SUFFIXES = frozenset({".md", ".markdown", ".mdown", ".mkd"})
_HTML_SUFFIXES = frozenset({".htm", ".html", ".xhtml"})
_HTML_START = ("<!doctype html", "<html", "<head", "<body")
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # legacy .doc/.xls/.ppt
_MARKDOWN_HINT = re.compile(
    r"^ {0,3}#{1,6}[ \t]+\S|^ {0,3}(?:```|~~~)|^\S.*\n {0,3}=+[ \t]*$|\[[^\]\n]+\]\((?:https?://|/|#)[^)\s]*\)",
    re.MULTILINE,
)
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_HTML_TAG = re.compile(r"<[a-zA-Z][^>]*>")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f\ufeff]")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)
_LOGIN = re.compile(r"\b(?:sign|log)\s*-?\s*(?:in|on)\b", re.IGNORECASE)
_HTML_DROP = ["script", "style", "nav", "footer", "noscript", "template", "svg", "head", "title", "button"]
_HTML_BLOCKS = frozenset(
    ("p", "li", "pre", "td", "th", "dt", "dd", "blockquote", "div", "section", "article", "main", "header",
     "aside", "figcaption", "caption", "address", "table", "tr", "ul", "ol", "dl", "form", "fieldset",
     "details", "summary", "body", "h1", "h2", "h3", "h4", "h5", "h6")
)  # fmt: skip
_BR = "\u2028"  # stands in for <br> so that collapsing source whitespace keeps the break


class DocumentError(Exception):
    """A reason, worded for a chat user, why a file cannot become knowledge; retrying will not help."""


def detect_kind(data: bytes, filename: str) -> str:
    """Return "pdf", "docx", "html", "markdown" or "text", or raise DocumentError saying why it is none."""
    return _sniff(data, _display_name(filename))[0]


def parse_document(data: bytes, filename: str, *, max_upload_bytes: int | None = None) -> ParsedDocument:
    """Parse a file into sections keyed by heading path, with the title kept out of the paths.

    `max_upload_bytes` (the upload limit) bounds what a Word file may hold (`word_package.WordLimits`).
    """
    name = _display_name(filename)
    kind, text = _sniff(data, name)
    parsers: dict[str, Callable[[], tuple[str, list[Section]]]] = {
        "pdf": lambda: _parse_pdf(data, name),
        "docx": lambda: _parse_docx(data, name, WordLimits.for_upload(max_upload_bytes)),
        "html": lambda: _parse_html(text if text is not None else data, name),
        "markdown": lambda: _parse_markdown(text or ""),
        "text": lambda: ("", [Section("", _normalise(text or ""))]),
    }
    title, sections = parsers[kind]()
    sections = [s for s in sections if s.text]
    if not sections:
        raise DocumentError(f"{name} has no readable text")
    return ParsedDocument(title=title or PurePath(name).stem or name, kind=kind, sections=sections)


def _display_name(filename: str) -> str:
    return PurePath(filename).name or "the file"


def _sniff(data: bytes, name: str) -> tuple[str, str | None]:
    """Decide the kind, and decode the text once for the kinds that are text."""
    if not data.strip():
        raise DocumentError(f"{name} is empty")
    suffix = PurePath(name).suffix.lower()
    if b"%PDF-" in data[:1024]:
        return "pdf", None
    if data.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                if "word/document.xml" in archive.namelist():
                    return "docx", None
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            if suffix == ".docx":
                raise DocumentError(f"{name} could not be read as a Word document") from exc
        raise DocumentError(
            f"{name} is an unsupported file type (a zip archive, such as a spreadsheet or presentation); "
            f"share a file of one of these formats: {FORMATS}"
        )
    if data.startswith(_OLE_MAGIC):
        raise DocumentError(f"{name} is an old Office format (.doc/.xls/.ppt); save it as .docx or PDF")
    text = _decode(data, name)
    sample = text[:65536] if text is not None else data[:65536].decode("latin-1")
    if not sample.strip():
        raise DocumentError(f"{name} is empty")
    start = sample[:2048].lstrip().lower()
    markup = start.startswith("<") and "<html" in start  # after a comment or an XML prolog
    if start.startswith(_HTML_START) or markup or (suffix in _HTML_SUFFIXES and _HTML_TAG.search(sample)):
        return "html", text
    if suffix == ".pdf":
        raise DocumentError(f"{name} is damaged or not a valid PDF")
    if suffix == ".docx":
        raise DocumentError(f"{name} could not be read as a Word document")
    if text is None:
        raise DocumentError(f"{name} is not UTF-8 text; save it as UTF-8 and share it again")
    if suffix in _MARKDOWN_SUFFIXES or _MARKDOWN_HINT.search(sample):
        return "markdown", text
    return "text", text


def _decode(data: bytes, name: str) -> str | None:
    """UTF-8 (BOM optional) or BOM-marked UTF-16; None for text in some other encoding."""
    codec = next((codec for bom, codec in _BOMS if data.startswith(bom)), "utf-8")
    try:
        text: str | None = data.decode(codec)
    except UnicodeDecodeError:
        text = None
    sample = text[:8192] if text is not None else data[:8192].decode("latin-1")
    if "\x00" in (text if text is not None else sample) or len(_CONTROL.findall(sample)) > len(sample) / 20:
        raise DocumentError(f"{name} looks like a binary file, not a document")
    return text


def _normalise(text: str) -> str:
    """Collapse runs of spaces within lines and runs of blank lines, so that only paragraph breaks remain."""
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        lines = (" ".join(line.split()) for line in block.split("\n"))
        paragraph = "\n".join(line for line in lines if line)
        if paragraph:
            paragraphs.append(paragraph)
    return "\n\n".join(paragraphs)


class _Outline:
    """Collects headings and paragraphs in reading order into sections keyed by heading path.

    The first level-1 (or level-0, a Word "Title") heading is the document's title, not part of any path.
    """

    def __init__(self) -> None:
        self.title = ""
        self._path: list[tuple[int, str]] = []
        self._paragraphs: list[str] = []
        self._sections: list[Section] = []

    def heading(self, level: int, text: str) -> None:
        text = " ".join(text.split())
        if not text:
            return
        self._flush()
        if level <= 1 and not self.title:
            self.title, self._path = text, []
            return
        level = max(level, 1)
        while self._path and self._path[-1][0] >= level:
            self._path.pop()
        self._path.append((level, text))

    def paragraph(self, text: str) -> None:
        if text := _normalise(text):
            self._paragraphs.append(text)

    def finish(self) -> list[Section]:
        self._flush()
        return self._sections

    def _flush(self) -> None:
        if self._paragraphs:
            heading = " > ".join(text for _, text in self._path)
            self._sections.append(Section(heading, "\n\n".join(self._paragraphs)))
            self._paragraphs = []


def _parse_markdown(text: str) -> tuple[str, list[Section]]:
    """Walk markdown-it tokens, so that '#' in code is not a heading and setext headings count."""
    fallback_title = ""
    if front := _FRONT_MATTER.match(text):
        found = re.search(r"^title:[ \t]*['\"]?(.*?)['\"]?[ \t]*$", front[1], re.MULTILINE)
        fallback_title, text = (found[1] if found else ""), text[front.end() :]
    out = _Outline()
    lines: list[str] = []  # the lines of the list or table being read; it becomes one paragraph
    row: list[str] = []
    nesting = heading = 0
    in_cell = in_list = False
    for token in MarkdownIt("commonmark").enable("table").parse(text):
        kind = token.type
        if kind == "heading_open":
            heading = int(token.tag[1])
        elif kind == "heading_close":
            heading = 0
        elif kind in ("bullet_list_open", "ordered_list_open", "table_open"):
            nesting += 1
            in_list = in_list or kind != "table_open"
        elif kind in ("bullet_list_close", "ordered_list_close", "table_close"):
            nesting -= 1
            if nesting == 0:
                out.paragraph("\n".join(lines))
                lines, in_list = [], False
        elif kind in ("th_open", "td_open", "th_close", "td_close"):
            in_cell = kind.endswith("_open")
        elif kind == "tr_close":
            lines.append(" | ".join(row))
            row = []
        elif kind in ("inline", "fence", "code_block", "html_block"):
            content = _markdown_text(token)
            if heading:
                out.heading(heading, content)
            elif in_cell and content.strip():
                row.append(" ".join(content.split()))
            elif nesting:
                lines.append(f"- {content}" if in_list and kind == "inline" else content)
            else:
                out.paragraph(content)
    return out.title or fallback_title, out.finish()


def _markdown_text(token: Token) -> str:
    """A block's readable text: link and image URLs dropped, raw HTML reduced to its text."""
    if token.type == "html_block":
        return BeautifulSoup(token.content, "html.parser").get_text(" ")
    if token.type != "inline":
        return token.content
    parts = []
    for child in token.children or []:
        if child.type in ("text", "text_special", "code_inline", "image"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" " if child.type == "softbreak" else "\n")
    return "".join(parts)


def _parse_html(markup: str | bytes, name: str) -> tuple[str, list[Section]]:
    """Keep headings and block text; refuse the login page a platform serves in place of a document."""
    soup = BeautifulSoup(markup, "html.parser")  # bytes: BeautifulSoup honours the page's declared charset
    title_tag = soup.find("title")
    page_title = " ".join(title_tag.get_text().split()) if title_tag else ""
    for tag in soup.find_all(_HTML_DROP):
        tag.decompose()
    first_h1 = soup.find("h1")
    named_login = any(_LOGIN.search(t) for t in (page_title, first_h1.get_text(" ") if first_h1 else ""))
    # A titled "Sign in" page is a login page only when short: a long one is likely an article about it.
    if soup.select_one("form input[type='password' i]") or (named_login and len(soup.get_text(" ", strip=True)) < 2000):
        raise DocumentError(f"{name} is a login page, not the document (the download was not authorised)")
    for br in soup.find_all("br"):
        br.replace_with(_BR)
    out = _Outline()
    block: Tag | None = None
    group: object = None  # text runs sharing a nearest block ancestor (a table row for cells) join up
    cell: Tag | None = None
    parts: list[str] = []

    def emit() -> None:
        text = "".join(parts)
        if block is None or block.name != "pre":
            text = re.sub(rf"[^\S{_BR}]+", " ", text)
        text = text.replace(_BR, "\n")
        if block is not None and re.fullmatch(r"h[1-6]", block.name):
            out.heading(int(block.name[1]), text)
        else:
            out.paragraph(text)
        parts.clear()

    for string in (soup.body or soup).descendants:
        if not isinstance(string, NavigableString) or isinstance(string, PreformattedString):
            continue  # tags, and strings that are not text (comments, doctypes, CDATA)
        nearest = string.parent  # the nearest block-level ancestor (find_parent is far slower)
        while nearest is not None and nearest.name not in _HTML_BLOCKS:
            nearest = nearest.parent
        is_cell = nearest is not None and nearest.name in ("td", "th")
        key = nearest.parent if is_cell and nearest is not None else nearest
        if key is not group:
            emit()
            block, group, cell = nearest, key, None
        if is_cell and nearest is not cell:
            parts.append(" | " if cell is not None else "")
            cell = nearest
        parts.append(str(string))
    emit()
    return out.title or page_title, out.finish()


def _parse_docx(data: bytes, name: str, limits: WordLimits) -> tuple[str, list[Section]]:
    """Paragraphs, headings and tables in order, streamed from the package (`docx_stream`) once
    `check_word_package` has found it safe to open; a file holding more than one upload may is refused."""
    out = _Outline()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            check_word_package(archive, name)
            for block in read_blocks(archive, limits):
                if block.level is not None:
                    out.heading(block.level, block.text)
                else:
                    out.paragraph(block.text)
            fallback_title = core_title(archive)
    except UnsafePackage as exc:
        raise DocumentError(str(exc)) from None
    except TooLarge as exc:
        raise DocumentError(
            f"{name} holds {exc}, more than one upload may (split it, or raise EXPERTBOT_MAX_UPLOAD_MB), "
            "so it was not read"
        ) from None
    except (zipfile.BadZipFile, KeyError, etree.XMLSyntaxError, OSError, ValueError) as exc:
        raise DocumentError(f"{name} could not be read as a Word document") from exc
    return out.title or fallback_title, out.finish()


def _parse_pdf(data: bytes, name: str) -> tuple[str, list[Section]]:
    """Title, headings and re-flowed paragraphs from the layout (`pdf_layout`): no sentence ends at a line end."""
    try:
        reader = PdfReader(io.BytesIO(data))
        locked = reader.is_encrypted and not _unlock(reader)
        page_count = 0 if locked else len(reader.pages)
    except Exception as exc:  # pypdf raises many types on malformed files
        raise DocumentError(f"{name} is damaged or not a valid PDF") from exc
    if locked:
        raise DocumentError(f"{name} is password-protected; share an unlocked copy")
    if page_count == 0:
        raise DocumentError(f"{name} is damaged or not a valid PDF")
    title, headings, blocks = layout(read_lines(reader))
    if not any(blocks):
        raise DocumentError(f"{name} has no extractable text (scanned? share a text PDF)")
    out = _Outline()
    out.title = _pdf_title(reader) or title or "\x00"  # a placeholder keeps level-1 headings in the paths
    for paragraph in blocks[0]:
        out.paragraph(paragraph)
    for (level, heading), paragraphs in zip(headings, blocks[1:], strict=True):
        out.heading(level, heading)
        for paragraph in paragraphs:
            out.paragraph(paragraph)
    return out.title.strip("\x00"), out.finish()


def _unlock(reader: PdfReader) -> bool:
    """Many "encrypted" PDFs only restrict printing and open with the empty password."""
    try:
        return reader.decrypt("") != PasswordType.NOT_DECRYPTED
    except Exception:  # unsupported encryption is as closed to us as an unknown password
        return False


def _pdf_title(reader: PdfReader) -> str:
    try:
        title = (reader.metadata.title if reader.metadata else None) or ""
    except Exception:  # metadata is optional; a broken info dictionary should not sink the document
        return ""
    title = re.sub(r"^Microsoft \w+ - ", "", " ".join(str(title).split()))
    return "" if re.fullmatch(r"(?i)untitled\d*|document\d*|[\w-]+\.(?:docx?|odt|pdf)", title) else title
