"""The local stack `expertbot up` runs on one machine: embedded Redis, Milvus Lite and an ingest worker.

Each service is a child in its own process group, so stopping it also stops whatever it forked (Celery's
pool). That also means a terminal's Ctrl-C (or hang-up) reaches only this process, which therefore owns all
cleanup: SIGINT, SIGTERM and SIGHUP become KeyboardInterrupt, which `LocalStack` answers by stopping them all;
`wait` also stops them when stdout or stderr breaks (the terminal or a `| tee` went away), and each child gets
SIGTERM from the kernel if this process dies outright (`processes._exit_with_parent`). Progress lines are
best-effort: with stderr gone, the stop path must still stop. One stack per data folder (`DataDirLock`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from agent.settings import Settings
from bot.localstack.processes import DataDirLock, ManagedProcess, StackError, ensure_port_free
from bot.localstack.services import (
    MILVUS_PORT_SETTING,
    REDIS_PORT_SETTING,
    TEAMS_PORT_SETTING,
    start_beat,
    start_milvus,
    start_redis,
    start_slack,
    start_teams,
    start_worker,
)
from workers.names import INGEST_QUEUE, TRAIN_QUEUE

_BROKEN = select.POLLERR | select.POLLHUP | select.POLLNVAL
"""What poll reports for an output whose terminal closed or whose pipe lost its reader."""


def say(text: str, *, end: str = "\n") -> None:
    """Progress on stderr, best-effort: a closed or broken stderr must not interrupt starting or stopping."""
    if sys.stderr is not None:
        with contextlib.suppress(OSError, ValueError):
            print(text, end=end, file=sys.stderr, flush=True)


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
        self._lock = DataDirLock(settings.data_dir)
        self._outputs = select.poll()

    def start(self) -> None:
        """Start in dependency order; on any failure or interrupt, stop what already started and re-raise."""
        s = self.settings
        redis_port, milvus_port = s.local_redis_port, s.local_milvus_port
        self._install_signal_handlers()
        # Safety net for callers without `with`/`finally`: a signal that lands between start() and wait()
        # raises outside both, but the children are still stopped when the interpreter exits.
        atexit.register(self.stop)
        try:
            self._lock.acquire()
            self._watch_outputs()
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
        say(f"starting {what} ...", end=" ")
        began = time.monotonic()
        try:
            self.processes.append(launch())
        except BaseException:
            say("failed")
            raise
        say(f"ready in {time.monotonic() - began:.1f} s")

    def wait(self) -> None:
        """Block until a stop signal or a broken stdout/stderr (then stop, return) or until a child dies
        unexpectedly (stop, raise)."""
        try:
            while all(proc.alive() for proc in self.processes):
                if self.outputs_gone():
                    self.stop()
                    return
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
                say(f"stopping {names} ...", end=" ")
                while self.processes:
                    self.processes[-1].stop()
                    self.processes.pop()
                say("done")
        finally:
            self._lock.release()
            for sig, handler in self._old_handlers.items():
                signal.signal(sig, handler)
            self._old_handlers.clear()

    def _watch_outputs(self) -> None:
        """Watch stdout and stderr for a hang-up or a closed reader, if they are open and whole now: an output
        broken from the start (a parent that closed its end before we ran) is no sign that anyone left."""
        for fd in (1, 2):
            with contextlib.suppress(OSError):
                os.fstat(fd)
                self._outputs.register(fd, 0)  # POLLERR, POLLHUP and POLLNVAL are always reported
        for fd, events in self._outputs.poll(0):
            if events & _BROKEN:
                self._outputs.unregister(fd)

    def outputs_gone(self) -> bool:
        """Whether stdout or stderr broke since start: the terminal closed, or the pipe's reader exited."""
        return any(events & _BROKEN for _, events in self._outputs.poll(0))

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
