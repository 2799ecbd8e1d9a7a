"""The adapter registry: a folder of immutable LoRA adapter versions and a pointer to the one being served.

Layout::

    <root>/versions/v0001/{adapter_config.json, adapter_model.safetensors, manifest.json}
    <root>/CURRENT    the served version's name ("" or absent: the base model alone)
    <root>/HISTORY    append-only "<time>\\t<promote|rollback>\\t<version>" lines, replayed for rollback

Writers (the trainer, an operator) and readers (every serving process) share it through the file system only:
a version appears by one rename of a complete folder, and CURRENT is replaced atomically, so a reader never sees
a half-written adapter or a torn pointer. Readers poll `pointer()` between requests, which is one small read.

Each tenant has a registry of its own, `<adapters root>/<tenant_folder(tenant)>/`: an adapter is trained on one
tenant's material and can repeat it, so it must never answer another tenant (`tenant_registry`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
MANIFEST = "manifest.json"
MANIFEST_KEYS = ("base_model", "created_at", "parent", "data_hash", "examples", "metrics")
_VERSION = re.compile(r"^v(\d{4,})$")


def tenant_folder(tenant: str) -> str:
    """The one tenant id -> folder name mapping: a readable slug plus a hash of the exact id.

    The slug alone could collide ("a/b" and "a:b") or be unsafe (".."); the hash keeps ids apart and the name
    valid both as a folder and as a peft adapter name (no dots).
    """
    slug = re.sub(r"[^A-Za-z0-9_-]", "_", tenant)[:60]
    return f"{slug}-{hashlib.sha256(tenant.encode()).hexdigest()[:10]}"


def adapter_name(tenant: str, version: str) -> str:
    """The name a tenant's version is served under (a peft adapter in process, a LoRA on vLLM): unique across
    tenants, so two tenants' v0001 never mix, and `<tenant_folder>-<version>`, so a served name leads back to it."""
    return f"{tenant_folder(tenant)}-{version}"


def tenant_registry(root: Path | str, tenant: str) -> AdapterRegistry:
    """The tenant's own registry under the adapters root."""
    return AdapterRegistry(Path(root) / tenant_folder(tenant))


def tenants_with_adapter(root: Path | str) -> int:
    """How many tenant registries under `root` serve an adapter (a cheap count for health reports)."""
    base = Path(root)
    if not base.is_dir():
        return 0
    return sum(1 for p in base.iterdir() if p.is_dir() and AdapterRegistry(p).pointer())


@dataclass(frozen=True)
class AdapterVersion:
    name: str
    path: Path
    manifest: dict[str, Any]


class AdapterRegistry:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @property
    def _versions_dir(self) -> Path:
        return self.root / "versions"

    # --- reading -------------------------------------------------------------------------------------------

    def pointer(self) -> str:
        """The CURRENT file's text ("" when none): cheap enough to check before every request."""
        try:
            return (self.root / "CURRENT").read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return ""

    def get(self, name: str) -> AdapterVersion | None:
        """The version called `name`, or None when it is missing or incomplete."""
        if not _VERSION.match(name):
            return None
        path = self._versions_dir / name
        if not all((path / f).is_file() for f in ADAPTER_FILES):
            return None
        try:
            manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(manifest, dict) or any(k not in manifest for k in MANIFEST_KEYS):
            return None
        return AdapterVersion(name, path, manifest)

    def versions(self) -> list[AdapterVersion]:
        """Every complete version, oldest first; folders without a full manifest and adapter are skipped."""
        if not self._versions_dir.is_dir():
            return []
        found = (self.get(p.name) for p in self._versions_dir.iterdir())
        return sorted((v for v in found if v is not None), key=lambda v: _number(v.name))

    def current(self) -> AdapterVersion | None:
        name = self.pointer()
        return self.get(name) if name else None

    # --- writing -------------------------------------------------------------------------------------------

    def add(self, src_dir: Path | str, manifest: Mapping[str, Any]) -> AdapterVersion:
        """Copy a saved peft adapter in as the next version; it becomes visible only once complete.

        `created_at` (now) and `parent` (the current version) are filled in when the manifest lacks them.
        """
        src = Path(src_dir)
        missing = [f for f in ADAPTER_FILES if not (src / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{src} is not a saved peft adapter: missing {', '.join(missing)}")
        full = {"created_at": time.time(), "parent": self.pointer() or None, **manifest}
        absent = [k for k in MANIFEST_KEYS if k not in full]
        if absent:
            raise ValueError(f"adapter manifest lacks {', '.join(absent)}")
        self._versions_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.root))
        try:
            for item in src.iterdir():
                if item.is_file():
                    shutil.copy2(item, staging / item.name)
            (staging / MANIFEST).write_text(json.dumps(full, indent=2, sort_keys=True), encoding="utf-8")
            _fsync_dir(staging)
            with self._lock():
                name = f"v{self._next_number():04d}"
                os.rename(staging, self._versions_dir / name)
                _fsync_dir(self._versions_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        version = self.get(name)
        assert version is not None, "a version just written must be readable"
        return version

    def promote(self, name: str) -> AdapterVersion:
        """Make `name` the served version; serving processes pick it up before their next request."""
        version = self.get(name)
        if version is None:
            raise KeyError(f"no complete adapter version {name!r} in {self.root}")
        with self._lock():
            self._log("promote", name)
            self._write_current(name)
        return version

    def rollback(self) -> AdapterVersion | None:
        """Go back to the version served before the current one; None means back to the base model alone."""
        with self._lock():
            stack = self._history_stack()
            if not stack or stack[-1] != self.pointer():
                raise LookupError(f"nothing to roll back in {self.root}: CURRENT was not set by promote")
            stack.pop()
            while stack and self.get(stack[-1]) is None:  # skip versions deleted since
                stack.pop()
            name = stack[-1] if stack else ""
            self._log("rollback", name or "-")
            self._write_current(name)
        return self.get(name) if name else None

    # --- internals -----------------------------------------------------------------------------------------

    def _history_stack(self) -> list[str]:
        """Replay HISTORY: promote pushes, rollback pops; the top is what CURRENT should hold."""
        stack: list[str] = []
        try:
            lines = (self.root / "HISTORY").read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return stack
        for line in lines:
            parts = line.split("\t")
            if len(parts) != 3:
                continue
            if parts[1] == "promote":
                stack.append(parts[2])
            elif parts[1] == "rollback" and stack:
                stack.pop()
        return stack

    def _log(self, action: str, name: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with open(self.root / "HISTORY", "a", encoding="utf-8") as f:
            f.write(f"{stamp}\t{action}\t{name}\n")
            f.flush()
            os.fsync(f.fileno())

    def _write_current(self, name: str) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".CURRENT-", dir=self.root)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(name + "\n" if name else "")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.root / "CURRENT")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _next_number(self) -> int:
        names = (p.name for p in self._versions_dir.iterdir()) if self._versions_dir.is_dir() else iter(())
        return 1 + max((_number(n) for n in names if _VERSION.match(n)), default=0)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise writers across processes (two trainers finishing at once, an operator promoting)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _number(name: str) -> int:
    match = _VERSION.match(name)
    return int(match.group(1)) if match else -1


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
