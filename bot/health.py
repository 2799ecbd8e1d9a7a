"""One health report for `expertbot status` (and later the bots' /healthz)."""

from __future__ import annotations

from typing import Any

import redis

from agent.settings import Settings


def check_health(settings: Settings) -> dict[str, Any]:
    """Reachability of Redis, Milvus and the workers, queue depths, and the knowledge base's size."""
    from agent.knowledge.service import open_knowledge
    from workers.client import ping_workers, queue_depths

    report: dict[str, Any] = {"redis": "down", "milvus": "down", "workers": [], "queues": {}, "chunks": None}
    try:
        redis.Redis.from_url(settings.effective_redis_url, socket_timeout=2).ping()
        report["redis"] = f"ok ({settings.effective_redis_url.split('@')[-1]})"
        report["queues"] = queue_depths(settings)
        report["workers"] = ping_workers()
    except redis.RedisError as exc:
        report["redis"] = f"down: {exc}"
    try:
        knowledge = open_knowledge(settings)
        report["chunks"] = knowledge.store.count()
        report["documents"] = len(knowledge.store.list_documents(settings.default_tenant))
        report["milvus"] = f"ok ({settings.effective_milvus_uri})"
    except Exception as exc:  # any failure here means "not usable", whatever its type
        report["milvus"] = f"down: {type(exc).__name__}: {str(exc)[:200]}"
    report["ok"] = report["redis"].startswith("ok") and report["milvus"].startswith("ok") and bool(report["workers"])
    return report
