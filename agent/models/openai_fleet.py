"""`OpenAIFleetChat`: several OpenAI-compatible servers (vLLM) as one LangChain chat model, each request naming the
tenant's current adapter when runtime LoRA is on.

Requests go to the servers in turn. With a `LoraFleet` the request's `model` is the tenant's adapter as loaded on
that server (the base model when the tenant has none, or when the server refused it). A 404 "The model `x` does
not exist" means the server restarted and forgot its adapters: the adapter is loaded again and the request
retried once (a stream only when nothing was received yet).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import PrivateAttr

from agent.models.lora_fleet import Lease, LoraFleet

_QUIET: Any = {"callbacks": []}
"""The inner per-server client reports to no callback: this model's own run reports each token once (LangGraph's
message streaming would otherwise see every token twice, from the inherited run context)."""
FORGOTTEN = "does not exist"
"""vLLM's 404 for a model name it does not serve: "The model `x` does not exist."."""


class OpenAIFleetChat(BaseChatModel):
    """One ChatOpenAI per server; the tenant arrives as an invoke keyword (`serves_tenants`)."""

    serves_tenants: ClassVar[bool] = True

    clients: dict[str, Any]
    """Base URL -> ChatOpenAI on that server."""
    base_model: str
    default_tenant: str = "local"

    _fleet: LoraFleet | None = PrivateAttr(default=None)
    _turn: Iterator[str] | None = PrivateAttr(default=None)
    _turn_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def attach_fleet(self, fleet: LoraFleet | None) -> OpenAIFleetChat:
        self._fleet = fleet
        return self

    @property
    def fleet(self) -> LoraFleet | None:
        return self._fleet

    @property
    def _llm_type(self) -> str:
        return "openai-fleet"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        tenant = str(kwargs.pop("tenant", None) or self.default_tenant)
        for attempt in (0, 1):
            with self._lease(tenant) as lease:
                try:
                    client = self.clients[lease.url]
                    reply = client.invoke(messages, _QUIET, stop=stop, model=lease.model, **kwargs)
                except Exception as exc:
                    if attempt == 0 and self._forgotten(exc, lease):
                        continue
                    raise
            meta = {**reply.response_metadata, "adapter": lease.version, "server": lease.url, "tenant": tenant}
            message = AIMessage(content=reply.content, usage_metadata=reply.usage_metadata, response_metadata=meta)
            return ChatResult(generations=[ChatGeneration(message=message)])
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        tenant = str(kwargs.pop("tenant", None) or self.default_tenant)
        for attempt in (0, 1):
            received = False
            with self._lease(tenant) as lease:
                try:
                    client = self.clients[lease.url]
                    for piece in client.stream(messages, _QUIET, stop=stop, model=lease.model, **kwargs):
                        received = True
                        piece.response_metadata = {**piece.response_metadata, "adapter": lease.version}
                        chunk = ChatGenerationChunk(message=piece)
                        if run_manager:
                            run_manager.on_llm_new_token(piece.text, chunk=chunk)
                        yield chunk
                except Exception as exc:
                    if attempt == 0 and not received and self._forgotten(exc, lease):
                        continue
                    raise
            return

    # --- internals ----------------------------------------------------------------------------------------------

    def _lease(self, tenant: str) -> Any:
        if self._fleet is not None:
            return self._fleet.lease(tenant)
        with self._turn_lock:
            if self._turn is None:
                self._turn = itertools.cycle(list(self.clients))
            url = next(self._turn)
        return _Fixed(Lease(url, self.base_model, None))

    def _forgotten(self, exc: Exception, lease: Lease) -> bool:
        """A 404 naming the adapter: the server forgot it; tell the fleet so that the retry loads it again."""
        if self._fleet is None or lease.version is None:
            return False
        if getattr(exc, "status_code", None) != 404 or FORGOTTEN not in str(exc):
            return False
        self._fleet.forget(lease.url)
        return True


class _Fixed:
    """A lease without a fleet: a context manager that only hands out the server and the base model."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease

    def __enter__(self) -> Lease:
        return self.lease

    def __exit__(self, *exc: object) -> None:
        return None
