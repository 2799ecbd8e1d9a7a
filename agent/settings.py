"""All configuration in one typed place.

Settings are read from the environment (and a `.env` file) when `get_settings()` is first called, never at
import time, so tests and each process can build their own. Every process asks only for what it needs through
`Settings.require(...)`, which fails at start with the name of the missing environment variable.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

EmbeddingModelName = Literal["use-multilingual", "minilm", "e5-small"]
GeneratorName = Literal["extractive", "phi3", "openai"]
TeamsAppType = Literal["MultiTenant", "SingleTenant", "UserAssignedMSI"]
LogFormatName = Literal["json", "text"]


class ConfigError(RuntimeError):
    """A setting is missing or wrong; the message names the environment variable to fix."""


def _env(name: str) -> AliasChoices:
    """Accept both the plain name (e.g. REDIS_URL, what operators expect) and the EXPERTBOT_ prefixed one."""
    return AliasChoices(name, f"EXPERTBOT_{name}")


class Settings(BaseSettings):
    """expertbot's settings. Environment variable names are given in `.env.example`."""

    model_config = SettingsConfigDict(env_prefix="EXPERTBOT_", env_file=".env", extra="ignore", populate_by_name=True)

    # --- where state lives ---------------------------------------------------------------------------------
    data_dir: Path = Field(Path(".expertbot"), description="Local state: Milvus Lite data, embedded Redis.")

    # --- services: unset means "the embedded local stack" ----------------------------------------------------
    redis_url: str | None = Field(None, validation_alias=_env("REDIS_URL"))
    milvus_uri: str | None = Field(None, validation_alias=_env("MILVUS_URI"))
    milvus_token: str | None = Field(None, validation_alias=_env("MILVUS_TOKEN"))
    local_redis_port: int = Field(6390, ge=1, le=65535)
    local_milvus_port: int = Field(19530, ge=1, le=65535)
    milvus_lite_bm25: Literal["vectorized", "upstream"] = Field(
        "vectorized",
        description="BM25 scorer of the embedded Milvus Lite server: expertbot's vectorized one (same results, "
        "faster) or milvus-lite's own.",
    )
    collection: str = Field(
        "expertbot_chunks",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,239}$",  # Milvus names have 255 characters; buckets add "_passages_NN"
        description="Name prefix of the knowledge base's Milvus collections (`_passages_NN` buckets, `_documents`).",
    )

    # --- knowledge base --------------------------------------------------------------------------------------
    embedding_model: EmbeddingModelName = "use-multilingual"
    chunk_chars: int = Field(1000, ge=200, le=8000)
    max_upload_mb: float = Field(25.0, gt=0)
    embed_batch: int = Field(32, ge=1, le=1024)
    embed_threads: int = Field(
        0,
        ge=0,
        description="Threads the embedding model uses per process; 0: all cores, a worker's share in a worker, "
        "one in a process that answers.",
    )

    # --- answering ------------------------------------------------------------------------------------------
    generator: GeneratorName = Field(
        "extractive", description="extractive (no model), phi3 (transformers, in-process) or openai (a server)."
    )
    phi3_model: str = Field("microsoft/Phi-3-mini-4k-instruct", description="Hub id or local folder.")
    phi3_4bit: bool = Field(True, description="Load in 4-bit (bitsandbytes NF4) when CUDA is available.")
    adapters_dir: Path | None = Field(
        None, description="Adapter registries (one per tenant); default <data_dir>/adapters."
    )
    phi3_tenant_adapters: int = Field(8, ge=1, le=256, description="Tenants' adapters kept in memory (LRU).")
    phi3_max_batch: int = Field(8, ge=1, le=256, description="Concurrent questions generated together per batch.")
    openai_base_url: str | None = Field(None, description="e.g. a vLLM server: http://gpu-1:8000/v1")
    openai_api_key: str | None = None
    openai_model: str = Field("phi3-domain", description="Model (or LoRA adapter) name served there.")
    openai_lora: Literal["off", "runtime"] = Field(
        "off", description="runtime: load each tenant's current adapter on every server (vLLM's runtime LoRA API)."
    )
    openai_adapter_root: str | None = Field(
        None, description="The adapters root as the servers see it (a shared volume); default: the same path."
    )
    max_lora_rank: int = Field(64, ge=1, le=1024, description="Highest LoRA rank `adapters add` accepts.")
    max_new_tokens: int = Field(320, ge=16, le=4096)

    # --- tenancy for the local console and CLI ---------------------------------------------------------------
    default_tenant: str = "local"
    default_scope: str = "console"

    # --- chat surfaces (Slack, Teams) -------------------------------------------------------------------------
    admins: str = Field(
        "", description="Comma-separated user ids (Slack U..., Teams AAD object ids) allowed to forget and retrain."
    )
    dedup_window_s: int = Field(900, ge=600, description="A redelivered event within this window is ignored.")
    answer_concurrency: int = Field(4, ge=1, description="Questions answered at once per bot process.")
    answer_processes: int = Field(
        1, ge=0, le=64, description="Child processes computing a bot's answers; 0 computes them in the bot process."
    )

    # --- Teams (bot/teams) ------------------------------------------------------------------------------------
    teams_app_id: str = Field(
        "",
        validation_alias=AliasChoices("EXPERTBOT_TEAMS_APP_ID", "MICROSOFT_APP_ID"),
        description="Microsoft App ID of the bot; empty: no authentication (Emulator).",
    )
    teams_app_password: str = Field(
        "",
        validation_alias=AliasChoices("EXPERTBOT_TEAMS_APP_PASSWORD", "MICROSOFT_APP_PASSWORD"),
        description="Client secret of that app registration.",
    )
    teams_app_tenant_id: str = Field(
        "",
        validation_alias=AliasChoices("EXPERTBOT_TEAMS_APP_TENANT_ID", "MICROSOFT_APP_TENANT_ID"),
        description="Entra tenant of a SingleTenant or UserAssignedMSI app.",
    )
    teams_app_type: TeamsAppType = "MultiTenant"
    teams_host: str = Field("127.0.0.1", description="Interface the Teams endpoint listens on.")
    teams_port: int = Field(3978, ge=1, le=65535, description="Port of POST /api/messages (Emulator default).")
    teams_openid_metadata_url: str = Field(
        "", description="Where the keys that sign requests to the bot are published; empty: the Bot Framework's."
    )
    teams_token_issuer: str = Field("https://api.botframework.com", description="Issuer those tokens must name.")
    teams_ack_after_s: float = Field(
        2.0, ge=0, le=14, description="An answer not ready after this long is preceded by a short acknowledgement."
    )
    teams_allow_unauthenticated_remote: bool = Field(
        False,
        description="Let the unauthenticated endpoint (no app id) listen on a non-loopback address. Dangerous: "
        "anyone reaching it can act as any user; it is logged loudly at start.",
    )
    teams_download_hosts: str = Field(
        "*.sharepoint.com,*.sharepoint-df.com,*.sharepoint.us,*.sharepoint.de,*.sharepoint.cn,"
        "onedrive.live.com,*.onedrive.live.com,*.1drv.com,*.1drv.ms,*.svc.ms",
        description="Comma-separated hosts (a leading *. matches subdomains) Teams file downloads may come from.",
    )
    # --- adapter training (workers/training) ------------------------------------------------------------------
    train_config: Path | None = Field(None, description="Trainer and gate YAML; default: the packaged one.")
    train_at: str = Field("02:30", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="Nightly retraining, HH:MM UTC.")
    train_lock_ttl_s: int = Field(120, ge=3, description="A dead trainer's lock frees itself after this long.")
    train_max_doc_passages: int = Field(2000, ge=0, description="Tenant-wide passages per training run at most.")
    # --- Slack (bot/slack) ---------------------------------------------------------------------------------------
    slack_bot_token: str | None = Field(None, validation_alias=_env("SLACK_BOT_TOKEN"), description="xoxb-...")
    slack_app_token: str | None = Field(
        None, validation_alias=_env("SLACK_APP_TOKEN"), description="xapp-...: Socket Mode when set."
    )
    slack_signing_secret: str | None = Field(None, validation_alias=_env("SLACK_SIGNING_SECRET"))
    slack_mode: Literal["auto", "socket", "http"] = Field("auto", description="auto: socket with an app token.")
    slack_host: str = Field("127.0.0.1", description="HTTP mode: address the /slack/events server listens on.")
    slack_port: int = Field(3000, ge=1, le=65535, description="HTTP mode: port of /slack/events.")
    slack_api_url: str = Field("https://slack.com/api/", description="Web API base URL (GovSlack, tests).")

    # --- workers ---------------------------------------------------------------------------------------------
    worker_concurrency: int = Field(
        0, ge=0, description="Ingest worker processes `expertbot up` starts; 0: one per core, at most 4."
    )
    job_visibility_s: int = Field(
        10, ge=3, description="A job whose worker died is handed to another worker after about this long."
    )
    job_soft_time_limit_s: int = Field(
        900, ge=1, description="An ingestion or forget job still running after this long ends as failed."
    )
    job_time_limit_s: int = Field(
        960, ge=2, description="Its worker process is killed after this long (when the soft limit did not stop it)."
    )
    job_max_deliveries: int = Field(
        3, ge=1, le=100, description="A job whose worker died this many times is dead-lettered, not retried."
    )
    worker_max_memory_mb: int = Field(
        1536, ge=0, description="A worker process over this resident memory is replaced after its job; 0: never."
    )

    # --- retention and limits (issue 20) ---------------------------------------------------------------------
    memory_retention_days: float = Field(
        30.0, gt=0, description="A conversation untouched this long is deleted from the conversation memory."
    )
    memory_messages: int = Field(12, ge=2, le=200, description="Messages a conversation's memory keeps (the last).")
    vote_retention_days: float = Field(
        90.0, gt=0, description="Votes (and the answers voted on) in private conversations are deleted after this."
    )
    questions_per_minute: int = Field(20, ge=0, description="Questions one user may ask per minute; 0: no limit.")
    shares_per_hour: int = Field(30, ge=0, description="Documents one user may share per hour; 0: no limit.")

    health_token: str = Field("", description="Bearer token for the detailed /healthz report from other machines.")

    # --- operations ------------------------------------------------------------------------------------------
    log_format: LogFormatName = Field("json", description="json (one object a line, for collectors) or text.")

    @property
    def ingest_processes(self) -> int:
        """Ingestion is CPU-bound (embedding): one process per core, each with one core's threads, is fastest."""
        return self.worker_concurrency or min(os.cpu_count() or 1, 4)

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or f"redis://127.0.0.1:{self.local_redis_port}/0"

    @property
    def effective_milvus_uri(self) -> str:
        return self.milvus_uri or f"http://127.0.0.1:{self.local_milvus_port}"

    @property
    def uses_embedded_redis(self) -> bool:
        return self.redis_url is None

    @property
    def uses_embedded_milvus(self) -> bool:
        return self.milvus_uri is None

    @property
    def memory_path(self) -> Path:
        """The conversation memory (SQLite)."""
        return self.data_dir / "memory.sqlite"

    @property
    def adapter_registry(self) -> Path:
        return self.adapters_dir or self.data_dir / "adapters"

    @property
    def openai_base_urls(self) -> list[str]:
        """EXPERTBOT_OPENAI_BASE_URL split at commas: requests are spread over these servers."""
        return [u.strip().rstrip("/") for u in (self.openai_base_url or "").split(",") if u.strip()]

    @property
    def admin_ids(self) -> frozenset[str]:
        return frozenset(a.strip() for a in self.admins.split(",") if a.strip())

    @property
    def teams_auth_enabled(self) -> bool:
        """With an app id set, every Teams request must carry a valid Bot Framework token."""
        return bool(self.teams_app_id)

    @property
    def slack_enabled(self) -> bool:
        """Slack runs when a bot token and a way to receive events (app token or signing secret) are set."""
        return bool(self.slack_bot_token and (self.slack_app_token or self.slack_signing_secret))

    @property
    def slack_socket_mode(self) -> bool:
        return self.slack_mode == "socket" or (self.slack_mode == "auto" and bool(self.slack_app_token))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def require(self, *fields: str) -> Settings:
        """Fail with a clear message when a setting this process needs is empty."""
        missing = [f for f in fields if getattr(self, f) in (None, "")]
        if missing:
            names = ", ".join(_env_name(f) for f in missing)
            raise ConfigError(f"missing setting(s): {names} (see .env.example)")
        return self


def _env_name(field: str) -> str:
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"EXPERTBOT_{field.upper()}"


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment; a wrong value becomes a ConfigError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(f"{_loc_name(err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"invalid setting(s): {problems}") from None


def _loc_name(loc: tuple[int | str, ...]) -> str:
    field = str(loc[0]) if loc else ""
    return _env_name(field) if field in Settings.model_fields else field


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built on first use."""
    return load_settings()
