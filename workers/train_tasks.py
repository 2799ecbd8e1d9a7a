"""Thin Celery tasks of the training loop; the work is in `workers/training/pipeline.py`.

Imported by every worker (the app includes it), so heavy modules (torch, transformers) load inside the tasks.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from agent.settings import get_settings
from workers.celery_app import app
from workers.connections import TRANSIENT, redis_client
from workers.names import TRAIN_ADAPTER, TRAIN_NIGHTLY, TRAIN_QUEUE

log = logging.getLogger(__name__)


@app.task(bind=True, name=TRAIN_ADAPTER, autoretry_for=TRANSIENT, retry_backoff=5, max_retries=5)
def train_adapter(self: Task, tenant: str, force: bool = False) -> dict[str, Any]:
    """Retrain `tenant`'s adapter (unless nothing is new and not `force`), gate it, promote it if it wins."""
    from workers.training.pipeline import run_training

    def report(stage: str, done: int, total: int) -> None:
        self.update_state(state="PROGRESS", meta={"stage": stage, "done": done, "total": total, "tenant": tenant})

    return run_training(get_settings(), tenant, force=force, report=report).to_dict()


@app.task(name=TRAIN_NIGHTLY)
def train_nightly() -> dict[str, Any]:
    """Celery beat's nightly entry: queue one training per tenant whose inputs changed since its last run."""
    from workers.training.pipeline import tenants_with_new_data

    tenants = tenants_with_new_data(redis_client(get_settings().effective_redis_url))
    queued = {
        t: str(app.send_task(TRAIN_ADAPTER, args=[t], kwargs={"force": False}, queue=TRAIN_QUEUE).id) for t in tenants
    }
    log.info("nightly training queued for %s", ", ".join(queued) or "no tenant (nothing new)")
    return {"queued": queued}
