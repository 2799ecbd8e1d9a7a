"""`Phi3Chat`: Phi-3 in this process as a LangChain chat model, serving the registry's current adapter.

The model loads on the first request, so building the chat model (at start-up, in the factory) is cheap. Before
every request the registry's CURRENT pointer is compared with the adapter in memory; a promoted or rolled-back
version is swapped in on the loaded base model, without restarting the bot. A version that fails to load is
logged and the previous one keeps serving. One lock serialises requests: the model is not safe to share.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import PrivateAttr
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from agent.models.phi3 import attach_adapter, detach_adapters, load_phi3
from agent.models.prompting import cut_at_stop, to_chat
from agent.models.registry import AdapterRegistry

log = logging.getLogger(__name__)


class Phi3Chat(BaseChatModel):
    """Phi-3 (hub id or folder) with the adapter registry's current version; greedy unless temperature > 0."""

    model_id: str
    registry_root: Path | None = None
    want_4bit: bool = True
    max_new_tokens: int = 320
    temperature: float = 0.0

    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _model: Any = PrivateAttr(default=None)
    _tokenizer: Any = PrivateAttr(default=None)
    _pointer: str = PrivateAttr(default="")  # the CURRENT text last acted on
    _active: str | None = PrivateAttr(default=None)  # the adapter version in memory

    @property
    def _llm_type(self) -> str:
        return "phi3-transformers"

    @property
    def active_adapter(self) -> str | None:
        """The adapter version that answered last (None: the base model alone)."""
        return self._active

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        with self._lock:
            self._refresh()
            inputs = self._encode(messages)
            out = self._model.generate(**inputs, **self._gen_kwargs(stop, kwargs))
            active = self._active
        prompt_len = int(inputs["input_ids"].shape[1])
        text, _, _ = cut_at_stop(self._tokenizer.decode(out[0, prompt_len:], skip_special_tokens=True), stop)
        new = int(out.shape[1]) - prompt_len
        usage = {"input_tokens": prompt_len, "output_tokens": new, "total_tokens": prompt_len + new}
        message = AIMessage(content=text, usage_metadata=usage, response_metadata={"adapter": active})
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        with self._lock:
            self._refresh()
            inputs = self._encode(messages)
            streamer = TextIteratorStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True)
            cancel = threading.Event()
            failure: list[BaseException] = []
            gen_kwargs = self._gen_kwargs(stop, kwargs)
            gen_kwargs["stopping_criteria"] = StoppingCriteriaList([_Cancelled(cancel)])

            def work() -> None:
                try:
                    self._model.generate(**inputs, streamer=streamer, **gen_kwargs)
                except BaseException as exc:  # re-raised in the caller's thread below
                    failure.append(exc)
                    streamer.end()  # type: ignore[no-untyped-call]  # unblocks the loop below

            thread = threading.Thread(target=work, name="phi3-generate", daemon=True)
            thread.start()
            try:
                held = ""  # a tail that may be the start of a stop string, not yet emitted
                for piece in streamer:
                    emit, held, stopped = cut_at_stop(held + piece, stop, hold_back=True)
                    if emit:
                        yield self._chunk(emit, run_manager)
                    if stopped:
                        break
                else:
                    if held and not failure:
                        yield self._chunk(held, run_manager)
            finally:
                cancel.set()  # a consumer that stops early must not leave generate running under the lock
                thread.join()
        if failure:
            raise failure[0]

    # --- internals -----------------------------------------------------------------------------------------

    def _chunk(self, text: str, run_manager: CallbackManagerForLLMRun | None) -> ChatGenerationChunk:
        chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
        if run_manager:
            run_manager.on_llm_new_token(text, chunk=chunk)
        return chunk

    def _encode(self, messages: list[BaseMessage]) -> Any:
        prompt = self._tokenizer.apply_chat_template(to_chat(messages), tokenize=False, add_generation_prompt=True)
        # the template already holds any BOS; adding special tokens again would double it
        return self._tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(self._model.device)

    def _gen_kwargs(self, stop: list[str] | None, extra: dict[str, Any]) -> dict[str, Any]:
        temperature = float(extra.get("temperature", self.temperature))
        eos = [self._tokenizer.eos_token_id]
        end_id = self._tokenizer.convert_tokens_to_ids("<|end|>")
        if isinstance(end_id, int) and end_id != self._tokenizer.unk_token_id:
            eos.append(end_id)  # Phi-3 ends a turn with <|end|>, not with its eos token
        kwargs: dict[str, Any] = {
            "max_new_tokens": int(extra.get("max_new_tokens", self.max_new_tokens)),
            "do_sample": temperature > 0,
            "eos_token_id": eos,
            "pad_token_id": self._tokenizer.pad_token_id,
        }
        if temperature > 0:
            kwargs["temperature"] = temperature
        if stop:
            kwargs.update(stop_strings=stop, tokenizer=self._tokenizer)
        return kwargs

    def _refresh(self) -> None:
        """Load on first use, then follow the registry's pointer; called with the lock held."""
        registry = AdapterRegistry(self.registry_root) if self.registry_root else None
        pointer = registry.pointer() if registry else ""
        if self._model is None:
            self._model, self._tokenizer = load_phi3(self.model_id, adapter=None, want_4bit=self.want_4bit)
        elif pointer == self._pointer:
            return
        self._pointer = pointer  # act once per change: a broken version is not retried on every request
        if not pointer:
            if self._active is not None:
                self._model = detach_adapters(self._model)
                log.info("adapter %s removed; serving the base model", self._active)
                self._active = None
            return
        version = registry.get(pointer) if registry else None
        if version is None:
            log.error("adapter %r is missing or incomplete; keeping %s", pointer, self._active or "the base model")
        elif version.name != self._active:
            self._swap_to(version.name, version.path)

    def _swap_to(self, name: str, path: Path) -> None:
        previous = self._active
        try:
            self._model = attach_adapter(self._model, path, name)
        except Exception:
            log.exception("adapter %s failed to load; keeping %s", name, previous or "the base model")
            return
        self._model.eval()
        self._active = name
        if previous is not None:
            self._model.delete_adapter(previous)  # one adapter in memory at a time
        log.info("adapter %s now serving (was %s)", name, previous or "the base model")


class _Cancelled(StoppingCriteria):
    """Ends generation once the stream's consumer has gone, so the lock is not held for the remaining tokens."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        flag = self.event.is_set()
        return torch.full((input_ids.shape[0],), flag, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]
