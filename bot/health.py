"""Health: the full report of `expertbot status`, and the /healthz route every bot process mounts."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis
from aiohttp import web

from agent.settings import Settings

HEALTH_CACHE_S = 1.0


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


def readiness(settings: Settings) -> dict[str, Any]:
    """What a bot process needs to serve, checked cheaply (no model loading): /healthz answers with this.

    Redis and Milvus must answer, at least one worker must answer a ping (else shared files would wait
    forever), and, when answers come from an in-process Phi-3, the adapter registries must be readable. `adapter`
    names the default tenant's current adapter version (None: the base model serves it); `tenants_with_adapter`
    counts the tenants that have one (each tenant has its own registry).
    """
    from pymilvus import MilvusClient

    from agent.models.registry import tenant_registry, tenants_with_adapter
    from workers.client import ping_workers

    checks: dict[str, Any] = {}
    try:
        redis.Redis.from_url(settings.effective_redis_url, socket_timeout=2, socket_connect_timeout=2).ping()
        checks["redis"] = "ok"
    except redis.RedisError as exc:
        checks["redis"] = f"down: {type(exc).__name__}"
    try:
        client = MilvusClient(settings.effective_milvus_uri, token=settings.milvus_token or "", timeout=3)
        try:
            client.list_collections()
        finally:
            client.close()
        checks["milvus"] = "ok"
    except Exception as exc:  # any failure here means "not usable", whatever its type
        checks["milvus"] = f"down: {type(exc).__name__}"
    try:
        checks["workers"] = ping_workers(timeout_s=1.0) if checks["redis"] == "ok" else []
    except Exception as exc:
        checks["workers"] = []
        checks["workers_error"] = type(exc).__name__
    try:
        current = tenant_registry(settings.adapter_registry, settings.default_tenant).current()
        checks["adapter"] = current.name if current else None
        checks["tenants_with_adapter"] = tenants_with_adapter(settings.adapter_registry)
        adapter_ok = True
    except Exception as exc:  # a corrupt registry must show here, not at the first domain question
        checks["adapter"] = f"unreadable: {type(exc).__name__}"
        adapter_ok = settings.generator != "phi3"
    checks["generator"] = settings.generator
    if settings.generator == "openai" and settings.openai_lora == "runtime":
        from agent.models.lora_fleet import refusals

        # adapters a server refused (the previous version or the base model answers there meanwhile)
        checks["adapters_refused"] = refusals(settings.adapter_registry)
    checks["ok"] = checks["redis"] == "ok" and checks["milvus"] == "ok" and bool(checks["workers"]) and adapter_ok
    return checks


def add_health_routes(app: web.Application, settings: Settings, *, path: str = "/healthz") -> None:
    """Mount GET /healthz on a bot's aiohttp app: 200 with the checks when ready, 503 with them when not.

    The checks run in a thread (they block on the network) and are cached for a second, so a load balancer
    probing often costs the services nothing. Error texts carry only exception type names: a health endpoint
    may be reachable from outside and must not reveal addresses or credentials.
    """
    cache: dict[str, Any] = {"at": -1.0, "report": None}
    lock = asyncio.Lock()

    async def healthz(request: web.Request) -> web.Response:
        async with lock:
            if cache["report"] is None or time.monotonic() - cache["at"] > HEALTH_CACHE_S:
                cache["report"] = await asyncio.to_thread(readiness, settings)
                cache["at"] = time.monotonic()
        report: dict[str, Any] = cache["report"]
        return web.json_response(report, status=200 if report["ok"] else 503)

    app.router.add_get(path, healthz)
