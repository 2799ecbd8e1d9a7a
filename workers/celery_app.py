"""The Celery application: queues, routes and the reliability settings every worker runs with.

Configuration is computed lazily from `agent.settings` (when Celery first reads it), not at import.

Reliability: jobs are acknowledged only when finished (`acks_late`) and requeued when a worker process dies
(`task_reject_on_worker_lost`). With Redis, a message taken by a worker that was killed outright only comes back
after the transport's visibility timeout (an hour by default). We set that timeout to a few seconds so lost jobs
return quickly, and `UnackedHeartbeat` keeps the messages of jobs that are still running from being handed out
again: every two seconds it renews, in Redis, the timestamp of each message this worker holds.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, ClassVar

from celery import Celery, bootsteps, signals
from celery.schedules import crontab

from agent.knowledge.embeddings import get_embeddings, use_threads
from agent.logging_setup import job_id, setup_logging
from agent.settings import get_settings
from workers.names import FORGET_DOCUMENT, INGEST_DOCUMENT, INGEST_QUEUE, TRAIN_ADAPTER, TRAIN_NIGHTLY, TRAIN_QUEUE


def celery_config() -> dict[str, Any]:
    settings = get_settings()
    url = settings.effective_redis_url
    return {
        "broker_url": url,
        "result_backend": url,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_track_started": True,
        "result_extended": True,
        "result_expires": 7 * 24 * 3600,
        # Poison jobs (issue 20): ingestion and forget jobs have time limits (training has its own budget), a worker
        # process that grew too large is replaced after its job, and a job whose worker keeps dying is
        # dead-lettered by the task itself (workers/deadletter.py).
        "task_annotations": {
            name: {"soft_time_limit": settings.job_soft_time_limit_s, "time_limit": settings.job_time_limit_s}
            for name in (INGEST_DOCUMENT, FORGET_DOCUMENT)
        },
        "worker_max_memory_per_child": settings.worker_max_memory_mb * 1024 or None,
        "task_default_queue": INGEST_QUEUE,
        "task_routes": {
            INGEST_DOCUMENT: {"queue": INGEST_QUEUE},
            FORGET_DOCUMENT: {"queue": INGEST_QUEUE},
            TRAIN_ADAPTER: {"queue": TRAIN_QUEUE},
            TRAIN_NIGHTLY: {"queue": TRAIN_QUEUE},
        },
        "beat_schedule": nightly_schedule(settings.train_at),
        "task_create_missing_queues": True,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": settings.job_visibility_s,
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
        },
        "worker_hijack_root_logger": False,
        # Storing a job's result or state through a Redis outage waits for Redis instead of losing the result.
        "result_backend_always_retry": True,
        "result_backend_max_retries": 30,
        "result_backend_max_sleep_between_retries_ms": 10_000,
    }


def nightly_schedule(at: str) -> dict[str, Any]:
    """Celery beat's one entry: the nightly retraining at `at` (HH:MM, UTC), dispatched on the train queue."""
    hour, minute = (int(p) for p in at.split(":"))
    return {
        "nightly-training": {
            "task": TRAIN_NIGHTLY,
            "schedule": crontab(hour=hour, minute=minute),
            "options": {"queue": TRAIN_QUEUE},
        }
    }


class UnackedHeartbeat(bootsteps.StartStopStep):  # type: ignore[misc]
    """Renew the Redis visibility timestamps of the messages this worker is working on."""

    requires: ClassVar[set[str]] = {"celery.worker.consumer.tasks:Tasks"}
    interval_s = 2.0

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._timer: Any = None

    def start(self, c: Any) -> None:
        self._timer = c.timer.call_repeatedly(self.interval_s, self.renew, (c,), priority=10)

    def renew(self, c: Any) -> None:
        channel: Any = getattr(c.task_consumer, "channel", None)
        qos = getattr(channel, "qos", None)
        # kombu's virtual QoS keeps every delivered, unacknowledged message in `_delivered`.
        tags = list(getattr(qos, "_delivered", {}).keys())
        if tags and hasattr(channel, "unacked_index_key"):
            # A pooled connection: `channel.client` is the one blocked in BRPOP, and a command sent on it would
            # take the BRPOP's reply, losing the message that arrived.
            with channel.conn_or_acquire() as client:
                client.zadd(channel.unacked_index_key, dict.fromkeys(tags, time.time()), xx=True)

    def stop(self, c: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _setup_logging(loglevel: int | str | None = None, **_: Any) -> None:
    """Celery leaves logging to us when this signal has a receiver: JSON lines, secrets redacted."""
    settings = get_settings()
    setup_logging(settings, level=loglevel or "INFO", fmt=settings.log_format)


_log = logging.getLogger(__name__)
_warm_up_embeddings = False  # set in an ingest worker before its pool forks, read in each pool process


def _share_cores(sender: Any = None, **_: Any) -> None:
    """Give each pool process its share of the cores for embedding (set here, before the pool forks).

    Embedding is the CPU-bound part of ingestion: N processes with one core's threads each embed about 1.4 times
    faster than N processes that each try to use every core (measured: README, "Benchmarks"). Also notes whether
    this worker serves the ingest queue: only then do its pool processes load the embedding model at start.
    """
    global _warm_up_embeddings
    cores = os.cpu_count() or 1
    processes = getattr(sender, "concurrency", None)
    if not isinstance(processes, int) or processes < 1:
        processes = cores  # "auto": Celery starts one process per core
    use_threads(get_settings().embed_threads or max(1, cores // processes))
    queues = getattr(getattr(getattr(sender, "app", None), "amqp", None), "queues", None)
    _warm_up_embeddings = INGEST_QUEUE in (getattr(queues, "consume_from", None) or {})


def _load_embeddings_in_background(**_: Any) -> None:
    """In each pool process of an ingest worker, load the embedding model as soon as the process starts.

    Otherwise the first job of every process loads it (about a second of CPU; more while the other processes do
    the same), so the first documents shared after a start wait for it. In a thread, because Celery gives a new
    pool process only a few seconds (`worker_proc_alive_timeout`) to report that it is up; a job that arrives
    meanwhile waits for the model to be loaded, as it would have loaded it anyway.
    """
    if not _warm_up_embeddings:
        return

    def load() -> None:
        name, started = get_settings().embedding_model, time.monotonic()
        try:
            get_embeddings(name).embed_query("warm-up")
        except Exception:  # the first job loads it again and reports the reason with the job
            _log.exception("could not load the embedding model %s at start", name)
            return
        _log.info("embedding model %s loaded at start in %.1f s", name, time.monotonic() - started)

    threading.Thread(target=load, name="embedding-warm-up", daemon=True).start()


def _job_id_in_logs(task_id: str | None = None, **_: Any) -> None:
    """Every line a job logs (also from agent/ code) carries its job id."""
    job_id.set(task_id)


def _clear_job_id(**_: Any) -> None:
    job_id.set(None)


signals.setup_logging.connect(_setup_logging)
signals.worker_init.connect(_share_cores)
signals.worker_process_init.connect(_load_embeddings_in_background)
signals.task_prerun.connect(_job_id_in_logs)
signals.task_postrun.connect(_clear_job_id)

app = Celery("expertbot", include=["workers.tasks", "workers.train_tasks"])
app.add_defaults(celery_config)
app.steps["consumer"].add(UnackedHeartbeat)

QUEUES = (INGEST_QUEUE, TRAIN_QUEUE)
