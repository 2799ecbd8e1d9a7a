"""Stop means stop: `expertbot up` ends every process it started, however it is told to go, and runs once per
data folder. These run the real command (Redis, Milvus Lite, two Celery workers with their pools, beat)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from agent.settings import Settings
from bot.localstack import LocalStack, StackError, free_port

ROOT = Path(__file__).resolve().parents[1]
STARTED = 5  # redis, milvus, worker-ingest, worker-train, beat (no Teams, no Slack)
FAMILY = STARTED + 2  # and the two workers' pool processes (concurrency 1 each)


@dataclass
class Up:
    popen: subprocess.Popen[bytes]
    data_dir: Path
    ports: list[int]
    family: list[psutil.Process]  # every descendant once the stack is up

    def wait_gone(self, timeout: float = 60) -> None:
        """Every descendant exits and every port is free again, within `timeout`."""
        _, alive = psutil.wait_procs(self.family, timeout=timeout)
        assert not alive, f"left running: {[(p.pid, p.cmdline()) for p in alive]}"
        for port in self.ports:
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", port))  # raises if something still listens


def up_env(data_dir: Path, redis_port: int, milvus_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "MILVUS_URI") and not k.startswith("SLACK_")}
    env.update(
        EXPERTBOT_DATA_DIR=str(data_dir),
        EXPERTBOT_LOCAL_REDIS_PORT=str(redis_port),
        EXPERTBOT_LOCAL_MILVUS_PORT=str(milvus_port),
        EXPERTBOT_WORKER_CONCURRENCY="1",
        PYTHONPATH=str(ROOT),
    )
    return env


def _broken_pipe() -> int:
    """The write end of a pipe nobody reads: every write to it fails with EPIPE, as after `| tee` died."""
    read, write = os.pipe()
    os.close(read)
    return write


def _live(procs: list[psutil.Process]) -> int:
    try:
        return sum(p.status() != psutil.STATUS_ZOMBIE for p in procs)
    except psutil.NoSuchProcess:
        return -1


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def running_up(tmp_path: Path, *, output: str) -> Iterator[Up]:
    """`expertbot up --no-chat --no-teams` with stdout and stderr `broken` from the start, or `pipe`s to us.

    Readiness is read from the process tree (its stderr may be gone): seven live descendants, beat (started
    last) logging that it runs.
    """
    data_dir, redis_port, milvus_port = tmp_path / "data", free_port(), free_port()
    args = [sys.executable, "-m", "bot.cli", "up", "--no-chat", "--no-teams"]
    env = up_env(data_dir, redis_port, milvus_port)
    broken = output == "broken"
    out, err = (_broken_pipe(), _broken_pipe()) if broken else (subprocess.PIPE, subprocess.PIPE)
    popen = subprocess.Popen(args, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    if broken:
        os.close(out)
        os.close(err)
    try:
        up = psutil.Process(popen.pid)
        deadline = time.monotonic() + 240
        beat_log = data_dir / "logs" / "beat.log"
        while not (_live(up.children(recursive=True)) == FAMILY and "beat: Starting" in _text(beat_log)):
            assert popen.poll() is None, f"up exited with {popen.returncode}"
            assert time.monotonic() < deadline, "the stack did not start in 240 s"
            time.sleep(0.5)
        time.sleep(1)  # start() returns just after beat's line; let `up` reach wait()
        yield Up(popen, data_dir, [redis_port, milvus_port], up.children(recursive=True))
    finally:
        if popen.poll() is None:
            popen.kill()
        for child in psutil.Process().children(recursive=True):  # never leave a stack behind a failed test
            try:
                if str(data_dir) in " ".join(child.cmdline() + list(child.environ().values())):
                    child.kill()
            except psutil.Error:
                pass
        popen.wait()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_stops_every_child_even_with_output_broken(tmp_path: Path, sig: signal.Signals) -> None:
    with running_up(tmp_path, output="broken") as up:
        assert up.popen.poll() is None  # a broken output alone does not stop it: it was broken from the start
        up.popen.send_signal(sig)
        assert up.popen.wait(timeout=60) == 0  # the stop path printed into a broken pipe and carried on
        up.wait_gone()


@pytest.mark.slow
def test_output_breaking_stops_the_stack_and_a_second_up_is_refused(tmp_path: Path) -> None:
    with running_up(tmp_path, output="pipe") as up:
        env = up_env(up.data_dir, free_port(), free_port())
        second = subprocess.run(
            [sys.executable, "-m", "bot.cli", "up", "--no-chat", "--no-teams"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert second.returncode == 1
        said = " ".join(second.stderr.split())
        assert f"another `expertbot up` (PID {up.popen.pid}) is already running" in said
        assert up.popen.poll() is None  # the first one is untouched

        assert up.popen.stdout is not None and up.popen.stderr is not None
        up.popen.stdout.close()  # the terminal (or `| tee`) goes away, no signal sent
        up.popen.stderr.close()
        up.popen.wait(timeout=60)
        up.wait_gone()


@pytest.mark.slow
def test_children_stop_when_up_is_killed_outright(tmp_path: Path) -> None:
    with running_up(tmp_path, output="pipe") as up:
        up.popen.kill()  # SIGKILL: no handler runs; the kernel's parent-death signal must do it
        up.popen.wait()
        up.wait_gone()


def test_one_stack_per_data_folder(tmp_path: Path) -> None:
    external: dict[str, object] = {"redis_url": "redis://example.invalid:1/0", "milvus_uri": "http://x:1"}
    settings = Settings(data_dir=tmp_path, **external)  # type: ignore[arg-type]
    with LocalStack(settings, worker=False), pytest.raises(StackError, match=rf"PID {os.getpid()}\) is already"):
        LocalStack(settings, worker=False).start()
    with LocalStack(settings, worker=False):  # released on stop
        pass
