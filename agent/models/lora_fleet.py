"""Keeping OpenAI-compatible servers (vLLM) in step with each tenant's current adapter, through vLLM's runtime LoRA
API: `POST /v1/load_lora_adapter {"lora_name", "lora_path"}` and `POST /v1/unload_lora_adapter {"lora_name"}`.

Before a request is sent, `LoraFleet.lease(tenant)` compares the tenant's CURRENT pointer with what this process
last acted on. A new version is loaded on every server before any request names it; a server that refuses it
(vLLM answers 4xx/5xx) keeps serving the previous version (or the base model), and the reason is logged and
written to the tenant's registry (`SERVING.json`) where `expertbot status` and `adapters list` read it. The
superseded version is unloaded from a server once no request of this process is using it there. A server that
has forgotten its adapters (restarted: 404 "The model `x` does not exist") is told so with `forget(url)`; the
next lease loads the adapter again.

Several bot processes share the servers: "already loaded" (400) counts as loaded, and "cannot be found" (404) on
unload as unloaded, so processes that notice a promotion at different times do not fight.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agent.models.registry import adapter_name, tenant_registry

log = logging.getLogger(__name__)
SERVING_FILE = "SERVING.json"
"""Per tenant registry: per server, the version loaded there and the last refusal (for status and listings)."""


class AdapterRefused(RuntimeError):
    """A server answered a load request with an error: the adapter is not usable there."""


@dataclass(frozen=True)
class Lease:
    """Where one request goes: the server's base URL and the model name to send (an adapter, or the base)."""

    url: str
    model: str
    version: str | None


@dataclass
class _Tenant:
    """One tenant on one server: the pointer acted on, the version served there, the last refusal."""

    pointer: str | None = None  # None: never looked at
    version: str | None = None
    refused: dict[str, Any] | None = None


@dataclass
class _Server:
    url: str
    loaded: set[str] = field(default_factory=set)  # adapter names this process knows are loaded there
    in_use: Counter[str] = field(default_factory=Counter)  # requests of this process using each name
    retired: set[str] = field(default_factory=set)  # superseded names to unload once unused
    tenants: dict[str, _Tenant] = field(default_factory=dict)


def server_path(local: Path, adapters_root: Path, server_root: str | None) -> str:
    """The adapter folder as the servers see it: `local` re-rooted from the local adapters root to theirs."""
    if not server_root:
        return str(local)
    relative = local.resolve().relative_to(adapters_root.resolve())
    return f"{server_root.rstrip('/')}/{relative.as_posix()}"


class LoraFleet:
    """The runtime-LoRA state of every server in `urls` (each an OpenAI base URL ending in /v1), for one process."""

    def __init__(
        self,
        urls: list[str],
        *,
        adapters_root: Path,
        base_model: str,
        server_root: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        if not urls:
            raise ValueError("at least one server URL is needed")
        self.adapters_root = Path(adapters_root)
        self.base_model = base_model
        self.server_root = server_root
        self._servers = {u.rstrip("/"): _Server(u.rstrip("/")) for u in urls}
        self._turn = itertools.cycle(list(self._servers))
        self._lock = threading.RLock()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(timeout=timeout_s, headers=headers)

    @property
    def urls(self) -> list[str]:
        return list(self._servers)

    # --- serving ------------------------------------------------------------------------------------------------

    @contextmanager
    def lease(self, tenant: str, url: str | None = None) -> Iterator[Lease]:
        """The next server in turn (or `url`) with the tenant's adapter loaded there, held while the request runs."""
        with self._lock:
            server = self._servers[url.rstrip("/")] if url else self._servers[next(self._turn)]
            self._follow(tenant)
            state = server.tenants.setdefault(tenant, _Tenant())
            if state.version is not None and adapter_name(tenant, state.version) not in server.loaded:
                self._load_on(server, tenant, state.version, state)  # forgotten (restart): load it again
            name = adapter_name(tenant, state.version) if state.version else None
            if name:
                server.in_use[name] += 1
        try:
            yield Lease(server.url, name or self.base_model, state.version)
        finally:
            if name:
                with self._lock:
                    server.in_use[name] -= 1
                    self._unload_retired(server)

    def forget(self, url: str) -> None:
        """The server answered "The model ... does not exist": it restarted and forgot every adapter."""
        with self._lock:
            server = self._servers[url.rstrip("/")]
            log.warning("%s no longer knows its adapters (restarted?); they are loaded again on next use", url)
            server.loaded.clear()
            server.retired.clear()

    def sync(self, tenant: str) -> None:
        """Act on the tenant's pointer now on every server (what the first request after a promotion does)."""
        with self._lock:
            self._follow(tenant)

    def status(self) -> dict[str, dict[str, Any]]:
        """url -> tenant -> {"version", "refused"} as this process last saw it."""
        with self._lock:
            return {
                s.url: {t: {"version": v.version, "refused": v.refused} for t, v in s.tenants.items()}
                for s in self._servers.values()
            }

    def close(self) -> None:
        self._http.close()

    # --- internals (called with the lock held) ------------------------------------------------------------------

    def _follow(self, tenant: str) -> None:
        registry = tenant_registry(self.adapters_root, tenant)
        pointer = registry.pointer()
        changed = False
        for server in self._servers.values():
            state = server.tenants.setdefault(tenant, _Tenant())
            if state.pointer == pointer:
                continue
            state.pointer, changed = pointer, True  # act once per change: a refused version is not retried per request
            if not pointer:
                self._switch(server, tenant, state, None)
                continue
            if registry.get(pointer) is None:
                reason = f"version {pointer!r} is missing or incomplete in the registry"
                self._refused(server, tenant, state, pointer, reason)
                continue
            self._load_on(server, tenant, pointer, state)
        if changed:
            self._write_status(tenant)

    def _load_on(self, server: _Server, tenant: str, version: str, state: _Tenant) -> None:
        """Load `version` on `server` and make it the tenant's there; on refusal keep what was served."""
        name = adapter_name(tenant, version)
        found = tenant_registry(self.adapters_root, tenant).get(version)
        if found is None:
            self._refused(server, tenant, state, version, f"version {version!r} is missing in the registry")
            return
        path = server_path(found.path, self.adapters_root, self.server_root)
        try:
            self._post(server.url, "load_lora_adapter", {"lora_name": name, "lora_path": path}, ok_if="already")
        except AdapterRefused as exc:
            self._refused(server, tenant, state, version, str(exc))
            if state.version is not None and state.version != version:
                previous = adapter_name(tenant, state.version)
                if previous not in server.loaded:  # the previous one is gone too (restart): the base model answers
                    log.error("%s: %s of %s is not loaded either; the base model answers", server.url, previous, tenant)
                    state.version = None
            elif state.version == version:
                state.version = None
            return
        server.loaded.add(name)
        server.retired.discard(name)
        state.refused = None
        self._switch(server, tenant, state, version)

    def _switch(self, server: _Server, tenant: str, state: _Tenant, version: str | None) -> None:
        previous, state.version = state.version, version
        if previous and previous != version:
            server.retired.add(adapter_name(tenant, previous))
            self._unload_retired(server)
        if previous != version:
            log.info(
                "%s: %s now serves %s (was %s)",
                server.url,
                version or "the base model",
                tenant,
                previous or "the base model",
            )

    def _refused(self, server: _Server, tenant: str, state: _Tenant, version: str, reason: str) -> None:
        state.refused = {"version": version, "reason": reason, "at": time.time()}
        keeps = state.version or "the base model"
        log.error("%s refused adapter %s of %s: %s; %s keeps answering", server.url, version, tenant, reason, keeps)

    def _unload_retired(self, server: _Server) -> None:
        for name in sorted(server.retired):
            if server.in_use[name] > 0:
                continue
            server.retired.discard(name)
            server.loaded.discard(name)
            try:
                self._post(server.url, "unload_lora_adapter", {"lora_name": name}, ok_if="cannot be found")
            except (AdapterRefused, httpx.HTTPError) as exc:
                log.warning("%s: unloading %s failed: %s", server.url, name, exc)

    def _post(self, url: str, route: str, body: dict[str, str], *, ok_if: str) -> str:
        """POST to a runtime-LoRA route; vLLM's error message becomes AdapterRefused unless it contains `ok_if`."""
        response = self._http.post(f"{url}/{route}", json=body)
        if response.status_code == 200:
            return response.text
        message = _error_message(response)
        if ok_if in message:
            return message
        raise AdapterRefused(f"{route} answered {response.status_code}: {message}")

    def _write_status(self, tenant: str) -> None:
        """Record per server what serves the tenant, for `expertbot status` in another process."""
        record = {
            s.url: {"version": s.tenants[tenant].version, "refused": s.tenants[tenant].refused}
            for s in self._servers.values()
            if tenant in s.tenants
        }
        write_serving_status(tenant_registry(self.adapters_root, tenant).root, record)


def _error_message(response: httpx.Response) -> str:
    """vLLM's {"error": {"message": ...}}, an older flat {"message": ...}, FastAPI's {"detail": ...}, or the text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500]
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        for key in ("message", "detail"):
            if body.get(key):
                return str(body[key])
    return json.dumps(body)[:500]


def write_serving_status(registry_root: Path, record: dict[str, Any]) -> None:
    registry_root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".serving-", dir=registry_root)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2, sort_keys=True)
        os.replace(tmp, registry_root / SERVING_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_serving_status(registry_root: Path) -> dict[str, Any]:
    """What the serving processes last recorded ({} when nothing was)."""
    try:
        data = json.loads((registry_root / SERVING_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def loaded_on_servers(urls: list[str], *, api_key: str | None = None, timeout_s: float = 10.0) -> dict[str, Any]:
    """url -> the adapter names a server reports in GET /v1/models (or {"error": ...} when it cannot be asked)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    out: dict[str, Any] = {}
    with httpx.Client(timeout=timeout_s, headers=headers) as http:
        for url in urls:
            try:
                response = http.get(f"{url.rstrip('/')}/models")
                response.raise_for_status()
                cards = response.json().get("data", [])
                out[url] = {"adapters": [str(c["id"]) for c in cards if c.get("parent")]}
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                out[url] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def refusals(adapters_root: Path, tenant: str | None = None) -> list[dict[str, Any]]:
    """Every refusal the serving processes recorded (one tenant's, or all): registry, server, version, reason,
    and the version that answers there instead (None: the base model). For `expertbot status` and /status."""
    root = Path(adapters_root)
    folders = [tenant_registry(root, tenant).root] if tenant else (sorted(root.iterdir()) if root.is_dir() else [])
    found = []
    for folder in folders:
        for url, record in read_serving_status(folder).items():
            refused = record.get("refused") if isinstance(record, dict) else None
            if refused:
                found.append(
                    {
                        "registry": folder.name,
                        "server": url,
                        "version": refused.get("version"),
                        "reason": refused.get("reason"),
                        "serving": record.get("version"),
                    }
                )
    return found
