"""A real exchange for the README (issue 15): one article shared as a Lithuanian PDF, a Nepali HTML page and a
Traditional Chinese Word file, asked about in those languages and in English, through the chat core.

    C=../shared/eval/corpus A=md/04.Fine-tuning/LetPhi3gotoIndustriy.md
    PYTHONPATH=. python eval/answers_demo.py $C/lt/$A $C/ne/$A $C/zh-tw/$A

Prints each question, the route line and the reply with its sources, as the console shows them.
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

import docx
from fpdf import FPDF
from markdown_it import MarkdownIt

from agent.chat import ChatCore
from agent.knowledge.embeddings import get_embeddings
from agent.knowledge.ingest import ingest_bytes
from agent.knowledge.parsers import parse_document
from agent.knowledge.service import Knowledge
from agent.knowledge.store import KnowledgeStore
from agent.settings import load_settings
from agent.types import Audience, ChatRequest

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
QUESTIONS = [
    "Kiek GPU reikia QLoRA, norint tobulinti 70B parametrų modelį?",
    "QLoRA ले ७०B प्यारामिटर मोडेल fine-tune गर्न कति GPU चाहिन्छ?",
    "我們的資料經常變化，應該用微調還是 RAG？",
    "How many GPUs does QLoRA need for a 70B model?",
    "Which learning rate should we use for LoRA?",
]


def to_pdf(markdown: str) -> bytes:
    """Title 20 pt, headings 15 pt, body 11 pt, wrapped at the margin, as a word processor would."""
    parsed = parse_document(markdown.encode(), "article.md")
    pdf = FPDF()
    pdf.add_font("Body", fname=FONT)
    pdf.add_page()
    pdf.set_font("Body", size=20)
    pdf.multi_cell(0, 11, parsed.title, new_x="LMARGIN", new_y="NEXT")
    for section in parsed.sections:
        if section.heading:
            pdf.set_font("Body", size=15)
            pdf.multi_cell(0, 8, section.heading.split(" > ")[-1], new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Body", size=11)
        for paragraph in section.text.split("\n\n"):
            pdf.multi_cell(0, 6, paragraph, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(3)
    return bytes(pdf.output())


def to_docx(markdown: str) -> bytes:
    parsed = parse_document(markdown.encode(), "article.md")
    document = docx.Document()
    document.add_heading(parsed.title, level=0)
    for section in parsed.sections:
        if section.heading:
            document.add_heading(section.heading.split(" > ")[-1], level=min(section.heading.count(" > ") + 1, 3))
        for paragraph in section.text.split("\n\n"):
            document.add_paragraph(paragraph)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def to_html(markdown: str) -> bytes:
    body = MarkdownIt("commonmark").enable("table").render(markdown)
    return f"<!doctype html><html lang='ne'><head><meta charset='utf-8'></head><body>{body}</body></html>".encode()


def main(lt: Path, ne: Path, zh_tw: Path) -> None:
    settings = load_settings()
    model = get_embeddings(settings.embedding_model)
    audience = Audience("demo", "C-industry")
    files = [
        ("phi3-pramone.pdf", to_pdf(lt.read_text(encoding="utf-8"))),
        ("phi3-udyog.html", to_html(ne.read_text(encoding="utf-8"))),
        ("phi3-industry-zh-tw.docx", to_docx(zh_tw.read_text(encoding="utf-8"))),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        store = KnowledgeStore(str(Path(tmp) / "demo.db"), collection="demo", dim=model.dim, embedding_name=model.name)
        for name, data in files:
            result = ingest_bytes(
                store, model, audience, data=data, source=name, doc_id=name, max_bytes=settings.max_upload_bytes
            )
            print(f"shared {name}: {result.status}, title “{result.title}”, {result.chunks} passages")
        store.flush()
        core = ChatCore(Knowledge(store, settings))
        for n, question in enumerate(QUESTIONS):
            reply = core.answer(ChatRequest(question, audience, thread=f"demo-{n}"))
            print(f"\n**Q:** {question}\n")
            print(f"route: {reply.route} (confidence {reply.confidence:.2f}; {reply.why})")
            print(reply.text)
            for i, s in enumerate(reply.sources, 1):
                print(f"  [{i}] {s.title}{f' › {s.heading}' if s.heading else ''}  ({s.doc_id})")
        store.client.close()


if __name__ == "__main__":
    main(*(Path(p) for p in sys.argv[1:4]))
