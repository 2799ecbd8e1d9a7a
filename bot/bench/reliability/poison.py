"""Poison documents: a Word file built to cost a worker gigabytes, and a job whose worker dies at every delivery.

The first is a Word file with more text than one upload may hold (`word_package.WordLimits`): read as a stream,
it must be refused with a clear reply as soon as the limit is passed, the worker's peak memory growing by at most
twice the upload limit. (The security review's file, 0.67 MB of .docx and 9.7 MB of XML that cost +145 MB and
19 s of CPU through python-docx, is now read in a few megabytes: `tests/test_security_jobs.py`.) The second is
what the OOM killer does to a job that is too big anyway: kill -9 the worker whenever it holds the job; after
`job_max_deliveries` deliveries the job must end, dead-lettered, with a reply for the person who shared the
file, and its blob gone.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import signal
import time
import zipfile
from collections.abc import Callable
from typing import Any
from uuid import uuid4

import docx

from agent.knowledge.word_package import WordLimits
from agent.settings import Settings
from agent.types import Audience
from bot.assistant import Assistant
from bot.bench.reliability.faults import _WORDS, make_document
from bot.bench.reliability.harness import Harness, group_memory_mb, wait_until
from bot.conversation import Conversation
from bot.jobs import describe
from bot.localstack import ManagedProcess
from workers.client import blob_size, deliveries, job_status, submit_ingest_blob


def word_file(xml_bytes: int, total_bytes: int = 0, paragraph: str = "<w:p/>", body: str | None = None) -> bytes:
    """A .docx whose XML parts unpack to about `xml_bytes` (repeating `paragraph`, or `body` as given), padded to
    `total_bytes` with an incompressible image."""
    blank = io.BytesIO()
    docx.Document().save(blank)
    base = zipfile.ZipFile(io.BytesIO(blank.getvalue()))
    document = base.read("word/document.xml").decode()
    xml = sum(m.file_size for m in base.infolist() if m.filename.endswith((".xml", ".rels")))
    count = max(0, (xml_bytes - xml) // len(paragraph))
    head, tail = document.split("<w:body>", 1)
    document = head + "<w:body>" + (paragraph * count if body is None else body) + tail
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for member in base.infolist():
            archive.writestr(member.filename, document if member.filename == "word/document.xml" else base.read(member))
        padding = total_bytes - out.tell() - 512
        if padding > 0:
            archive.writestr(zipfile.ZipInfo("word/media/image1.png"), os.urandom(padding))
    return out.getvalue()


def word_text(chars: int, words_per_paragraph: int = 40, seed: int = 20) -> str:
    """Body XML of paragraphs of varied words, about `chars` characters of text, compressing as Word text does."""
    rng = random.Random(seed)
    parts, size = [], 0
    while size < chars:
        words = " ".join(rng.choice(_WORDS) + str(rng.randrange(100)) for _ in range(words_per_paragraph))
        parts.append(f"<w:p><w:r><w:t>{words}</w:t></w:r></w:p>")
        size += len(words)
    return "".join(parts)


def review_poison(xml_mb: float = 9.7) -> bytes:
    """Like the review's file: under a megabyte, 9.7 MB of XML (varied text, so it compresses as Word text does)."""
    rng = random.Random(20)
    parts, size = [], 0
    while size < xml_mb * 1024 * 1024:
        words = " ".join(rng.choice(_WORDS) + str(rng.randrange(10)) for _ in range(3))
        part = f'<w:p><w:pPr><w:pStyle w:val="Normal"/></w:pPr><w:r><w:rPr><w:b/></w:rPr><w:t>{words}</w:t></w:r></w:p>'

        parts.append(part)
        size += len(part)
    return word_file(0, body="".join(parts))


def submit_raw(settings: Settings, audience: Audience, data: bytes, source: str, queue: str) -> tuple[str, str]:
    """Queue an ingestion as `workers.client.submit_ingest` does, keeping the blob key: (job id, blob key)."""
    return submit_ingest_blob(settings, audience, data, source, source, queue=queue)


def kill(proc: ManagedProcess) -> None:
    """kill -9 the worker and its pool, as the OOM killer would its pool process."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.popen.wait()
    proc.stop()


def _deliveries(settings: Settings, job: str) -> int:
    return deliveries(settings, job)


def kill_at_every_delivery(
    settings: Settings, start: Callable[[str], ManagedProcess], queue: str, kills: int, timeout_s: float = 300
) -> dict[str, Any]:
    """Share a long document on `queue`; kill the worker `kills` times while it holds the job; then let a worker
    take it once more. Returns what became of the job and its blob."""
    audience = Audience("reliability", f"poison-{uuid4().hex[:6]}")
    name, data = make_document("poison", 0, 150)
    job, key = submit_raw(settings, audience, data, name, queue)
    started, killed = time.monotonic(), 0
    for k in range(kills):
        worker = start(f"poison{k}-{uuid4().hex[:4]}")
        # Killed once the job runs in the pool process (and has counted its delivery), as the OOM killer would.
        running = wait_until(lambda: job_status(job).state == "running", timeout_s, poll_s=0.05)
        wait_until(lambda n=k + 1: _deliveries(settings, job) >= n, 5, poll_s=0.05)
        kill(worker)
        if not running:
            break
        killed += 1
    last = start(f"poison-last-{uuid4().hex[:4]}")
    try:
        wait_until(lambda: job_status(job).finished, timeout_s, poll_s=0.25)
    finally:
        last.stop()
    status = job_status(job)
    reply = describe(status, name)
    return {
        "kills": killed,
        "state": status.state,
        "status": status.result.get("status"),
        "reply": reply,
        "blob_left": blob_size(settings, key) > 0,
        "seconds": round(time.monotonic() - started, 1),
    }


def poison_document(h: Harness) -> dict[str, Any]:
    """A Word file with too much text refused with bounded worker memory; a job killing its worker dead-lettered."""
    settings = h.settings
    bound = 2 * settings.max_upload_bytes / 1024 / 1024
    worker = h.start_worker("poison-memory")
    assistant = Assistant(settings)
    conv = Conversation("bench", Audience("reliability", "poison"), "poison-thread", "U-bench", private=False)

    async def share(name: str, data: bytes) -> tuple[str, bool]:
        last, ok = "", True
        async for progress in assistant.share(conv, data, name):
            last, ok = progress.text, progress.ok
        return last, ok

    asyncio.run(share("warm.md", b"# Warm-up\n\nA healthy document."))
    baseline = group_memory_mb(worker.pid)
    too_much = WordLimits.for_upload(settings.max_upload_bytes).text_chars + 64 * 1024
    refusal, refused_ok = asyncio.run(share("poison.docx", word_file(0, body=word_text(too_much))))
    growth = round(group_memory_mb(worker.pid)["peak_mb"] - baseline["peak_mb"], 1)
    h.stop_worker(worker)
    tries = settings.job_max_deliveries
    run = kill_at_every_delivery(settings, lambda n: h.start_worker(n), "ingest", tries)
    told = run["status"] == "failed" and "set aside" in str(run["reply"])
    return {
        "ok": not refused_ok and "poison.docx" in refusal and growth <= bound and told and not run["blob_left"],
        "refusal": refusal,
        "peak_growth_mb": growth,
        "bound_mb": round(bound, 1),
        "max_deliveries": tries,
        "kills": run["kills"],
        "dead_lettered": told,
        "user_told": run["reply"],
        "blob_left": run["blob_left"],
        "seconds": run["seconds"],
    }
