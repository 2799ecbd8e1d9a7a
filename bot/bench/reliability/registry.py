"""Which scenarios the suite runs, with what sizes, and how: all in one child process that owns the stack.

A scenario is a function returning {"name", "ok", ...figures}. Built-in ones take the harness and their sizes;
the chat surfaces' ones (`bot/bench/slack.py`, `bot/bench/teams.py`) take a count `n` and are found by import
name, so the suite runs them as soon as they exist and shows a "not available" row until then.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bot.localstack import project_pythonpath

Profile = Literal["full", "quick", "test"]


@dataclass(frozen=True)
class Scenario:
    name: str
    target: str
    """"module:function"."""
    sizes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """profile -> keyword arguments."""
    hook: bool = False
    """Provided by a chat surface: called as function(**sizes), without the harness."""
    what: str = ""

    @property
    def module(self) -> str:
        return self.target.split(":", 1)[0]

    def available(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is not None
        except ModuleNotFoundError:  # the parent package itself is missing
            return False


def _sizes(full: dict[str, Any], quick: dict[str, Any], test: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {"full": full, "quick": quick, "test": test}


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "worker kill -9",
        "bot.bench.reliability.faults:worker_kills",
        _sizes({"kills": 20, "documents": 60}, {"kills": 5, "documents": 20}, {"kills": 1, "documents": 8}),
        what="an ingest worker killed mid-job N times: every document exactly once",
    ),
    Scenario(
        "redis restart",
        "bot.bench.reliability.faults:redis_restart",
        _sizes({"jobs": 30}, {"jobs": 15}, {"jobs": 5}),
        what="Redis killed (kill -9) and restarted with jobs queued: no job lost",
    ),
    Scenario(
        "milvus restart",
        "bot.bench.reliability.faults:milvus_restart",
        _sizes({"jobs": 20, "down_s": 10}, {"jobs": 10, "down_s": 6}, {"jobs": 4, "down_s": 3}),
        what="Milvus stopped during ingestion and started again: the jobs finish after it returns",
    ),
    Scenario(
        "hostile files",
        "bot.bench.reliability.hostile:hostile_files",
        _sizes({}, {}, {}),
        what="corrupt/encrypted PDF, zip bomb, empty, oversize, login page, binary: clear reply, bounded memory",
    ),
    Scenario(
        "poison document",
        "bot.bench.reliability.poison:poison_document",
        _sizes({}, {}, {}),
        what="a Word file with too much text, and a job killing its worker: bounded memory, dead-lettered, told",
    ),
    Scenario(
        "forget leaves nothing",
        "bot.bench.reliability.security:forget_leaves_nothing",
        _sizes({"questions": 10}, {"questions": 6}, {"questions": 4}),
        what="a document shared, quoted, voted on, forgotten: its text nowhere in Redis, Milvus or conversation memory",
    ),
    Scenario(
        "audience isolation",
        "bot.bench.reliability.isolation:audience_isolation",
        _sizes({"questions": 200}, {"questions": 40}, {"documents": 60, "questions": 12, "chat_answers": 10}),
        what="200 documents, 20 scopes, 3 tenants; every question from every scope; and training data",
    ),
    Scenario(
        "simulated users",
        "bot.bench.reliability.load:simulated_users",
        _sizes(
            {"users": 50, "duration_s": 300},
            {"users": 50, "duration_s": 30},
            {"users": 10, "duration_s": 6, "think_s": (0.5, 2.0)},
        ),
        what="users chatting through the Assistant: no errors, latency p50/p99",
    ),
    Scenario(
        "slack duplicate deliveries",
        "bot.bench.slack:duplicate_deliveries",
        _sizes({"n": 1000}, {"n": 200}, {"n": 50}),
        hook=True,
        what="the same Slack event delivered again (retries): answered once",
    ),
    Scenario(
        "slack forged requests",
        "bot.bench.slack:forged_requests",
        _sizes({"n": 500}, {"n": 100}, {"n": 30}),
        hook=True,
        what="forged, replayed or stale Slack requests: none accepted",
    ),
    Scenario(
        "teams duplicate deliveries",
        "bot.bench.teams:duplicate_deliveries",
        _sizes({"n": 1000}, {"n": 200}, {"n": 50}),
        hook=True,
        what="the same Teams activity delivered again: answered once",
    ),
    Scenario(
        "unauthenticated remote Teams",
        "bot.bench.reliability.security:unauthenticated_remote",
        _sizes({"n": 300}, {"n": 90}, {"n": 30}),
        hook=True,
        what="no app id: refuses 0.0.0.0; forged tenant/admin with a remote serviceUrl, another channel, text/plain",
    ),
    Scenario(
        "teams unauthenticated requests",
        "bot.bench.teams:unauthenticated_requests",
        _sizes({"n": 500}, {"n": 100}, {"n": 30}),
        hook=True,
        what="Teams requests without a valid Bot Framework token: none accepted",
    ),
)


def scenario(name: str) -> Scenario:
    for s in SCENARIOS:
        if s.name == name:
            return s
    raise KeyError(f"no scenario {name!r}; known: {', '.join(s.name for s in SCENARIOS)}")


def not_available(s: Scenario) -> dict[str, Any]:
    return {"name": s.name, "ok": None, "skipped": f"not available: {s.module} does not exist yet"}


def run_suite(
    profile: Profile = "full", names: list[str] | None = None, timeout_s: float = 1800
) -> list[dict[str, Any]]:
    """Run the chosen scenarios (all by default) in one child process; rows in the registry's order."""
    chosen = [scenario(n) for n in names] if names else list(SCENARIOS)
    rows: dict[str, dict[str, Any]] = {s.name: not_available(s) for s in chosen if not s.available()}
    runnable = [s.name for s in chosen if s.name not in rows]
    if runnable:
        env = {
            **os.environ,
            "PYTHONPATH": project_pythonpath(),
        }
        started = time.monotonic()
        # Results come back through a file of their own: the processes a scenario starts share the child's
        # stdout and stderr, and their output must not be able to garble a result.
        with tempfile.NamedTemporaryFile(prefix="expertbot-reliability-", suffix=".jsonl") as results:
            args = ["--profile", profile, "--results", results.name, *runnable]
            child = subprocess.Popen(
                [sys.executable, "-m", "bot.bench.reliability.runner", *args],
                stdout=2,  # progress and the scenarios' own output: for people, on our stderr (fd 2)
                env=env,
            )
            try:
                child.wait(timeout=timeout_s)
            except BaseException:  # timeout or Ctrl-C: let the child stop its services, then give up on it
                child.terminate()
                try:
                    child.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
                if not isinstance(sys.exc_info()[1], subprocess.TimeoutExpired):
                    raise
            for line in Path(results.name).read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                rows[row["name"]] = row
        for name in runnable:
            rows.setdefault(
                name,
                {
                    "name": name,
                    "ok": False,
                    "error": f"the runner exited ({child.returncode}) without a result",
                    "seconds": round(time.monotonic() - started, 1),
                },
            )
    return [rows[s.name] for s in chosen]
