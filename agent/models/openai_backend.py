"""The "openai" generator: any OpenAI-compatible chat server (vLLM, TGI, llama.cpp, a hosted API), or several.

This is how a fleet of bot processes shares GPUs: the model (and its LoRA adapters, by name) is served elsewhere,
and here is only an HTTP client. With several servers in EXPERTBOT_OPENAI_BASE_URL, or runtime LoRA on
(EXPERTBOT_OPENAI_LORA=runtime), the chat model is an `OpenAIFleetChat` over one client per server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.settings import Settings

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel


def make_openai_chat(
    settings: Settings, *, timeout_s: float = 60.0, max_retries: int = 2, base_url: str | None = None
) -> BaseChatModel:
    """A ChatOpenAI on one server (`base_url`, default settings.openai_base_url); ConfigError naming
    EXPERTBOT_OPENAI_BASE_URL when it is unset.

    Local servers usually take any key, so a missing EXPERTBOT_OPENAI_API_KEY is sent as "not-needed" rather
    than failing (ChatOpenAI refuses to start without one).
    """
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    settings.require("openai_base_url", "openai_model")
    return ChatOpenAI(
        base_url=base_url or settings.openai_base_url,
        api_key=SecretStr(settings.openai_api_key or "not-needed"),
        model=settings.openai_model,
        max_completion_tokens=settings.max_new_tokens,
        temperature=0.0,
        timeout=timeout_s,
        max_retries=max_retries,
    )


def make_openai_generator(settings: Settings) -> BaseChatModel:
    """One ChatOpenAI for a single server without adapters (as before); otherwise an OpenAIFleetChat."""
    settings.require("openai_base_url", "openai_model")
    urls = settings.openai_base_urls
    if len(urls) == 1 and settings.openai_lora == "off":
        return make_openai_chat(settings, base_url=urls[0])
    from agent.models.lora_fleet import LoraFleet
    from agent.models.openai_fleet import OpenAIFleetChat

    chat = OpenAIFleetChat(
        clients={url: make_openai_chat(settings, base_url=url) for url in urls},
        base_model=settings.openai_model,
        default_tenant=settings.default_tenant,
    )
    if settings.openai_lora == "runtime":
        fleet = LoraFleet(
            urls,
            adapters_root=settings.adapter_registry,
            base_model=settings.openai_model,
            server_root=settings.openai_adapter_root,
            api_key=settings.openai_api_key,
        )
        chat.attach_fleet(fleet)
    return chat
