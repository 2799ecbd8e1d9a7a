"""Hostile files shared in a conversation: each gets a clear reply, the worker stays up, memory stays bounded.

The files go through `Assistant.share`, the path every chat surface uses (some are refused before queueing,
the rest by the worker), and the files the worker must refuse are also sent to it directly.
"""

from __future__ import annotations

import asyncio
import io
import os
import zipfile
from typing import Any

from pypdf import PdfWriter

from agent.types import Audience
from bot.assistant import Assistant
from bot.bench.reliability.harness import Harness, group_memory_mb
from bot.conversation import Conversation
from workers.client import submit_ingest, wait_for_job

LOGIN_PAGE = b"""<!DOCTYPE html><html><head><title>Sign in to your account</title></head><body>
<h1>Sign in</h1><form action="/login" method="post"><input type="email" name="user">
<input type="password" name="password"><button>Sign in</button></form></body></html>"""


def encrypted_pdf() -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    writer.encrypt(user_password="only-the-owner-knows", owner_password="owner", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def zip_bomb_docx(unpacked_mb: int = 300) -> bytes:
    """A .docx whose document part inflates to `unpacked_mb` MB of zeros (about 0.3 MB on disk)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", b"<Types/>")
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            block = bytes(1024 * 1024)
            for _ in range(unpacked_mb):
                member.write(block)
    return out.getvalue()


def hostile_set(max_upload_bytes: int) -> list[tuple[str, bytes, str, bool]]:
    """(file name, bytes, a word the reply must contain, whether the worker must see it)."""
    return [
        ("corrupt.pdf", b"%PDF-1.7\n" + os.urandom(8192), "damaged", True),
        ("locked.pdf", encrypted_pdf(), "password-protected", True),
        ("bomb.docx", zip_bomb_docx(), "zip bomb", True),
        ("empty.txt", b"", "empty", False),
        ("huge.md", b"# Huge\n\n" + b"all work and no play " * (max_upload_bytes // 21 + 1), "limit", False),
        ("handbook.pdf", LOGIN_PAGE, "login page", True),
        ("notes.txt", os.urandom(64 * 1024), "binary", True),
    ]


async def _share(assistant: Assistant, conv: Conversation, name: str, data: bytes) -> tuple[str, bool]:
    last = ""
    ok = True
    async for progress in assistant.share(conv, data, name):
        last, ok = progress.text, progress.ok
    return last, ok


def hostile_files(h: Harness, memory_bound_mb: float | None = None) -> dict[str, Any]:
    """`memory_bound_mb`: the allowed growth of the worker's peak memory (default: twice the upload limit, room for
    one file at the limit and its text). The worker refuses an oversized file unread and a zip bomb uninflated."""
    settings = h.settings
    bound = memory_bound_mb if memory_bound_mb is not None else 2 * settings.max_upload_bytes / 1024 / 1024
    worker = h.start_worker("hostile")
    audience = Audience("reliability", "hostile")
    conv = Conversation("bench", audience, "hostile-thread", "U-bench", private=False)
    assistant = Assistant(settings)

    warm = wait_for_job(submit_ingest(settings, audience, b"# Warm-up\n\nA healthy document.", "warm.md"), 300)
    baseline = group_memory_mb(worker.pid)
    unclear: list[str] = []
    replies: dict[str, str] = {}
    for name, data, word, to_worker in hostile_set(settings.max_upload_bytes):
        text, ok = asyncio.run(_share(assistant, conv, name, data))
        replies[name] = text
        if ok or name not in text or word not in text:
            unclear.append(f"{name}: {text}")
        if not to_worker:  # refused before queueing: the worker must refuse it too, should it get there
            status = wait_for_job(submit_ingest(settings, audience, data, name), 120)
            reason = str(status.result.get("reason", ""))
            if status.result.get("status") != "failed" or name not in reason or word not in reason:
                unclear.append(f"{name} (worker): {status.result or status.error}")
    after = group_memory_mb(worker.pid)
    healthy = asyncio.run(_share(assistant, conv, "after.md", b"# After\n\nThe worker still reads documents."))
    growth = round(after["peak_mb"] - baseline["peak_mb"], 1)
    return {
        "ok": warm.state == "done" and not unclear and worker.alive() and healthy[1] and growth <= bound,
        "files": len(replies),
        "unclear_replies": len(unclear),
        "worker_restarts": 0 if worker.alive() else 1,
        "worker_peak_mb_before": baseline["peak_mb"],
        "worker_peak_mb_after": after["peak_mb"],
        "peak_growth_mb": growth,
        "bound_mb": round(bound, 1),
        **({"problems": unclear[:3]} if unclear else {}),
        "sample_reply": replies.get("bomb.docx", ""),
    }
