"""Child processes of the local stack: each in its own process group, logging to a file, stopped as a group.

Every local service, worker and bot process is started through `ManagedProcess`; `cli_command` is the one way
to run an `expertbot` command as a child (`python -m bot.cli ...`), with this checkout first on its path.
"""

from __future__ import annotations

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

from agent.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
_LAUNCHER = Path(__file__).with_name("exit_with_parent.py")


def _exit_with_parent(args: Sequence[str]) -> list[str]:
    """`args` run so that the child gets SIGTERM when this process dies, even by SIGKILL (see the launcher).

    Linux sends it when the *thread* that started the child exits, so it is armed only for children started
    from the main thread, which lives as long as the process.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return list(args)
    return [sys.executable, "-I", "-S", str(_LAUNCHER), str(os.getpid()), *args]


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
                _exit_with_parent(args),
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


def await_ready(ready: Callable[[], bool], timeout: float, what: str, proc: ManagedProcess | None) -> None:
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


def cli_command(*args: str) -> list[str]:
    """The argv of an `expertbot` command run as a child process of this one."""
    return [sys.executable, "-m", "bot.cli", *args]


class DataDirLock:
    """An exclusive lock on a data folder, held while a stack runs on it, with the holder's PID inside.

    A second `expertbot up` on the same data would otherwise fight the first for its ports and Milvus's
    folder; flock is released by the kernel however the holder ends, so a crash leaves no stale lock.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "expertbot-up.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise StackError naming the PID that holds it."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StackError(
                f"another `expertbot up` (PID {holder}) is already running on {self.path.parent.resolve()}; "
                f"stop it first (Ctrl-C in its terminal, or `kill {holder}`), "
                "or set EXPERTBOT_DATA_DIR to another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None
