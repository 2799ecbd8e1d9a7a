"""Batched generation for an in-process model: concurrent requests share `generate` calls instead of queueing.

One worker thread owns the model. Requests wait in a queue; when the worker is free it takes the oldest one and
every other pending request that resolves to the same adapter (and samples the same way), up to `max_batch`,
waiting `gather_s` for stragglers that arrive together, and runs them as one left-padded batch. Each request gets
its own stream of token ids: a row ends at its end-of-turn token, at its own token limit, or when its consumer
cancels (the other rows go on; the batch ends when every row has). Adapters are resolved and activated only in
the worker thread, between batches, so a promotion swaps them without ever changing one under a running batch.

This module imports torch and transformers only (no LangChain, no pydantic): the generation benchmark runs it on
machines that have nothing else.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

_END = object()


@dataclass
class GenRequest:
    """What one caller wants generated. `route` is handed to the resolver (e.g. the tenant)."""

    input_ids: list[int]
    route: Hashable = None
    max_new_tokens: int = 128
    temperature: float = 0.0
    eos_ids: tuple[int, ...] = ()
    min_new_tokens: int = 0
    """Benchmarks set it to max_new_tokens so that every row does the same work."""


@dataclass
class GenStream:
    """A request's token ids as they are generated; iterate it, or `cancel()` it (also when abandoned)."""

    request: GenRequest
    served_by: Hashable = None
    """The adapter key the resolver chose for this request (set before the first token)."""
    tokens: int = 0
    _queue: queue.Queue[Any] = field(default_factory=queue.Queue)
    _cancelled: threading.Event = field(default_factory=threading.Event)
    _done: bool = False

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def __iter__(self) -> Iterator[int]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield int(item)

    # --- worker side ---
    def _push(self, token: int) -> None:
        self.tokens += 1
        self._queue.put(token)

    def _finish(self, error: BaseException | None = None) -> None:
        if not self._done:
            self._done = True
            if error is not None:
                self._queue.put(error)
            self._queue.put(_END)


Resolver = Callable[[Hashable], Hashable]
"""route -> adapter key (called in the worker thread, so it may load or swap adapters)."""
Activator = Callable[[Hashable], AbstractContextManager[Any]]
"""adapter key -> context in which the model generates with that adapter active."""


class BatchScheduler:
    """Runs `model.generate` for batches of pending requests in one worker thread."""

    def __init__(
        self,
        model: Callable[[], Any],
        *,
        pad_token_id: int,
        resolve: Resolver = lambda route: None,
        activate: Activator | None = None,
        max_batch: int = 8,
        gather_s: float = 0.005,
    ) -> None:
        self._model = model
        self.pad_token_id = pad_token_id
        self._resolve = resolve
        self._activate = activate
        self.max_batch = max(1, max_batch)
        self.gather_s = gather_s
        self._pending: list[GenStream] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self.batches: list[int] = []
        """Sizes of the batches run so far (for tests and benchmarks)."""

    def submit(self, request: GenRequest) -> GenStream:
        stream = GenStream(request)
        with self._cond:
            self._pending.append(stream)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="generate-batches", daemon=True)
                self._thread.start()
            self._cond.notify()
        return stream

    # --- worker -------------------------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
            if self.gather_s and len(self._pending) < self.max_batch:
                time.sleep(self.gather_s)  # requests that arrive together are batched together
            batch = self._take()
            if batch:
                self._run(batch)

    def _take(self) -> list[GenStream]:
        """The oldest live request and the pending ones that share its adapter and sampling, up to max_batch."""
        with self._cond:
            live = [s for s in self._pending if not s.cancelled]
            for gone in (s for s in self._pending if s.cancelled):
                gone._finish()
            self._pending = live
            if not live:
                return []
        keys: dict[int, Hashable] = {}
        for stream in live:  # resolving may load an adapter: outside the queue's lock
            keys[id(stream)] = self._safe_resolve(stream.request.route)
        first = live[0]

        def compatible(s: GenStream) -> bool:
            a, b = s.request, first.request
            same_sampling = (a.temperature > 0) == (b.temperature > 0) and (a.temperature == b.temperature)
            return keys[id(s)] == keys[id(first)] and same_sampling and a.min_new_tokens == b.min_new_tokens

        batch = [s for s in live if compatible(s)][: self.max_batch]
        key = keys[id(first)]
        if not isinstance(key, _Failed) and len({s.request.route for s in live}) > 1:
            # resolving other routes may have evicted this one's adapter (a bounded cache): resolve it last
            again = self._safe_resolve(first.request.route)
            if again != key:
                batch, key = [first], again
        with self._cond:
            taken = {id(s) for s in batch}
            self._pending = [s for s in self._pending if id(s) not in taken]
        if isinstance(key, _Failed):
            for stream in batch:
                stream._finish(key.error)
            return []
        for stream in batch:
            stream.served_by = key
        return batch

    def _safe_resolve(self, route: Hashable) -> Hashable:
        try:
            return self._resolve(route)
        except Exception as exc:  # handed to the request's consumer, the worker goes on
            return _Failed(exc)

    def _run(self, batch: list[GenStream]) -> None:
        self.batches.append(len(batch))
        try:
            model = self._model()
            longest = max(len(s.request.input_ids) for s in batch)
            ids = torch.full((len(batch), longest), self.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(batch), longest), dtype=torch.long)
            for row, stream in enumerate(batch):  # left padding: every row's next token is at the end
                prompt = stream.request.input_ids
                ids[row, longest - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
                mask[row, longest - len(prompt) :] = 1
            first = batch[0].request
            eos = sorted({e for s in batch for e in s.request.eos_ids})
            kwargs: dict[str, Any] = {
                "max_new_tokens": max(s.request.max_new_tokens for s in batch),
                "do_sample": first.temperature > 0,
                "pad_token_id": self.pad_token_id,
                "eos_token_id": eos or None,
                "streamer": _RowStreamer(batch),
                "stopping_criteria": StoppingCriteriaList([_RowsDone(batch)]),
            }
            if first.temperature > 0:
                kwargs["temperature"] = first.temperature
            if first.min_new_tokens:
                kwargs["min_new_tokens"] = first.min_new_tokens
            context = self._activate(batch[0].served_by) if self._activate else _nothing()
            with context, torch.inference_mode():
                model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device), **kwargs)
        except BaseException as exc:
            for stream in batch:
                stream._finish(exc)
            return
        for stream in batch:
            stream._finish()


@dataclass(frozen=True)
class _Failed:
    error: BaseException


class _nothing(AbstractContextManager[None]):
    def __exit__(self, *exc: object) -> None:
        return None


class _RowStreamer(BaseStreamer):
    """Hands each row's new token to its stream; a row is done at one of its eos ids or its own token limit."""

    def __init__(self, batch: list[GenStream]) -> None:
        self.batch = batch
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate first passes the prompt
            self.prompt_seen = True
            return
        for row, token in enumerate(value.reshape(len(self.batch), -1)[:, -1].tolist()):
            stream = self.batch[row]
            if stream._done:
                continue
            if stream.cancelled or token in stream.request.eos_ids:
                stream._finish()
                continue
            stream._push(token)
            if stream.tokens >= stream.request.max_new_tokens:
                stream._finish()

    def end(self) -> None:
        for stream in self.batch:
            stream._finish()


class _RowsDone(StoppingCriteria):
    """Per row: finished (eos, own limit) or cancelled by its consumer. generate stops once every row is."""

    def __init__(self, batch: list[GenStream]) -> None:
        self.batch = batch

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        flags = [s._done or s.cancelled for s in self.batch]
        return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]
