"""Answers computed in child processes, so that a chat surface's event loop keeps its interpreter to itself.

A surface acknowledges requests on its event loop while answers are computed. In threads of the same process,
every acknowledgement waits for the GIL behind the answer threads' embedding work (measured with
`expertbot bench slack`: acknowledgements fell from ~900/s to ~290/s once answers started); in child
processes, the operating system shares the cores instead. Each child builds its own chat core once. A streamed
answer's events come back through a queue of a multiprocessing manager as the child produces them.
"""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, wait
from queue import Queue

from agent.chat import ChatCore, StreamEvent, make_chat_core
from agent.logging_setup import setup_logging
from agent.settings import Settings
from agent.types import Audience, ChatReply, ChatRequest

_core: ChatCore | None = None


def _start(settings: Settings, level: int = logging.INFO) -> None:
    """In each child: the same redacting log handler as the parent (a spawned child starts with none), then a core."""
    global _core
    setup_logging(settings, level=level, fmt=settings.log_format)
    _core = make_chat_core(settings)
    _core.answer(ChatRequest("What is the warm-up?", Audience("warm-up", "warm-up")))  # load everything now


def _ready() -> bool:
    return _core is not None


def pooled_answer(request: ChatRequest) -> ChatReply:
    """Runs in a child process of the pool."""
    if _core is None:
        raise RuntimeError("this process was not started by answer_pool()")
    return _core.answer(request)


def pooled_stream(request: ChatRequest, events: Queue[StreamEvent | BaseException | None]) -> None:
    """Runs in a child process of the pool: the answer's stream events into `events` as they come (a manager's
    queue, shared with the serving process), then None; a failure is put there too, for the caller to raise."""
    if _core is None:
        raise RuntimeError("this process was not started by answer_pool()")
    try:
        for event in _core.stream(request):
            events.put(event)
    except Exception as exc:
        events.put(exc)
    events.put(None)


def answer_pool(settings: Settings, processes: int) -> ProcessPoolExecutor:
    """Start `processes` children, each with a warm chat core; returns once all of them can answer."""
    pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"), initializer=_start,
                               initargs=(settings, logging.getLogger().level))  # fmt: skip
    futures = [pool.submit(_ready) for _ in range(processes)]
    wait(futures)
    for f in futures:
        f.result()  # a child that could not start raises here, with its reason
    return pool
