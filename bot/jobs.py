"""Shared documents and training runs as a person follows them: queueing local files, following jobs, and the
one sentence that says how a job ended (the CLI, the console and the chat surfaces all show these)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from agent.knowledge.formats import upload_problem
from agent.language import phrase, phrases
from agent.settings import Settings
from agent.types import Audience
from workers.client import JobStatus, follow_jobs, submit_ingest

INGESTED = ("ready", "unchanged")
"""The ingest results that leave the document searchable."""


def submit_files(
    settings: Settings, audience: Audience, files: Iterable[tuple[Path, str]], console: Console
) -> tuple[dict[str, str], list[str]]:
    """Queue local files (path, document id) for ingestion: (job id -> document id, why each other was skipped).

    Empty or oversized files are skipped, each with its reason printed whole (no wrapping, no ellipsis)."""
    jobs: dict[str, str] = {}
    skipped: list[str] = []
    for path, doc_id in files:
        problem = upload_problem(str(path), path.stat().st_size, settings.max_upload_bytes)
        if problem:
            skipped.append(problem)
            console.print(f"[yellow]skipped[/] {escape(problem)}", soft_wrap=True)
            continue
        jobs[submit_ingest(settings, audience, path.read_bytes(), path.name, doc_id)] = doc_id
    return jobs, skipped


def succeeded(status: JobStatus) -> bool:
    """Whether a finished job did what was asked (a document is searchable, an adapter was judged)."""
    return status.state == "done" and status.result.get("status") not in ("failed", None)


FAILURE_KINDS = {
    "TimeLimitExceeded": "it took too long to read",
    "SoftTimeLimitExceeded": "it took too long to read",
    "WorkerLostError": "the worker reading it stopped",
    "MemoryError": "it needed more memory than a worker has",
}


def failure_kind(error: str) -> str:
    """What a person is told about a failed job: the kind of failure, never its message (hosts, paths: the log's)."""
    kind = error.split(":", 1)[0].strip()
    return FAILURE_KINDS.get(kind, "an internal error") + " (the details are in the bot's log)"


def reading(name: str, stage: str, language: str = "en") -> str:
    """Where a document stands ("Reading handbook.pdf: queued") in `language`; a stage the workers add later
    stays as they word it."""
    key = "stage_" + stage.replace(" ", "_")
    progress = phrase(key, language) if key in phrases() else stage
    return phrase("status_reading", language, name=name, progress=progress)


def describe(status: JobStatus, name: str, language: str = "en") -> str:
    """One sentence a person understands: where a job stands, or how it ended and why.

    A document's sentences are in the sharer's `language`; the reasons inside them (the parser's, the worker's)
    and the training outcomes, which only operators see, stay English."""
    if status.state == "error":
        return phrase("status_failed", language, name=name, reason=f"{failure_kind(status.error)}.")
    if status.state != "done":
        if status.total:
            progress = phrase("status_passages", language, done=status.done, total=status.total)
            return phrase("status_reading", language, name=name, progress=progress)
        return reading(name, status.stage, language)
    result = status.result
    outcome, reason = result.get("status"), result.get("reason") or "unknown reason"
    if outcome == "ready":
        return phrase("status_ready", language, name=name, chunks=result.get("chunks", 0))
    if outcome == "unchanged":
        return phrase("status_unchanged", language, name=name, reason=reason)
    if outcome == "promoted":
        return f"Promoted {result.get('version')}: {reason}."
    if outcome == "rejected":
        return f"Rejected {result.get('version')}: {reason}; {result.get('against') or 'the base model'} keeps serving."
    if outcome in ("skipped", "busy"):
        return f"Training {outcome}: {reason}."
    return phrase("status_failed", language, name=name, reason=f"{reason}.")


def follow_with_bars(jobs: dict[str, str], console: Console, poll_s: float = 0.3) -> dict[str, str]:
    """Live progress bars until every job has finished; returns the documents that failed, each with its sentence.

    A bar's line is cut to the terminal's width, so the caller prints these sentences again, whole."""
    failed: dict[str, str] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bars:
        tasks: dict[str, TaskID] = {job: bars.add_task(escape(name), total=None) for job, name in jobs.items()}
        for status in follow_jobs(jobs, poll_s=poll_s):
            task, name = tasks[status.job_id], jobs[status.job_id]
            sentence = describe(status, name)
            bars.update(task, description=escape(sentence), total=status.total or None, completed=status.done)
            if status.finished:
                bars.update(task, total=1, completed=1)
                if not (succeeded(status) and status.result.get("status") in INGESTED):
                    failed[name] = sentence
    return failed
