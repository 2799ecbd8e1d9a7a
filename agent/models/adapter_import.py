"""Registering a LoRA adapter trained elsewhere (`expertbot adapters add`), and listing what is registered and where
it is served (`expertbot adapters list`).

An adapter is checked before it is copied in, because a serving process that fails to load it only logs and keeps
the previous version: better to refuse it here, with the reason, than to promote something no server can use.
Refused: not a peft LoRA adapter, no readable safetensors weights, target modules Phi-3 does not have, a rank above
the limit (vLLM's `--max-lora-rank` refuses those too). A different base model id is only a warning: the same
architecture may be published under several names.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.models.lora_fleet import loaded_on_servers, read_serving_status
from agent.models.registry import AdapterRegistry, tenant_folder, tenant_registry

PHI3_MODULES = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
"""Phi-3's linear layers (fused attention and MLP projections): the modules a LoRA for it can target."""
_PHI3_FULL_NAMES = [f"model.layers.0.self_attn.{m}" for m in PHI3_MODULES[:2]] + [
    f"model.layers.0.mlp.{m}" for m in PHI3_MODULES[2:]
]


class AdapterRejected(ValueError):
    """The folder cannot be registered as an adapter; the message says why."""


@dataclass(frozen=True)
class AdapterCheck:
    config: dict[str, Any]
    rank: int
    targets: list[str]
    warnings: list[str] = field(default_factory=list)


def check_adapter(path: Path, *, base_model: str, max_rank: int) -> AdapterCheck:
    """Validate a saved peft adapter folder; AdapterRejected with the reason when it cannot serve Phi-3."""
    if not path.is_dir():
        raise AdapterRejected(f"{path} is not a folder")
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        raise AdapterRejected(f"{path} is not a peft adapter: no adapter_config.json")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AdapterRejected(f"adapter_config.json is unreadable: {exc}") from None
    if not isinstance(config, dict) or str(config.get("peft_type", "")).upper() != "LORA":
        kind = config.get("peft_type") if isinstance(config, dict) else type(config).__name__
        raise AdapterRejected(f"not a LoRA adapter (peft_type {kind!r})")
    targets = _targets(config.get("target_modules"))
    ranks = [int(config.get("r") or 0), *(int(r) for r in (config.get("rank_pattern") or {}).values())]
    rank = max(ranks)
    if rank < 1:
        raise AdapterRejected("adapter_config.json has no LoRA rank (r)")
    if rank > max_rank:
        raise AdapterRejected(f"LoRA rank {rank} exceeds EXPERTBOT_MAX_LORA_RANK={max_rank}")
    _check_weights(path / "adapter_model.safetensors")
    warnings = []
    declared = str(config.get("base_model_name_or_path") or "")
    if declared and declared != base_model:
        warnings.append(f"trained on base model {declared!r}, but {base_model!r} is configured")
    return AdapterCheck(config, rank, targets, warnings)


def _targets(raw: object) -> list[str]:
    """The module names the adapter targets, all of them Phi-3's, else AdapterRejected naming the strangers."""
    if raw == "all-linear":
        return list(PHI3_MODULES)
    if isinstance(raw, str):  # peft reads a string as a regex over full module names
        matched = [name.rsplit(".", 1)[1] for name in _PHI3_FULL_NAMES if re.fullmatch(raw, name)]
        if not matched:
            raise AdapterRejected(f"target_modules {raw!r} matches none of Phi-3's modules {', '.join(PHI3_MODULES)}")
        return matched
    if not isinstance(raw, list) or not raw:
        raise AdapterRejected("adapter_config.json names no target_modules")
    names = [str(m).rsplit(".", 1)[-1] for m in raw]
    foreign = sorted({n for n in names if n not in PHI3_MODULES})
    if foreign:
        raise AdapterRejected(
            f"targets modules Phi-3 does not have: {', '.join(foreign)} (Phi-3 has {', '.join(PHI3_MODULES)})"
        )
    return names


def _check_weights(weights: Path) -> None:
    if not weights.is_file():
        raise AdapterRejected("no adapter_model.safetensors (save the adapter with safe_serialization=True)")
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="np") as f:
            keys = list(f.keys())
    except Exception as exc:  # safetensors raises its own error types for a damaged header
        raise AdapterRejected(f"adapter_model.safetensors is unreadable: {exc}") from None
    if not any("lora_A" in k for k in keys) or not any("lora_B" in k for k in keys):
        raise AdapterRejected("adapter_model.safetensors holds no LoRA (lora_A / lora_B) weights")


def add_adapter(
    adapters_root: Path,
    path: Path,
    *,
    tenant: str,
    base_model: str,
    max_rank: int,
    promote: bool = False,
) -> dict[str, Any]:
    """Check, copy in as the tenant's next version (manifest written), optionally promote; a JSON-able summary."""
    check = check_adapter(path, base_model=base_model, max_rank=max_rank)
    weights = (path / "adapter_model.safetensors").read_bytes()
    manifest = {
        "base_model": str(check.config.get("base_model_name_or_path") or base_model),
        "data_hash": "sha256:" + hashlib.sha256(weights).hexdigest(),
        "examples": {},
        "metrics": {},
        "imported_from": str(path.resolve()),
        "rank": check.rank,
        "target_modules": check.targets,
    }
    registry = tenant_registry(adapters_root, tenant)
    version = registry.add(path, manifest)
    if promote:
        registry.promote(version.name)
    return {
        "tenant": tenant,
        "version": version.name,
        "path": str(version.path),
        "rank": check.rank,
        "target_modules": check.targets,
        "promoted": promote,
        "current": registry.pointer() or None,
        "warnings": check.warnings,
    }


def list_adapters(
    adapters_root: Path,
    *,
    tenant: str | None = None,
    servers: list[str] | None = None,
    api_key: str | None = None,
) -> dict[str, Any]:
    """Every tenant registry (or one tenant's): versions, the current one, and per server the version loaded there
    (asked from each server's GET /v1/models when `servers` is given) and the last refusal recorded."""
    folders = [adapters_root / tenant_folder(tenant)] if tenant else _registry_folders(adapters_root)
    on_servers = loaded_on_servers(servers, api_key=api_key) if servers else {}
    out: list[dict[str, Any]] = []
    for folder in folders:
        registry = AdapterRegistry(folder)
        recorded = read_serving_status(folder)
        entry: dict[str, Any] = {
            "registry": folder.name,
            "current": registry.pointer() or None,
            "versions": [
                {
                    "version": v.name,
                    "created_at": v.manifest.get("created_at"),
                    "base_model": v.manifest.get("base_model"),
                    "parent": v.manifest.get("parent"),
                    "imported_from": v.manifest.get("imported_from"),
                }
                for v in registry.versions()
            ],
        }
        if servers:
            entry["servers"] = {url: _on_server(folder.name, on_servers[url], recorded.get(url)) for url in servers}
        out.append(entry)
    return {"root": str(adapters_root), "tenants": out}


def _on_server(folder: str, reported: dict[str, Any], recorded: dict[str, Any] | None) -> dict[str, Any]:
    if "error" in reported:
        return {"loaded": None, "error": reported["error"], "refused": (recorded or {}).get("refused")}
    prefix = folder + "-"
    loaded = sorted(name[len(prefix) :] for name in reported["adapters"] if name.startswith(prefix))
    return {"loaded": loaded, "refused": (recorded or {}).get("refused")}


def _registry_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "versions").is_dir())
