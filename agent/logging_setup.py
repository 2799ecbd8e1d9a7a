"""One logging setup for every expertbot process: JSON lines with request and job ids, and no secret in any line.

Why here (in `agent/`): the bots, the CLI and the Celery workers all call it, and `workers/` may not import `bot/`.

- **Ids**: `request_id` and `job_id` live in context variables, so every line logged while handling a chat
  request or running a job carries them, also from libraries and from threads started with `asyncio.to_thread`
  (which copies the context). Set them with `log_context(request_id=...)`.
- **Redaction** happens in a handler filter, on the final text of the message, its arguments, its traceback and
  its extra fields: a token passed as an argument, inside an exception's message or in a URL is caught as well.
  It knows the shapes of Slack tokens (`xoxb-`, `xoxp-`, `xapp-` ...), bearer tokens, JWTs, passwords in URLs,
  and the literal value of every secret setting (any field named like *token*, *secret*, *password*, *key*).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal, TextIO

from agent.settings import Settings

LogFormat = Literal["json", "text"]

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("expertbot_request_id", default=None)
job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("expertbot_job_id", default=None)

REDACTED = "[redacted]"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Slack tokens: bot, user, app-level, refresh, configuration, legacy workspace tokens.
    (re.compile(r"\bx(?:ox[abposre]|app)-[A-Za-z0-9-]{6,}"), REDACTED),
    # Authorization headers and the like: keep the scheme, drop the credential.
    (re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE), r"\1 " + REDACTED),
    # JSON Web Tokens (Teams / Bot Framework access tokens) wherever they appear.
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), REDACTED),
    # user:password@ in URLs (redis://:pw@host, http://user:pw@host).
    (re.compile(r"(?<=://)([^:/@\s]*):([^@/\s]+)@"), r"\1:" + REDACTED + "@"),
    # password=..., secret: ..., api_key="..." in free text and query strings.
    (
        re.compile(
            r"\b((?:client_|app_|api_)?(?:password|passwd|secret|token|api_?key)[\"']?\s*[=:]\s*[\"']?)"
            r"([^\s\"'&,;}]{4,})",
            re.IGNORECASE,
        ),
        r"\1" + REDACTED,
    ),
)

_SECRET_FIELD = re.compile(r"token|secret|password|api_key|_key$", re.IGNORECASE)
_URL_FIELD = re.compile(r"_(url|uri)$")
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def secret_values(settings: Settings) -> list[str]:
    """The values of settings that are secrets (by field name), and the passwords inside configured URLs."""
    values: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        text = str(value.get_secret_value() if hasattr(value, "get_secret_value") else value)
        if _SECRET_FIELD.search(name) and len(text) >= 4:
            values.append(text)
        elif _URL_FIELD.search(name) and (m := re.search(r"://[^:/@\s]*:([^@/\s]+)@", text)):
            values.append(m.group(1))
    return values


class Redactor:
    """Replaces known secret shapes and the given literal secrets with a marker."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so that a secret containing another is replaced whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text


class RedactionFilter(logging.Filter):
    """Attached to every handler: renders and redacts each record before any formatter sees it."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redact = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the line
            message = f"{record.msg!r} {record.args!r}"
        record.msg, record.args = self.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                record.__dict__[key] = self.redact(value)
        record.request_id = request_id.get()
        record.job_id = job_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, ids, exception, and any extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for key in ("request_id", "job_id"):
            if value := getattr(record, key, None):
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and key not in entry and key not in ("request_id", "job_id"):
                entry[key] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """For a person at a terminal: `LEVEL logger [ids]: message`."""

    def format(self, record: logging.LogRecord) -> str:
        ids = " ".join(f"{k}={v}" for k in ("request_id", "job_id") if (v := getattr(record, k, None)))
        record.ids = f" [{ids}]" if ids else ""
        self._style._fmt = "%(levelname)s %(name)s%(ids)s: %(message)s"
        return super().format(record)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (a test runner may swap it and close the old one)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def setup_logging(
    settings: Settings | None = None,
    *,
    level: int | str = logging.INFO,
    fmt: LogFormat = "json",
    stream: TextIO | None = None,
) -> logging.Handler:
    """Install one redacting handler on the root logger (replacing the one a previous call installed).

    Handlers someone else installed (a test runner's) are kept. Returns the handler.
    """
    handler: logging.StreamHandler[TextIO] = logging.StreamHandler(stream) if stream else _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactionFilter(Redactor(secret_values(settings) if settings else ())))
    handler.expertbot = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "expertbot", False):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    _adopt_library_loggers(root.level)
    return handler


def _adopt_library_loggers(level: int) -> None:
    """pymilvus configures its own console handlers at import: route its lines through ours (redacted, JSON)."""
    import pymilvus  # noqa: F401  (imported for its logging configuration, which we then undo)

    for name in ("pymilvus", "pymilvus.milvus_client", "pymilvus.bulk_writer"):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True
        logger.disabled = False
        logger.setLevel(max(level, logging.ERROR))  # it warns on every query iterator against Milvus Lite


@contextlib.contextmanager
def log_context(*, request: str | None = None, job: str | None = None) -> Iterator[None]:
    """Tag every line logged inside the block (and in threads started from it) with these ids."""
    tokens = []
    if request is not None:
        tokens.append((request_id, request_id.set(request)))
    if job is not None:
        tokens.append((job_id, job_id.set(job)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
