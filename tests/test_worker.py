"""Ingestion through real Celery worker processes and Redis: progress, bad files, and a worker killed mid-job."""

from __future__ import annotations

import os
import signal
import time
from uuid import uuid4

import pytest
from fpdf import FPDF

from agent.knowledge.chunking import chunk_document
from agent.knowledge.parsers import parse_document
from agent.types import Audience
from workers.client import job_status, submit_ingest, wait_for_job


def _pdf(text: str) -> bytes:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


def _audience() -> Audience:
    return Audience("worker-tests", f"C-{uuid4().hex[:8]}")


def test_a_shared_pdf_becomes_searchable_and_reports_progress(services, worker, knowledge):
    audience = _audience()
    data = _pdf("Quarterly Report. The Ostrava plant produced 48,200 widgets in the third quarter.")
    job = submit_ingest(services, audience, data, "q3-report.pdf")
    assert job_status(job).state in ("queued", "running", "done")
    status = wait_for_job(job, timeout_s=120)
    assert status.state == "done", status
    assert status.result["status"] == "ready" and status.result["chunks"] >= 1
    hits = knowledge.search(audience, "How many widgets did Ostrava produce?", k=1)
    assert hits and hits[0].doc_id == "q3-report.pdf" and "48,200" in hits[0].text


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("broken.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\ngarbage", "damaged"),
        ("empty.txt", b"", "empty"),
        ("notes.md", os.urandom(4096), "binary"),
    ],
)
def test_bad_files_end_with_a_clear_reason_and_the_worker_keeps_serving(services, worker, name, data, reason):
    audience = _audience()
    status = wait_for_job(submit_ingest(services, audience, data, name), timeout_s=120)
    assert status.state == "done" and status.result["status"] == "failed"
    assert name in status.result["reason"] and reason in status.result["reason"]
    ok = wait_for_job(submit_ingest(services, audience, b"# Fine\n\nA healthy document.", "fine.md"), timeout_s=120)
    assert ok.result["status"] == "ready"


def test_a_worker_killed_mid_job_loses_nothing_and_duplicates_nothing(services, knowledge):
    """kill -9 a worker while it embeds a long document; another worker finishes it: every chunk exactly once."""
    from bot.localstack import start_worker

    queue = f"ingest-kill-{uuid4().hex[:6]}"
    audience = _audience()
    sections = [
        f"## Part {i}\n\n" + f"Paragraph {i} explains step {i} of the rollout procedure. " * 12 for i in range(600)
    ]
    data = ("# Rollout Handbook\n\n" + "\n\n".join(sections)).encode()
    expected = len(chunk_document(parse_document(data, "handbook.md"), services.chunk_chars))

    victim = start_worker(services, [queue], 1, f"victim-{queue}")
    try:
        job = submit_ingest(services, audience, data, "handbook.md", queue=queue)
        deadline = time.monotonic() + 120
        while (status := job_status(job)).done == 0 or status.stage != "embedding":
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
        assert status.done < expected, "the job finished before it could be interrupted"
        os.killpg(victim.pid, signal.SIGKILL)
    finally:
        victim.stop()

    killed_at = time.monotonic()
    rescuer = start_worker(services, [queue], 1, f"rescuer-{queue}")
    try:
        final = wait_for_job(job, timeout_s=300)
        assert final.state == "done" and final.result["status"] == "ready", final
        assert time.monotonic() - killed_at < 120
        time.sleep(services.job_visibility_s + 3)  # a second delivery would show up in the log by now
        deliveries = rescuer.log_path.read_text().count(f"[{job}] received")
    finally:
        rescuer.stop()
    assert deliveries == 1, "a running job must not be handed out twice"
    assert final.result["chunks"] == expected
    assert knowledge.store.count(audience) == expected
    (doc,) = knowledge.store.list_documents(audience.tenant, [audience.scope])
    assert doc.chunks == expected


def test_an_ingest_workers_pool_process_loads_the_embedding_model_when_it_starts(services, worker):
    """The first document shared after a start must not wait for the model: each pool process loads it at once."""
    deadline = time.monotonic() + 60
    while "loaded at start" not in worker.log_tail(None) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert f"embedding model {services.embedding_model} loaded at start" in worker.log_tail(None)


def test_a_job_that_fails_unexpectedly_drops_its_file_from_redis(services, worker):
    """Not a bad file (that ends "done", with a reason) and not a lost service (retried): a bug. Celery marks the
    job failed and `IngestTask.on_failure` drops the parked upload at once instead of leaving it to expire."""
    from typing import cast

    from workers.client import blob_size, submit_ingest_blob

    broken = Audience(cast(str, 12345), "C-broken")  # a tenant that is not text: the Milvus filter cannot be built
    job, key = submit_ingest_blob(services, broken, b"# Notes\n\nA healthy document.", "notes.md")
    assert blob_size(services, key) > 0
    status = wait_for_job(job, timeout_s=120)
    assert status.state == "error", status
    assert blob_size(services, key) == 0
