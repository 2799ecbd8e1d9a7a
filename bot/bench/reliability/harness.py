"""A throw-away stack the scenarios may break: Redis (append-only file) and Milvus Lite in a temporary folder, on
free ports, plus Celery workers on demand. Built before anything reads the settings, so this process, its job
client and its workers all agree on the addresses."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path
from types import TracebackType

from agent.settings import Settings, get_settings
from bot.localstack import ManagedProcess, free_port, start_milvus, start_redis, start_worker
from workers.names import INGEST_QUEUE

VISIBILITY_S = 6
"""How soon a killed worker's job returns; the heartbeat renews running jobs every 2 s, so 6 s leaves margin."""


class Harness:
    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="expertbot-reliability-")
        self.root = Path(self._tmp.name)
        self.redis_port, self.milvus_port = free_port(), free_port()
        os.environ.update(
            {
                "EXPERTBOT_DATA_DIR": str(self.root),
                "EXPERTBOT_LOCAL_REDIS_PORT": str(self.redis_port),
                "EXPERTBOT_LOCAL_MILVUS_PORT": str(self.milvus_port),
                "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
                "MILVUS_URI": f"http://127.0.0.1:{self.milvus_port}",
                "EXPERTBOT_COLLECTION": "reliability",
                "EXPERTBOT_JOB_VISIBILITY_S": str(VISIBILITY_S),
            }
        )
        get_settings.cache_clear()
        self.settings: Settings = get_settings()
        self.redis: ManagedProcess | None = None
        self.milvus: ManagedProcess | None = None
        self.workers: list[ManagedProcess] = []

    # --- services -------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.start_redis()
        self.start_milvus()

    def start_redis(self) -> None:
        self.redis = start_redis(self.root, self.redis_port)

    def kill_redis(self) -> None:
        """kill -9: no shutdown save; what survives is what Redis had written to its append-only file."""
        if self.redis is not None:
            os.killpg(self.redis.pid, signal.SIGKILL)
            self.redis.popen.wait()
            self.redis = None

    def start_milvus(self) -> None:
        self.milvus = start_milvus(self.root, self.milvus_port)

    def stop_milvus(self) -> None:
        if self.milvus is not None:
            self.milvus.stop(timeout=30)
            self.milvus = None

    def ensure_up(self) -> None:
        """Between scenarios: whatever a failed scenario left down comes back."""
        for proc in self.workers:
            proc.stop()
        self.workers.clear()
        if self.redis is None or not self.redis.alive():
            self.start_redis()
        if self.milvus is None or not self.milvus.alive():
            self.start_milvus()

    # --- workers --------------------------------------------------------------------------------------------

    def start_worker(self, name: str, queues: tuple[str, ...] = (INGEST_QUEUE,)) -> ManagedProcess:
        proc = start_worker(self.settings, list(queues), 1, name)
        self.workers.append(proc)
        return proc

    def kill_worker(self, proc: ManagedProcess) -> None:
        """kill -9 the worker and its pool: no chance to acknowledge, requeue or say goodbye."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.popen.wait()
        proc.stop()  # reaps stragglers of the group
        self.workers.remove(proc)

    def stop_worker(self, proc: ManagedProcess) -> None:
        proc.stop()
        if proc in self.workers:
            self.workers.remove(proc)

    def worker_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted((self.root / "logs").glob("worker-*.log")))

    # --- lifecycle ------------------------------------------------------------------------------------------

    def close(self) -> None:
        for proc in [*self.workers, self.milvus, self.redis]:
            if proc is not None:
                proc.stop()
        self.workers.clear()
        self._tmp.cleanup()

    def __enter__(self) -> Harness:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def group_memory_mb(pgid: int) -> dict[str, float]:
    """Current and peak resident memory (VmRSS, VmHWM) of the largest process in a process group, in MB.

    A Celery worker is a main process and pool children: the job runs in a child, so the largest peak is the
    one that shows what a file cost. Linux only (reads /proc).
    """
    best = {"rss_mb": 0.0, "peak_mb": 0.0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            fields = dict(
                line.split(":", 1) for line in (entry / "status").read_text().splitlines() if line.startswith("Vm")
            )
        except (OSError, ValueError, IndexError):
            continue
        rss = int(fields.get("VmRSS", "0 kB").split()[0]) / 1024
        peak = int(fields.get("VmHWM", "0 kB").split()[0]) / 1024
        if peak > best["peak_mb"]:
            best = {"rss_mb": round(rss, 1), "peak_mb": round(peak, 1)}
    return best


def wait_until(condition: object, timeout_s: float, poll_s: float = 0.1) -> bool:
    """Poll a callable until it returns true; False on timeout."""
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll_s)
    return False
