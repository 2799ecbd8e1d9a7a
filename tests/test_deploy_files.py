"""The deployment files agree with the code: docker-compose.yml wires every service to Redis and Milvus, and
.env.example documents every setting. Fast: no container is started."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import AliasChoices

from agent.settings import Settings
from workers.names import INGEST_QUEUE, TRAIN_QUEUE

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"

SURFACES = {"slack-bot": (["expertbot", "slack"], 3000), "teams-bot": (["expertbot", "teams", "serve"], 3978)}
APP_SERVICES = ("ingest-worker", "train-worker", "beat", *SURFACES)
EXPECTED_SERVICES = ("redis", "etcd", "minio", "milvus", "flower", *APP_SERVICES)
# The secrets docker-compose.yml requires (${VAR:?message}); dummy values are enough to render it.
REQUIRED_ENV = {
    "MINIO_ACCESS_KEY": "expertbot",
    "MINIO_SECRET_KEY": "not-a-real-secret",
    "SLACK_BOT_TOKEN": "xoxb-not-a-real-token",
    "SLACK_SIGNING_SECRET": "not-a-real-secret",
    "MICROSOFT_APP_ID": "00000000-0000-0000-0000-000000000000",
    "MICROSOFT_APP_PASSWORD": "not-a-real-secret",
    "REDIS_PASSWORD": "not-a-real-secret",
    "FLOWER_USER": "admin",
    "FLOWER_PASSWORD": "not-a-real-secret",
    "MILVUS_ROOT_PASSWORD": "not-a-real-secret",
}
REDIS_IN_COMPOSE = re.compile(r"^redis://:\$\{REDIS_PASSWORD:\?[^}]+\}@redis:")
"""Every client of the compose Redis authenticates (issue 20): requirepass is set on the server."""
DOCKERIGNORE = ROOT / ".dockerignore"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed")
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def compose_services(compose: dict[str, Any]) -> dict[str, Any]:
    """Named so as not to shadow conftest's `services` fixture (the running Redis and Milvus)."""
    services = compose["services"]
    assert isinstance(services, dict)
    return services


def _is_app(service: dict[str, Any]) -> bool:
    """Runs the expertbot image (built from this repository's Dockerfile)."""
    return "build" in service or str(service.get("image", "")).startswith("expertbot")


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the `- NAME=value` form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def _option(command: list[str], *names: str) -> str | None:
    for i, part in enumerate(command):
        if part in names and i + 1 < len(command):
            return command[i + 1]
        for name in names:
            if name.startswith("--") and part.startswith(name + "="):
                return part.split("=", 1)[1]
    return None


def test_expected_services_exist(compose_services: dict[str, Any]) -> None:
    missing = [name for name in EXPECTED_SERVICES if name not in compose_services]
    assert not missing, f"docker-compose.yml lacks services {missing}"
    for name in APP_SERVICES:
        assert _is_app(compose_services[name]), f"{name} should run the expertbot image"


def test_app_services_reach_redis_and_milvus(compose_services: dict[str, Any]) -> None:
    apps = {name: svc for name, svc in compose_services.items() if _is_app(svc)}
    assert set(APP_SERVICES) <= set(apps)
    for name, svc in apps.items():
        env = _environment(svc)
        assert REDIS_IN_COMPOSE.match(env.get("REDIS_URL", "")), f"{name}: REDIS_URL"
        assert env.get("MILVUS_URI", "").startswith("http://milvus:"), f"{name}: MILVUS_URI"
        depends = svc.get("depends_on")
        assert isinstance(depends, dict), f"{name}: depends_on must be a mapping with conditions"
        assert {"redis", "milvus"} <= set(depends), f"{name}: must wait for redis and milvus"


def test_depends_on_waits_for_health(compose_services: dict[str, Any]) -> None:
    for name, svc in compose_services.items():
        depends = svc.get("depends_on")
        if depends is None:
            continue
        assert isinstance(depends, dict), f"{name}: use depends_on with `condition: service_healthy`"
        for dep, spec in depends.items():
            assert dep in compose_services, f"{name} depends on unknown service {dep}"
            assert spec.get("condition") == "service_healthy", f"{name} -> {dep}: condition"
            assert "healthcheck" in compose_services[dep], f"{name} waits for {dep}, which has no healthcheck"


def test_state_services_are_healthchecked_and_persistent(
    compose: dict[str, Any], compose_services: dict[str, Any]
) -> None:
    assert _command(compose_services["milvus"]) == ["milvus", "run", "standalone"]
    milvus_env = _environment(compose_services["milvus"])
    assert milvus_env["ETCD_ENDPOINTS"].startswith("etcd:") and milvus_env["MINIO_ADDRESS"].startswith("minio:")
    assert "localhost:9091/healthz" in " ".join(compose_services["milvus"]["healthcheck"]["test"])
    assert compose_services["redis"]["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    assert _option(_command(compose_services["redis"]), "--appendonly") == "yes"
    named_volumes = set(compose.get("volumes") or {})
    for name in ("redis", "etcd", "minio", "milvus"):
        sources = {str(v).split(":", 1)[0] for v in compose_services[name].get("volumes", [])}
        assert sources & named_volumes, f"{name} should keep its data in a named volume"


def test_secrets_are_required_not_defaulted() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    for var in REQUIRED_ENV:
        assert re.search(r"\$\{" + var + r":\?[^}]+\}", text), f"{var} should be ${{{var}:?message}}"
        assert re.search(r"\$\{" + var + r":-", text) is None, f"{var} must have no default"


def test_worker_queues_and_concurrency(compose_services: dict[str, Any]) -> None:
    ingest = _command(compose_services["ingest-worker"])
    assert ingest[:4] == ["celery", "-A", "workers.celery_app", "worker"]
    assert _option(ingest, "-Q", "--queues") == INGEST_QUEUE

    train_svc = compose_services["train-worker"]
    train = _command(train_svc)
    assert train[:4] == ["celery", "-A", "workers.celery_app", "worker"]
    assert _option(train, "-Q", "--queues") == TRAIN_QUEUE
    assert _option(train, "-c", "--concurrency") == "1"
    assert "gpu" in train_svc.get("profiles", [])
    devices = train_svc["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and d.get("count") == 1 for d in devices), devices

    beat = _command(compose_services["beat"])
    assert beat[:4] == ["celery", "-A", "workers.celery_app", "beat"]
    assert REDIS_IN_COMPOSE.match(_environment(compose_services["flower"]).get("CELERY_BROKER_URL", ""))


def _env_name(field: str) -> str:
    """As agent.settings names it: the alias's first choice, else EXPERTBOT_<FIELD>."""
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"EXPERTBOT_{field.upper()}"


def test_env_example_names_every_setting() -> None:
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))
    expected = {_env_name(field) for field in Settings.model_fields}
    missing = sorted(expected - documented)
    assert not missing, f".env.example does not mention {missing}"
    stray = sorted(name for name in documented - expected if name.startswith("EXPERTBOT_"))
    assert not stray, f".env.example names settings that do not exist: {stray}"


def test_env_example_defaults_match_settings() -> None:
    """A commented-out `NAME=value` line shows the default, so it must be the real one."""
    shown = dict(re.findall(r"^#\s*([A-Z][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE.read_text(encoding="utf-8"), re.MULTILINE))
    for field, info in Settings.model_fields.items():
        value = shown.get(_env_name(field))
        if value is None or info.default is None:
            continue
        default = info.default
        if isinstance(default, bool):
            default = str(default).lower()
        elif isinstance(default, float) and default.is_integer():
            default = int(default)
        assert value == str(default), f"{_env_name(field)}: .env.example shows {value!r}, default is {default!r}"


def _docker_compose_usable() -> str | None:
    """None when `docker compose` can run here, else why not."""
    if shutil.which("docker") is None:
        return "docker is not installed"
    try:
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`docker compose version` failed: {exc}"
    if probe.returncode != 0:
        return f"`docker compose` is not available: {(probe.stderr or probe.stdout).strip()[:200]}"
    return None


def test_docker_compose_config_is_valid() -> None:
    reason = _docker_compose_usable()
    if reason:
        pytest.skip(reason)
    env = {**os.environ, **REQUIRED_ENV}
    for profile in (None, "gpu"):
        args = ["docker", "compose", "--project-directory", str(ROOT), "-f", str(COMPOSE)]
        args += ["--profile", profile] if profile else []
        result = subprocess.run([*args, "config", "-q"], capture_output=True, text=True, env=env, timeout=60)
        assert result.returncode == 0, f"docker compose config ({profile or 'default'}): {result.stderr}"


def test_chat_surfaces_serve_healthz_and_require_their_secrets(compose_services: dict[str, Any]) -> None:
    for name, (command, port) in SURFACES.items():
        svc = compose_services[name]
        assert _command(svc) == command, name
        check = " ".join(svc["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/healthz" in check, f"{name} should be checked on its own /healthz"
        assert any(str(p).endswith(f":{port}") for p in svc.get("ports", [])), f"{name} publishes {port}"
        env = _environment(svc)
        secrets = [k for k in REQUIRED_ENV if k.startswith(("SLACK", "MICROSOFT"))]
        mine = [k for k in secrets if k in env]
        assert mine, f"{name} receives its platform secrets"
        for key in mine:
            assert env[key].startswith("${" + key + ":?"), f"{name}: {key} must be required, not defaulted"


def test_ingest_workers_scale_and_state_lives_in_named_volumes(
    compose: dict[str, Any], compose_services: dict[str, Any]
) -> None:
    ingest = compose_services["ingest-worker"]
    # `--scale ingest-worker=N` needs no fixed container name and no host port.
    assert "container_name" not in ingest and not ingest.get("ports")
    assert "healthcheck" in ingest
    named = set(compose.get("volumes") or {})
    for name, svc in compose_services.items():
        for volume in svc.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            assert source in named, f"{name}: {source} should be a named volume, not a host path"


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image() -> None:
    patterns = {line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()}
    for pattern in (".env", ".venv", ".git", ".expertbot"):
        assert pattern in patterns, f".dockerignore should exclude {pattern}"
    for needed in ("agent", "bot", "workers", "pyproject.toml"):
        assert needed not in patterns, f"the image needs {needed}"


def test_vllm_serves_the_trained_adapters_to_the_bots(
    compose: dict[str, Any], compose_services: dict[str, Any]
) -> None:
    """`--profile gpu` adds vLLM with runtime LoRA, reading the adapters volume the train worker writes, at the
    same path, and every app service is pointed at it (used when EXPERTBOT_GENERATOR=openai)."""
    vllm = compose_services["vllm"]
    assert "gpu" in vllm.get("profiles", [])
    args = [*(vllm.get("entrypoint") or []), *_command(vllm)]
    assert args[:2] == ["vllm", "serve"] and args[2] == "microsoft/Phi-3-mini-4k-instruct"
    assert "--enable-lora" in args and _option(args, "--served-model-name") == "phi3-domain"
    assert int(_option(args, "--max-lora-rank") or 0) >= Settings.model_fields["max_lora_rank"].default
    assert _environment(vllm)["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" for d in devices)
    assert "/health" in " ".join(vllm["healthcheck"]["test"])

    def mount(svc: dict[str, Any], volume: str) -> str | None:
        for v in svc.get("volumes", []):
            parts = str(v).split(":")
            if parts[0] == volume:
                return parts[1]
        return None

    assert mount(vllm, "adapters") == mount(compose_services["train-worker"], "adapters") == "/adapters"
    for name in APP_SERVICES:
        svc = compose_services[name]
        env = _environment(svc)
        assert mount(svc, "adapters") == env["EXPERTBOT_ADAPTERS_DIR"] == "/adapters", name
        assert env["EXPERTBOT_OPENAI_BASE_URL"].endswith("http://vllm:8000/v1}"), name
        assert "runtime" in env["EXPERTBOT_OPENAI_LORA"] and "phi3-domain" in env["EXPERTBOT_OPENAI_MODEL"], name


def test_services_authenticate_and_secrets_go_only_where_used(compose: dict[str, Any]) -> None:
    """Issue 20, finding 8: Redis has a password, Flower basic auth, no container gets the whole .env, and the
    Slack bot listens beyond loopback only inside its container, by an explicit setting."""
    services = compose["services"]
    redis_cmd = [str(part) for part in _command(services["redis"])]
    assert str(_option(redis_cmd, "--requirepass")).startswith("${REDIS_PASSWORD:?")
    assert _option(redis_cmd, "--maxmemory-policy") == "noeviction"
    assert _environment(services["flower"]).get("FLOWER_BASIC_AUTH", "").startswith("${FLOWER_USER:?")
    for name, svc in services.items():
        for entry in svc.get("env_file") or []:
            path = entry["path"] if isinstance(entry, dict) else entry
            assert Path(str(path)).name != ".env", f"{name} must not receive every secret of .env"
    assert _environment(services["slack-bot"]).get("EXPERTBOT_SLACK_HOST") == "0.0.0.0"
    assert Settings.model_fields["slack_host"].default == "127.0.0.1"


def test_milvus_requires_authentication_and_the_app_containers_carry_its_token(compose: dict[str, Any]) -> None:
    """Issue 20, finding 8: the compose Milvus has authentication on, its root password comes from .env (no
    default), every expertbot container gets MILVUS_TOKEN=root:<that password>, and no other container does."""
    services = compose["services"]
    milvus = _environment(services["milvus"])
    assert milvus.get("COMMON_SECURITY_AUTHORIZATIONENABLED", "").lower() == "true"
    assert milvus.get("COMMON_SECURITY_DEFAULTROOTPASSWORD", "").startswith("${MILVUS_ROOT_PASSWORD:?")
    for name, svc in services.items():
        env = _environment(svc)
        if _is_app(svc):
            assert env.get("MILVUS_TOKEN", "").startswith("root:${MILVUS_ROOT_PASSWORD:?"), f"{name}: MILVUS_TOKEN"
        elif name != "milvus":
            assert not any("MILVUS_ROOT_PASSWORD" in v for v in env.values()), f"{name} must not get Milvus's password"
    assert re.search(r"^MILVUS_ROOT_PASSWORD=$", ENV_EXAMPLE.read_text(encoding="utf-8"), re.MULTILINE)
