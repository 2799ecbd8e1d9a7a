"""/healthz over real HTTP: ready with Redis, Milvus and a worker up; 503 naming what is down, never an address."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from agent.models.registry import ADAPTER_FILES, tenant_registry
from agent.settings import Settings
from bot.health import add_health_routes
from bot.localstack import free_port


async def _get(settings: Settings, path: str = "/healthz") -> tuple[int, dict[str, Any]]:
    app = web.Application()
    add_health_routes(app, settings)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as resp:
            return resp.status, await resp.json()
    finally:
        await runner.cleanup()


def _adapter(tmp_path: Path) -> Path:
    src = tmp_path / "saved"
    src.mkdir()
    for name in ADAPTER_FILES:
        (src / name).write_bytes(b"{}")
    registry = tenant_registry(tmp_path / "adapters", "local")  # the default tenant's
    version = registry.add(src, {"base_model": "tiny", "data_hash": "x", "examples": 1, "metrics": {}})
    registry.promote(version.name)
    return tmp_path / "adapters"


def test_healthz_is_ready_with_services_a_worker_and_the_current_adapter(services, worker, tmp_path):
    settings = services.model_copy(update={"adapters_dir": _adapter(tmp_path)})
    status, body = asyncio.run(_get(settings))
    assert status == 200, body
    assert body["ok"] is True and body["redis"] == "ok" and body["milvus"] == "ok"
    assert any(name.startswith("session@") for name in body["workers"])
    assert body["adapter"] == "v0001" and body["tenants_with_adapter"] == 1


def test_healthz_is_503_when_milvus_is_down_and_reveals_no_address(services):
    dead = free_port()
    settings = services.model_copy(update={"milvus_uri": f"http://127.0.0.1:{dead}", "milvus_token": "root:Secret42"})
    status, body = asyncio.run(_get(settings))
    assert status == 503 and body["ok"] is False
    assert body["milvus"].startswith("down") and body["redis"] == "ok"
    text = json.dumps(body)
    assert str(dead) not in text and "Secret42" not in text
