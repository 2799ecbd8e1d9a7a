"""Poison jobs: a job whose worker dies at every delivery (killed for memory, crashed) is set aside, not retried.

Jobs are acknowledged only when they end and requeued when their worker dies (`acks_late`,
`task_reject_on_worker_lost`), which is what keeps a job safe through a crash, and also what would hand a file
that kills its worker back to a worker for as long as its blob lives. Each delivery of a message is counted in
Redis; one delivered more than `job_max_deliveries` times ends as failed with a reason the person who shared the
file is shown, its blob is dropped, and it is listed for operators (`dead_letters`).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from agent import keys
from agent.settings import Settings
from workers.connections import redis_client

log = logging.getLogger(__name__)

KEEP_DEAD_LETTERS = 1000
COUNTER_TTL_S = 24 * 3600


def _key(job_id: str, retries: int) -> str:
    """One counter per message: a Celery retry is a new message (same id, one more retry), counted afresh."""
    return keys.deliveries(job_id, retries)


def count_delivery(settings: Settings, job_id: str, retries: int) -> int:
    """Count this delivery of the job's message; returns how many times it has been delivered."""
    client = redis_client(settings.effective_redis_url)
    key = _key(job_id, retries)
    pipe = client.pipeline()
    pipe.incr(key)
    pipe.expire(key, COUNTER_TTL_S)
    count, _ = pipe.execute()
    return int(count)


def forget_deliveries(settings: Settings, job_id: str, retries: int) -> None:
    redis_client(settings.effective_redis_url).delete(_key(job_id, retries))


def reason(source: str, attempts: int) -> str:
    """What the person who shared the file is told."""
    return (
        f"reading {source} stopped the worker {attempts} times in a row (too large or too complex to read safely), "
        "so it was set aside; an admin can find it among the dead-lettered jobs"
    )


def dead_letter(settings: Settings, job_id: str, task: str, attempts: int, **details: Any) -> None:
    """List the job for operators (the newest KEEP_DEAD_LETTERS) and log it."""
    entry = {"job": job_id, "task": task, "attempts": attempts, "at": time.time(), **details}
    client = redis_client(settings.effective_redis_url)
    pipe = client.pipeline()
    pipe.lpush(keys.DEAD_LETTERS, json.dumps(entry, ensure_ascii=False))
    pipe.ltrim(keys.DEAD_LETTERS, 0, KEEP_DEAD_LETTERS - 1)
    pipe.execute()
    log.error("job %s (%s) dead-lettered after %d deliveries: %s", job_id, task, attempts, details)


def dead_letters(settings: Settings, limit: int = 50) -> list[dict[str, Any]]:
    """The newest dead-lettered jobs, newest first."""
    raw = redis_client(settings.effective_redis_url).lrange(keys.DEAD_LETTERS, 0, limit - 1)
    return [json.loads(item) for item in raw]
