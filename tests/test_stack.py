"""The local stack, with real processes on free loopback ports: it starts, persists, leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from agent.settings import Settings
from bot.localstack import LocalStack, StackError, free_port, start_milvus, start_redis

ROOT = Path(__file__).resolve().parents[1]


def assert_gone(pids: list[int]) -> None:
    """Each pid led its own process group, so the whole group (forked children included) must be gone."""
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    # Explicit None: an operator's REDIS_URL / MILVUS_URI in the environment must not leak into these tests.
    values: dict[str, object] = {
        "data_dir": data_dir,
        "redis_url": None,
        "milvus_uri": None,
        "local_redis_port": free_port(),
        "local_milvus_port": free_port(),
    }
    return Settings(**{**values, **overrides})  # type: ignore[arg-type]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_redis_answers_and_keeps_keys_across_restart(tmp_path: Path) -> None:
    port = free_port()
    proc = start_redis(tmp_path, port)
    try:
        with redis.Redis(port=port) as client:
            assert client.ping()
            client.set("job", "queued")
    finally:
        proc.stop()
    assert_gone([proc.pid])
    assert (tmp_path / "logs" / "redis.log").exists()

    proc = start_redis(tmp_path, port)
    try:
        with redis.Redis(port=port) as client:
            assert client.get("job") == b"queued"
    finally:
        proc.stop()


def test_milvus_starts_and_lists_collections(tmp_path: Path) -> None:
    from pymilvus import MilvusClient

    port = free_port()
    proc = start_milvus(tmp_path, port)
    try:
        client = MilvusClient(f"http://127.0.0.1:{port}")
        assert client.list_collections() == []
        client.close()
    finally:
        proc.stop()
    assert_gone([proc.pid])


def test_taken_port_names_the_setting(tmp_path: Path, taken_port: int) -> None:
    with pytest.raises(StackError, match="EXPERTBOT_LOCAL_REDIS_PORT"):
        start_redis(tmp_path, taken_port)

    stack = LocalStack(make_settings(tmp_path, local_milvus_port=taken_port), worker=False)
    with pytest.raises(StackError, match="EXPERTBOT_LOCAL_MILVUS_PORT"):
        stack.start()
    assert stack.processes == []  # ports are checked before anything starts
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("scorer", ["vectorized", "upstream"])
def test_the_milvus_lite_server_runs_the_bm25_scorer_the_settings_name(tmp_path: Path, scorer: str) -> None:
    from bot.localstack.milvus_server import SCORER_LOG_PREFIX

    with LocalStack(make_settings(tmp_path, milvus_lite_bm25=scorer), worker=False) as stack:
        milvus = next(p for p in stack.processes if p.name == "milvus")
        assert f"{SCORER_LOG_PREFIX}{scorer} " in milvus.log_tail(None)


def test_local_stack_stop_leaves_nothing_running(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with LocalStack(make_settings(tmp_path), worker=False) as stack:
        assert [p.name for p in stack.processes] == ["redis", "milvus"]
        assert all(p.alive() for p in stack.processes)
        pids = [p.pid for p in stack.processes]
    assert stack.processes == []
    assert_gone(pids)
    assert signal.getsignal(signal.SIGTERM) is before  # handlers are given back


def test_milvus_data_folder_in_use_is_explained(tmp_path: Path) -> None:
    first = start_milvus(tmp_path, free_port())
    try:
        with pytest.raises(StackError, match="in use by another process"):
            start_milvus(tmp_path, free_port())
    finally:
        first.stop()


def test_wait_stops_everything_when_a_child_dies(tmp_path: Path) -> None:
    stack = LocalStack(make_settings(tmp_path), worker=False)
    stack.start()
    pids = [p.pid for p in stack.processes]
    stack.processes[0].popen.kill()
    with pytest.raises(StackError, match="redis exited unexpectedly"):
        stack.wait()
    assert stack.processes == []
    assert_gone(pids)


def test_local_stack_skips_external_services(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, redis_url="redis://example.invalid:6379/0", milvus_uri="http://x:1")
    with LocalStack(settings, worker=False) as stack:
        assert stack.processes == []


_PRELUDE = """
import json, sys
from pathlib import Path
from agent.settings import Settings
from bot.localstack import LocalStack

data_dir, redis_port, milvus_port = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
settings = Settings(data_dir=data_dir, redis_url=None, milvus_uri=None,
                    local_redis_port=redis_port, local_milvus_port=milvus_port)
"""

_UP = """
try:  # how `expertbot up` runs it: a signal may also land between start() and wait()
    with LocalStack(settings, worker=False) as stack:
        print(json.dumps([p.pid for p in stack.processes]), flush=True)
        stack.wait()
except KeyboardInterrupt:
    pass
print("stopped", flush=True)
"""

_CARELESS = """
stack = LocalStack(settings, worker=False)
stack.start()
print(json.dumps([p.pid for p in stack.processes]), flush=True)
raise SystemExit("a caller that neither waits nor stops")
"""


def run_script(body: str, data_dir: Path) -> subprocess.Popen[str]:
    args = [sys.executable, "-c", textwrap.dedent(_PRELUDE + body), str(data_dir), str(free_port())]
    args.append(str(free_port()))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(args, cwd=data_dir, env=env, stdout=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_stops_every_child(tmp_path: Path, sig: signal.Signals) -> None:
    with run_script(_UP, tmp_path) as up:
        assert up.stdout is not None
        pids = json.loads(up.stdout.readline())
        assert len(pids) == 2
        up.send_signal(sig)
        assert up.wait(timeout=30) == 0
        assert up.stdout.read().strip() == "stopped"
    assert_gone(pids)


def test_exit_without_stop_still_stops_children(tmp_path: Path) -> None:
    with run_script(_CARELESS, tmp_path) as up:
        assert up.stdout is not None
        pids = json.loads(up.stdout.readline())
        assert up.wait(timeout=30) == 1
    assert_gone(pids)


@pytest.mark.slow
@pytest.mark.skipif(
    not (ROOT / "workers" / "celery_app.py").exists(), reason="workers/celery_app.py is not written yet"
)
def test_local_stack_with_worker(tmp_path: Path) -> None:
    with LocalStack(make_settings(tmp_path), worker=True) as stack:
        assert [p.name for p in stack.processes] == ["redis", "milvus", "worker-ingest"]
        pids = [p.pid for p in stack.processes]
    assert_gone(pids)  # the worker's pool children are in its process group
