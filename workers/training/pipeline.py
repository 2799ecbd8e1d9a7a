"""One training run for one tenant: skip when nothing is new, lock, build data, train, gate, register.

The Celery task (`workers/train_tasks.py`) is a thin shell over `run_training`. State shared between runs and
workers lives in Redis: the lock (one training at a time across every worker) and, per tenant, the "changed at"
stamp the last finished run consumed, so the nightly run skips tenants with nothing new. Everything written on
disk lives under `<data_dir>/training/<tenant folder>/`: data files, checkpoints (kept until the run finishes, so a
killed run resumes), and the candidate adapter, which the tenant's own registry copies into a version.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import redis
from redis.exceptions import LockError

from agent import keys
from agent.learning import LearningStore
from agent.models.registry import tenant_folder, tenant_registry
from agent.settings import Settings
from agent.types import TENANT_WIDE, Audience
from workers.connections import redis_client
from workers.training.data import Dataset, build_dataset
from workers.training.gate import GateConfig, decide, evaluate
from workers.training.train import TrainArgs, TrainResult, load_config
from workers.training.train import main as train_main

log = logging.getLogger(__name__)


Status = Literal["promoted", "rejected", "skipped", "busy"]
Report = Callable[[str, int, int], None]
"""report(stage, done, total)"""


class TrainingAborted(RuntimeError):
    """The training lock was lost (e.g. Redis restarted): stop rather than risk two overlapping runs."""


@dataclass
class Outcome:
    tenant: str
    status: Status
    reason: str
    version: str | None = None
    against: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    examples: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tenant_dir(settings: Settings, tenant: str) -> Path:
    return settings.data_dir / "training" / tenant_folder(tenant)


def consumed_at(client: redis.Redis[bytes], tenant: str) -> float:
    raw = client.get(keys.train_consumed(tenant))
    return float(raw) if raw else 0.0


def has_new_data(client: redis.Redis[bytes], tenant: str) -> bool:
    return LearningStore(client).changed_at(tenant) > consumed_at(client, tenant)


def tenants_with_new_data(client: redis.Redis[bytes]) -> list[str]:
    """Every tenant whose training inputs changed since its last finished run."""
    return sorted(t for t in LearningStore(client).changed_tenants() if has_new_data(client, t))


class _HeldLock:
    """The Redis training lock, renewed in the background while held; `lost` is set if a renewal fails."""

    def __init__(self, client: redis.Redis[bytes], ttl_s: int) -> None:
        self.lock = client.lock(keys.TRAIN_LOCK, timeout=ttl_s, thread_local=False)
        self.ttl_s = ttl_s
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="train-lock", daemon=True)

    def acquire(self, wait_s: float) -> bool:
        if not self.lock.acquire(blocking=True, blocking_timeout=wait_s):
            return False
        self._thread.start()
        return True

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.lock.reacquire()
            except (LockError, redis.RedisError):
                log.exception("lost the training lock")
                self.lost.set()
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        with contextlib.suppress(LockError):
            self.lock.release()


def tenant_documents(settings: Settings, tenant: str) -> list[tuple[str, str]]:
    """The passages of the tenant's tenant-wide documents (no other scope is ever read).

    The connection is closed after use: runs are hours apart, and an idle gRPC channel left open is dropped by
    the server ("too many pings"), which would fail the next night's run.
    """
    from agent.knowledge.service import open_knowledge

    store = open_knowledge(settings).store
    try:
        return store.passages(Audience(tenant, TENANT_WIDE))
    finally:
        store.client.close()


def trainer_and_gate(settings: Settings) -> tuple[dict[str, Any], GateConfig]:
    trainer, gate = load_config(settings.train_config)
    return trainer, GateConfig.from_dict(gate)


def train_candidate(
    settings: Settings, dataset: Dataset, work: Path, trainer: dict[str, Any], report: Report | None = None
) -> TrainResult:
    """Train a candidate adapter into `work/candidate` (resuming from `work/checkpoints` when they match).

    Training continues from the tenant's own current adapter, never another tenant's.
    """
    registry = tenant_registry(settings.adapter_registry, dataset.tenant)
    current = registry.current()
    init = None
    if trainer.get("continue_from_current", True) and current and current.manifest["base_model"] == settings.phi3_model:
        init = current.path
    args = TrainArgs(
        base_model=settings.phi3_model,
        train_file=dataset.write(work / "data"),
        output_dir=work / "candidate",
        checkpoint_dir=work / "checkpoints",
        init_adapter=init,
        **trainer,
    )
    shutil.rmtree(args.output_dir, ignore_errors=True)

    def progress(step: int, total: int, loss: float) -> None:
        if report:
            report(f"training (loss {loss:.3f})", step, total)

    return train_main(args, progress, data_hash=dataset.data_hash)


def judge_and_register(
    settings: Settings, dataset: Dataset, result: TrainResult, gate: GateConfig, report: Report | None = None
) -> Outcome:
    """Score the candidate against what serves the tenant now; add it to the tenant's registry; promote it only if
    it passed."""
    registry = tenant_registry(settings.adapter_registry, dataset.tenant)
    current = registry.current()
    against = current.name if current else "the base model"
    if report:
        report("evaluating", 0, 1)
    cand, ref = evaluate(settings.phi3_model, result.output_dir, current.path if current else None, dataset, gate)
    decision = decide(cand, ref, gate, against)
    training = result.summary()
    metrics = {"candidate": _finite(cand), "reference": _finite(ref), "against": against}
    manifest = {
        "base_model": settings.phi3_model,
        "tenant": dataset.tenant,
        "data_hash": dataset.data_hash,
        "examples": dataset.counts,
        "metrics": metrics,
        "gate": {"promoted": decision.promote, "reason": decision.reason},
        "training": training,
    }
    version = registry.add(result.output_dir, manifest)
    if decision.promote:
        registry.promote(version.name)
    status: Status = "promoted" if decision.promote else "rejected"
    log.info("adapter %s for %s %s: %s", version.name, dataset.tenant, status, decision.reason)
    return Outcome(dataset.tenant, status, decision.reason, version.name, against, metrics, training, dataset.counts)


def run_training(settings: Settings, tenant: str, *, force: bool = False, report: Report | None = None) -> Outcome:
    """The whole run; returns what happened and why (skipped and busy runs change nothing)."""
    client = redis_client(settings.effective_redis_url)
    changed = LearningStore(client).changed_at(tenant)
    if not force and changed <= consumed_at(client, tenant):
        return Outcome(tenant, "skipped", "no new training data since the last run")
    held = _HeldLock(client, settings.train_lock_ttl_s)
    if not held.acquire(wait_s=settings.train_lock_ttl_s + 2):
        return Outcome(tenant, "busy", "another training is running; try again when it has finished")
    try:
        trainer, gate = trainer_and_gate(settings)
        if report:
            report("building data", 0, 0)
        dataset = build_dataset(
            LearningStore(client),
            tenant,
            tenant_documents(settings, tenant),
            max_doc_passages=settings.train_max_doc_passages,
        )
        if not dataset.train:
            client.set(
                keys.train_consumed(tenant), repr(changed)
            )  # nothing usable: wait for new data before trying again
            return Outcome(
                tenant,
                "skipped",
                "no tenant-wide training data yet: teach terms (`expertbot teach`), vote on answers, or share "
                "documents tenant-wide",
            )
        work = tenant_dir(settings, tenant)

        def guarded(stage: str, done: int, total: int) -> None:
            if held.lost.is_set():
                raise TrainingAborted("the training lock was lost; stopping so that two runs never overlap")
            if report:
                report(stage, done, total)

        result = train_candidate(settings, dataset, work, trainer, guarded)
        outcome = judge_and_register(settings, dataset, result, gate, guarded)
        client.set(keys.train_consumed(tenant), repr(changed))
        shutil.rmtree(work / "checkpoints", ignore_errors=True)
        shutil.rmtree(work / "candidate", ignore_errors=True)
        return outcome
    finally:
        held.release()


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    """NaN (a metric with nothing to measure) as null, so the manifest stays strict JSON."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
