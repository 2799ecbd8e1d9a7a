"""Which chat model answers, from settings.generator. Nothing heavy is imported until a model is asked for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.settings import Settings

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel


def make_chat_model(settings: Settings) -> BaseChatModel | None:
    """None for "extractive" (answers are the retrieved passages); Phi3Chat for "phi3"; for "openai" ChatOpenAI on
    one server, or OpenAIFleetChat for several servers or runtime LoRA (EXPERTBOT_OPENAI_LORA=runtime).

    Phi3Chat loads its weights on its first request, so this call is cheap whichever generator is chosen.
    """
    if settings.generator == "extractive":
        return None
    if settings.generator == "phi3":
        from agent.models.phi3_chat import Phi3Chat

        return Phi3Chat(
            model_id=settings.phi3_model,
            registry_root=settings.adapter_registry,
            default_tenant=settings.default_tenant,
            max_tenant_adapters=settings.phi3_tenant_adapters,
            want_4bit=settings.phi3_4bit,
            max_new_tokens=settings.max_new_tokens,
            max_batch=settings.phi3_max_batch,
        )
    if settings.generator == "openai":
        from agent.models.openai_backend import make_openai_generator

        return make_openai_generator(settings)
    raise ValueError(f"unknown generator {settings.generator!r}")
