"""Where an answer's latency tail comes from, measured while simulated users chat (`load.simulated_users`).

Three suspects are measured directly, besides the chat core's own stage timings (`ChatReply.timings_ms`):
- the thread pool: `asyncio.to_thread` work (answers, votes, commands, stores) waits in the loop's default
  executor; `QueueTimedExecutor` records how long each piece waited before a thread took it;
- garbage collection: `gc.callbacks` record every collection's pause, with its generation;
- the rest of an answer beyond the core (the answer slots, storing the answer, links): latency minus core time.
"""

from __future__ import annotations

import gc
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


class QueueTimedExecutor(ThreadPoolExecutor):
    """A thread pool that records how long each submitted call waited for a free thread (ms)."""

    def __init__(self, max_workers: int | None = None) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix="timed")
        self.waits_ms: list[float] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        queued = time.perf_counter()

        def timed() -> Any:
            self.waits_ms.append(1000 * (time.perf_counter() - queued))
            return fn(*args, **kwargs)

        return super().submit(timed)


@dataclass
class GcPauses:
    """Every collection's pause while installed: (start, duration ms, generation)."""

    pauses: list[tuple[float, float, int]] = field(default_factory=list)
    _started: dict[int, float] = field(default_factory=dict)

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._started[threading.get_ident()] = now
        elif (began := self._started.pop(threading.get_ident(), None)) is not None:
            self.pauses.append((began, 1000 * (now - began), info["generation"]))

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *_: object) -> None:
        gc.callbacks.remove(self)

    def within(self, start: float, end: float) -> float:
        """Milliseconds of collection between two perf_counter instants."""
        return sum(ms for began, ms, _ in self.pauses if start <= began < end)


@dataclass
class AnswerTiming:
    start: float
    end: float
    route: str
    core_ms: dict[str, float]

    @property
    def latency_ms(self) -> float:
        return 1000 * (self.end - self.start)


def _pct(values: list[float], q: float, digits: int | None = 1) -> float:
    """The q-quantile (nearest rank), rounded to `digits` for reports; unrounded (None) to compare against, since
    a value rounded up (3441.46 -> 3441.5) leaves no value at or above it."""
    ordered = sorted(values)
    value = ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0
    return value if digits is None else round(value, digits)


def tail_report(answers: list[AnswerTiming], gc_pauses: GcPauses, executor: QueueTimedExecutor) -> dict[str, Any]:
    """The slowest 1% of answers taken apart, next to the whole run's thread waits and collections."""
    if not answers:
        return {}
    cutoff = _pct([a.latency_ms for a in answers], 0.99, None)
    slow = [a for a in answers if a.latency_ms >= cutoff]

    def mean(values: list[float]) -> float:
        return round(statistics.fmean(values), 1) if values else 0.0

    stages = sorted({k for a in slow for k in a.core_ms})
    full_collections = [ms for _, ms, gen in gc_pauses.pauses if gen == 2]
    return {
        "slowest": len(slow),
        "latency_ms": mean([a.latency_ms for a in slow]),
        "core_ms": {k: mean([a.core_ms.get(k, 0.0) for a in slow]) for k in stages},
        "outside_core_ms": mean([a.latency_ms - a.core_ms.get("total", 0.0) for a in slow]),
        "gc_during_ms": mean([gc_pauses.within(a.start, a.end) for a in slow]),
        "routes": dict(Counter(a.route for a in slow)),
        "thread_wait_ms": {
            "p50": _pct(executor.waits_ms, 0.5),
            "p99": _pct(executor.waits_ms, 0.99),
            "max": _pct(executor.waits_ms, 1.0),
        },
        "gc_full": {
            "count": len(full_collections),
            "max_ms": round(max(full_collections, default=0.0), 1),
            "total_ms": round(sum(full_collections), 1),
        },
        "gc_young_max_ms": round(max((ms for _, ms, gen in gc_pauses.pauses if gen < 2), default=0.0), 1),
    }
