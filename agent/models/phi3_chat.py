"""`Phi3Chat`: Phi-3 in this process as a LangChain chat model, serving each tenant its own current adapter.

The model loads on the first request, so building the chat model (at start-up, in the factory) is cheap. The base
model is loaded once; each tenant served recently has its current adapter beside it as a named peft adapter (at
most `max_tenant_adapters` tenants, least recently served dropped first). Before every request the tenant's
CURRENT pointer is compared with the adapter in memory; a promoted or rolled-back version is swapped in without
restarting the bot. A version that fails to load is logged and the previous one keeps serving. A tenant without an
adapter gets the base model (adapters disabled): an adapter trained on one tenant's material never answers
another. One lock serialises requests: the model is not safe to share, and the active adapter is per request.

The tenant comes as an invoke keyword (`llm.invoke(messages, tenant=...)`, which `ChatCore` passes when the
model says `serves_tenants`); without one, `default_tenant` is served.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from peft import PeftModel
from pydantic import PrivateAttr
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from agent.models.phi3 import attach_adapter, detach_adapters, load_phi3
from agent.models.prompting import cut_at_stop, to_chat
from agent.models.registry import adapter_name, tenant_registry

__all__ = ["Phi3Chat", "adapter_name"]

log = logging.getLogger(__name__)


@dataclass
class _Served:
    """What one tenant gets: the pointer text last acted on and the version in memory (None: the base model)."""

    pointer: str = ""
    version: str | None = None


class Phi3Chat(BaseChatModel):
    """Phi-3 (hub id or folder) with each tenant's current adapter; greedy unless temperature > 0."""

    serves_tenants: ClassVar[bool] = True

    model_id: str
    registry_root: Path | None = None
    """The adapters root: one registry per tenant below it (`tenant_registry`); None: the base model only."""
    default_tenant: str = "local"
    max_tenant_adapters: int = 8
    want_4bit: bool = True
    max_new_tokens: int = 320
    temperature: float = 0.0

    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _model: Any = PrivateAttr(default=None)
    _tokenizer: Any = PrivateAttr(default=None)
    _served: OrderedDict[str, _Served] = PrivateAttr(default_factory=OrderedDict)  # least recently served first
    _active: str | None = PrivateAttr(default=None)  # the version that answered last

    @property
    def _llm_type(self) -> str:
        return "phi3-transformers"

    @property
    def active_adapter(self) -> str | None:
        """The adapter version that answered last (None: the base model alone)."""
        return self._active

    def loaded_adapters(self) -> dict[str, str | None]:
        """tenant -> version in memory for each tenant served recently (None: the base model)."""
        with self._lock:
            return {tenant: served.version for tenant, served in self._served.items()}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        tenant = str(kwargs.get("tenant") or self.default_tenant)
        with self._lock:
            inputs = self._encode(messages)  # loads the model on first use
            with self._activate(tenant):
                out = self._model.generate(**inputs, **self._gen_kwargs(stop, kwargs))
            active = self._active
        prompt_len = int(inputs["input_ids"].shape[1])
        text, _, _ = cut_at_stop(self._tokenizer.decode(out[0, prompt_len:], skip_special_tokens=True), stop)
        new = int(out.shape[1]) - prompt_len
        usage = {"input_tokens": prompt_len, "output_tokens": new, "total_tokens": prompt_len + new}
        meta = {"adapter": active, "tenant": tenant}
        message = AIMessage(content=text, usage_metadata=usage, response_metadata=meta)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        tenant = str(kwargs.get("tenant") or self.default_tenant)
        with self._lock, ExitStack() as scope:
            inputs = self._encode(messages)
            scope.enter_context(self._activate(tenant))  # left only once the generating thread has finished
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
        if self._model is None:
            self._model, self._tokenizer = load_phi3(self.model_id, adapter=None, want_4bit=self.want_4bit)
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

    def _activate(self, tenant: str) -> AbstractContextManager[Any]:
        """Follow the tenant's pointer, then make its adapter the active one (or disable adapters for the base
        model) for the generation run inside the returned context; called with the lock held."""
        served = self._follow(tenant)
        self._active = served.version
        if served.version is None:
            return self._model.disable_adapter() if isinstance(self._model, PeftModel) else nullcontext()
        self._model.set_adapter(adapter_name(tenant, served.version), inference_mode=True)
        return nullcontext()

    def _follow(self, tenant: str) -> _Served:
        """The tenant's entry, its adapter swapped when its pointer changed; least recently served tenants beyond
        `max_tenant_adapters` give their adapter memory back."""
        registry = tenant_registry(self.registry_root, tenant) if self.registry_root else None
        pointer = registry.pointer() if registry else ""
        served = self._served.pop(tenant, None) or _Served()
        self._served[tenant] = served
        while len(self._served) > max(1, self.max_tenant_adapters):
            gone, old = self._served.popitem(last=False)
            if old.version is not None:
                self._drop(adapter_name(gone, old.version))
        if pointer == served.pointer:
            return served
        served.pointer = pointer  # act once per change: a broken version is not retried on every request
        if not pointer:
            if served.version is not None:
                self._drop(adapter_name(tenant, served.version))
                log.info("adapter %s of %s removed; serving the base model", served.version, tenant)
                served.version = None
            return served
        version = registry.get(pointer) if registry else None
        if version is None:
            log.error("adapter %r of %s is missing or incomplete; keeping %s", pointer, tenant, served.version)
            return served
        if version.name == served.version:
            return served
        try:
            self._model = attach_adapter(self._model, version.path, adapter_name(tenant, version.name))
        except Exception:
            log.exception("adapter %s of %s failed to load; keeping %s", version.name, tenant, served.version)
            return served
        self._model.eval()
        previous, served.version = served.version, version.name
        if previous is not None:
            self._drop(adapter_name(tenant, previous))  # one adapter per tenant in memory
        log.info("adapter %s now serves %s (was %s)", version.name, tenant, previous or "the base model")
        return served

    def _drop(self, name: str) -> None:
        """Free one named adapter; the last one goes with the peft wrapper, leaving the plain base model."""
        if list(getattr(self._model, "peft_config", {})) == [name]:
            self._model = detach_adapters(self._model)
        elif name in getattr(self._model, "peft_config", {}):
            self._model.delete_adapter(name)


class _Cancelled(StoppingCriteria):
    """Ends generation once the stream's consumer has gone, so the lock is not held for the remaining tokens."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        flag = self.event.is_set()
        return torch.full((input_ids.shape[0],), flag, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]
