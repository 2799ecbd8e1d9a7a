"""Enqueue jobs and read their progress by job id: the only part of `workers/` that chat surfaces import.

Jobs are sent by task name (`send_task`), so a surface never imports the task code or its heavy dependencies.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from celery.result import AsyncResult

from agent import keys
from agent.settings import Settings
from agent.types import Audience
from workers import blobs
from workers.celery_app import QUEUES, app
from workers.connections import redis_client
from workers.names import FORGET_DOCUMENT, INGEST_DOCUMENT, INGEST_QUEUE, TRAIN_ADAPTER, TRAIN_QUEUE


@dataclass(frozen=True)
class JobStatus:
    """Where a job stands. `state` is queued, running, done or error; `result` is set once done."""

    job_id: str
    state: str
    stage: str = ""
    done: int = 0
    total: int = 0
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def finished(self) -> bool:
        return self.state in ("done", "error")


def submit_ingest(
    settings: Settings,
    audience: Audience,
    data: bytes,
    source: str,
    doc_id: str | None = None,
    *,
    queue: str = INGEST_QUEUE,
) -> str:
    """Park the file in Redis and queue its ingestion; returns the job id."""
    return submit_ingest_blob(settings, audience, data, source, doc_id, queue=queue)[0]


def submit_ingest_blob(
    settings: Settings,
    audience: Audience,
    data: bytes,
    source: str,
    doc_id: str | None = None,
    *,
    queue: str = INGEST_QUEUE,
) -> tuple[str, str]:
    """`submit_ingest` that also returns where the file is parked: (job id, blob key), for the fault harness."""
    key = blobs.store(settings, data)
    result = app.send_task(INGEST_DOCUMENT, args=[key, source, audience.tenant, audience.scope, doc_id], queue=queue)
    return str(result.id), key


def blob_size(settings: Settings, key: str) -> int:
    """How many bytes a parked file still holds in Redis (0 once a job has dropped it)."""
    return blobs.size(settings, key)


def deliveries(settings: Settings, job_id: str, retries: int = 0) -> int:
    """How often one attempt of a job has been delivered to a worker (a poison job's count)."""
    return int(redis_client(settings.effective_redis_url).get(keys.deliveries(job_id, retries)) or 0)


def submit_forget(audience: Audience, doc_id: str) -> str:
    result = app.send_task(FORGET_DOCUMENT, args=[audience.tenant, audience.scope, doc_id], queue=INGEST_QUEUE)
    return str(result.id)


def submit_training(tenant: str, *, force: bool = False) -> str:
    """Queue a retraining of `tenant`'s adapter on the train queue; `force` trains even when no data is new."""
    result = app.send_task(TRAIN_ADAPTER, args=[tenant], kwargs={"force": force}, queue=TRAIN_QUEUE)
    return str(result.id)


def job_status(job_id: str) -> JobStatus:
    res = AsyncResult(job_id, app=app)
    state, info = res.state, res.info
    if state == "PROGRESS" and isinstance(info, dict):
        return JobStatus(job_id, "running", info.get("stage", ""), int(info.get("done", 0)), int(info.get("total", 0)))
    if state == "STARTED":
        return JobStatus(job_id, "running", "starting")
    if state == "SUCCESS":
        result = info if isinstance(info, dict) else {"value": info}
        return JobStatus(job_id, "done", "done", result=result)
    if state == "FAILURE":
        return JobStatus(job_id, "error", error=f"{type(info).__name__}: {info}")
    if state == "RETRY":
        return JobStatus(job_id, "running", "waiting to retry", error=str(info))
    return JobStatus(job_id, "queued", "queued")


def follow_jobs(job_ids: Iterable[str], *, poll_s: float = 0.25, timeout_s: float | None = None) -> Iterator[JobStatus]:
    """Every job's status at each poll until all have finished (a finished job's once) or `timeout_s` passed.

    The one loop that follows jobs, for the CLI's progress bars, the chat surfaces' progress messages and
    `wait_for_job`; an async caller pulls it with `asyncio.to_thread(next, statuses, None)`.
    """
    pending = list(dict.fromkeys(job_ids))
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while pending:
        for job_id in list(pending):
            status = job_status(job_id)
            if status.finished:
                pending.remove(job_id)
            yield status
        if not pending or (deadline is not None and time.monotonic() > deadline):
            return
        time.sleep(poll_s)


def wait_for_job(job_id: str, timeout_s: float = 600, poll_s: float = 0.25) -> JobStatus:
    """The job's final status, or its last one when `timeout_s` passed first."""
    *_, last = follow_jobs([job_id], poll_s=poll_s, timeout_s=timeout_s)
    return last


def queue_depths(settings: Settings) -> dict[str, int]:
    """Jobs waiting in each queue (jobs being worked on are not counted)."""
    client = redis_client(settings.effective_redis_url)
    return {q: int(client.llen(q)) for q in QUEUES}


def ping_workers(timeout_s: float = 1.0) -> list[str]:
    """Names of the workers that answered."""
    replies = app.control.ping(timeout=timeout_s) or []
    return sorted(name for reply in replies for name in reply)
