"""`Phi3Chat`: Phi-3 in this process as a LangChain chat model, serving each tenant its own current adapter.

The model loads on the first request, so building the chat model (at start-up, in the factory) is cheap. The base
model is loaded once; each tenant served recently has its current adapter beside it as a named peft adapter (at
most `max_tenant_adapters` tenants, least recently served dropped first). Before every request the tenant's
CURRENT pointer is compared with the adapter in memory; a promoted or rolled-back version is swapped in without
restarting the bot. A version that fails to load is logged and the previous one keeps serving. A tenant without an
adapter gets the base model (adapters disabled): an adapter trained on one tenant's material never answers
another. Concurrent requests are not queued one by one: a `BatchScheduler` runs the pending requests that share an
adapter as one batch in its worker thread (the only thread that touches the model or swaps adapters), each
request still a stream of its own that its consumer can abandon.

The tenant comes as an invoke keyword (`llm.invoke(messages, tenant=...)`, which `ChatCore` passes when the
model says `serves_tenants`); without one, `default_tenant` is served.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from peft import PeftModel
from pydantic import PrivateAttr

from agent.models.batching import BatchScheduler, GenRequest, GenStream
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
    max_batch: int = 8
    """Most requests generated together in one batch."""

    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)  # loading the model and the scheduler
    _served_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _scheduler: BatchScheduler | None = PrivateAttr(default=None)
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
        with self._served_lock:
            return {tenant: served.version for tenant, served in self._served.items()}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        tenant = str(kwargs.get("tenant") or self.default_tenant)
        stream, prompt_len = self._submit(messages, tenant, kwargs)
        text = "".join(self._texts(stream, stop))
        usage = {"input_tokens": prompt_len, "output_tokens": stream.tokens, "total_tokens": prompt_len + stream.tokens}
        meta = {"adapter": _version(stream.served_by), "tenant": tenant}
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
        stream, _ = self._submit(messages, tenant, kwargs)
        for text in self._texts(stream, stop):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
            if run_manager:
                run_manager.on_llm_new_token(text, chunk=chunk)
            yield chunk

    # --- internals -----------------------------------------------------------------------------------------

    def _submit(self, messages: list[BaseMessage], tenant: str, extra: dict[str, Any]) -> tuple[GenStream, int]:
        """Queue one request with the batch scheduler (built, with the model, on first use)."""
        with self._lock:
            if self._model is None:
                self._model, self._tokenizer = load_phi3(self.model_id, adapter=None, want_4bit=self.want_4bit)
            if self._scheduler is None:
                self._scheduler = BatchScheduler(
                    lambda: self._model,
                    pad_token_id=int(self._tokenizer.pad_token_id),
                    resolve=self._resolve,
                    activate=self._activate,
                    max_batch=self.max_batch,
                )
        prompt = self._tokenizer.apply_chat_template(to_chat(messages), tokenize=False, add_generation_prompt=True)
        # the template already holds any BOS; adding special tokens again would double it
        ids = list(self._tokenizer(prompt, add_special_tokens=False)["input_ids"])
        temperature = float(extra.get("temperature", self.temperature))
        request = GenRequest(
            input_ids=ids,
            route=tenant,
            max_new_tokens=int(extra.get("max_new_tokens", self.max_new_tokens)),
            temperature=temperature,
            eos_ids=self._eos_ids(),
        )
        return self._scheduler.submit(request), len(ids)

    def _texts(self, stream: GenStream, stop: list[str] | None) -> Iterator[str]:
        """The stream's text piece by piece, cut at the first stop string; the request is cancelled when the
        consumer stops early (a stop string, or an abandoned stream)."""
        ids: list[int] = []
        text, sent = "", 0
        held = ""  # a tail that may be the start of a stop string, not yet emitted
        try:
            for token in stream:
                ids.append(token)
                text = self._tokenizer.decode(ids, skip_special_tokens=True)
                if text.endswith("\ufffd"):
                    continue  # maybe half of a multi-byte character: wait for the rest
                emit, held, stopped = cut_at_stop(held + text[sent:], stop, hold_back=True)
                sent = len(text)
                if emit:
                    yield emit
                if stopped:
                    return
            rest, _, _ = cut_at_stop(held + text[sent:], stop)
            if rest:
                yield rest
        finally:
            stream.cancel()  # a no-op once finished; frees the batch row of a consumer that left early
            self._active = _version(stream.served_by)

    def _eos_ids(self) -> tuple[int, ...]:
        eos = [int(self._tokenizer.eos_token_id)]
        end_id = self._tokenizer.convert_tokens_to_ids("<|end|>")
        if isinstance(end_id, int) and end_id != self._tokenizer.unk_token_id:
            eos.append(end_id)  # Phi-3 ends a turn with <|end|>, not with its eos token
        return tuple(eos)

    def _resolve(self, route: Hashable) -> str | None:
        """Worker thread: follow the tenant's pointer; the adapter key is the version serving it (None: base)."""
        with self._served_lock:
            served = self._follow(str(route))
            return served.version and f"{route}\x1f{served.version}"

    def _activate(self, key: Hashable) -> AbstractContextManager[Any]:
        """Worker thread: make the key's adapter active (or disable adapters for the base model) for one batch."""
        if key is None:
            return self._model.disable_adapter() if isinstance(self._model, PeftModel) else nullcontext()
        tenant, _, version = str(key).partition("\x1f")
        self._model.set_adapter(adapter_name(tenant, version), inference_mode=True)
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


def _version(key: Hashable) -> str | None:
    """The version part of an adapter key ("<tenant>\\x1f<version>"; None: the base model)."""
    return str(key).partition("\x1f")[2] if key is not None else None
