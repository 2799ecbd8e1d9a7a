"""Following ingestion jobs in a terminal, with a progress bar per document."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from agent.settings import Settings
from agent.types import Audience
from workers.client import JobStatus, job_status, submit_ingest


def submit_files(
    settings: Settings, audience: Audience, files: Iterable[tuple[Path, str]], console: Console
) -> dict[str, str]:
    """Queue local files (path, document id) for ingestion; oversized ones are skipped with a message."""
    jobs: dict[str, str] = {}
    for path, doc_id in files:
        if path.stat().st_size > settings.max_upload_bytes:
            console.print(f"[yellow]skipped[/] {path}: over the {settings.max_upload_mb:g} MB limit")
            continue
        jobs[submit_ingest(settings, audience, path.read_bytes(), path.name, doc_id)] = doc_id
    return jobs


def describe(status: JobStatus, name: str) -> str:
    """One line a person understands: what happened to their document, or why not."""
    if status.state == "error":
        return f"{name}: failed ({status.error})"
    if status.state != "done":
        return f"{name}: {status.stage} {status.done}/{status.total}" if status.total else f"{name}: {status.stage}"
    result = status.result
    if result.get("status") == "ready":
        return f"{name}: ready, {result.get('chunks', 0)} passages"
    if result.get("status") == "unchanged":
        return f"{name}: unchanged, {result.get('reason', '')}"
    return f"{name}: failed, {result.get('reason', 'unknown reason')}"


def follow_jobs(jobs: dict[str, str], console: Console, poll_s: float = 0.3) -> list[str]:
    """Show live progress until every job has finished; returns the names of documents that failed."""
    failed: list[str] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bars:
        tasks: dict[str, TaskID] = {job: bars.add_task(name, total=None) for job, name in jobs.items()}
        pending = set(jobs)
        while pending:
            for job in sorted(pending):
                status = job_status(job)
                bars.update(
                    tasks[job],
                    description=describe(status, jobs[job]),
                    total=status.total or None,
                    completed=status.done,
                )
                if status.finished:
                    pending.discard(job)
                    ok = status.state == "done" and status.result.get("status") in ("ready", "unchanged")
                    bars.update(tasks[job], total=1, completed=1)
                    if not ok:
                        failed.append(jobs[job])
            time.sleep(poll_s)
    return failed
