"""The "openai" generator: any OpenAI-compatible chat server (vLLM, TGI, llama.cpp, a hosted API).

This is how a fleet of bot processes shares one GPU: the model (and its LoRA adapters, by name) is served
elsewhere, and here is only an HTTP client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.settings import Settings

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel


def make_openai_chat(settings: Settings, *, timeout_s: float = 60.0, max_retries: int = 2) -> BaseChatModel:
    """A ChatOpenAI on settings.openai_base_url; ConfigError naming EXPERTBOT_OPENAI_BASE_URL when it is unset.

    Local servers usually take any key, so a missing EXPERTBOT_OPENAI_API_KEY is sent as "not-needed" rather
    than failing (ChatOpenAI refuses to start without one).
    """
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    settings.require("openai_base_url", "openai_model")
    return ChatOpenAI(
        base_url=settings.openai_base_url,
        api_key=SecretStr(settings.openai_api_key or "not-needed"),
        model=settings.openai_model,
        max_completion_tokens=settings.max_new_tokens,
        temperature=0.0,
        timeout=timeout_s,
        max_retries=max_retries,
    )
