"""Structured logs: one JSON object a line with request and job ids, and no token or secret in any line."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest

from agent.logging_setup import REDACTED, log_context, setup_logging
from agent.settings import load_settings

SLACK_BOT = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx"
SLACK_APP = "xapp-1-A0123456789-1234567890123-abcdef0123456789abcdef"
JWT = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkJvdCJ9.c2lnbmF0dXJlLXZhbHVl"


@pytest.fixture()
def capture():
    settings = load_settings(
        redis_url="redis://:r3dis-pa55word@redis.internal:6379/0",
        milvus_token="root:MilvusSecretToken",
        openai_api_key="sk-local-0123456789abcdef",
    )
    stream = io.StringIO()
    handler = setup_logging(settings, level=logging.DEBUG, fmt="json", stream=stream)
    try:
        yield stream
    finally:
        logging.getLogger().removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_line_is_json_with_the_ids_in_force(capture):
    log = logging.getLogger("expertbot.test")
    log.info("outside")
    with log_context(request="req-1"), log_context(job="job-9"):
        log.warning("inside %s", "both", extra={"surface": "slack"})

        async def in_a_thread() -> None:
            await asyncio.to_thread(log.info, "from a worker thread")

        asyncio.run(in_a_thread())
    first, second, third = [e for e in lines(capture) if e["logger"] == "expertbot.test"]
    assert "request_id" not in first and first["message"] == "outside" and first["level"] == "INFO"
    assert second["request_id"] == "req-1" and second["job_id"] == "job-9" and second["surface"] == "slack"
    assert third["request_id"] == "req-1", "asyncio.to_thread copies the context"


@pytest.mark.parametrize(
    ("message", "args", "secret"),
    [
        ("token %s", (SLACK_BOT,), SLACK_BOT),
        ("app token in text: " + SLACK_APP, (), SLACK_APP),
        ("headers %r", ({"Authorization": f"Bearer {JWT}"},), JWT),
        ("headers %r", ({"Authorization": "Bearer abcdefghijklmnop1234"},), "abcdefghijklmnop1234"),
        ("connecting to %s", ("redis://:r3dis-pa55word@redis.internal:6379/0",), "r3dis-pa55word"),
        ("the configured token is %s", ("root:MilvusSecretToken",), "MilvusSecretToken"),
        ("calling with key %s", ("sk-local-0123456789abcdef",), "sk-local-0123456789abcdef"),
        ("form body: user=bot&password=hunter2hunter2&x=1", (), "hunter2hunter2"),
        ('{"client_secret": "s3cr3t-value-123"}', (), "s3cr3t-value-123"),
    ],
)
def test_secrets_never_reach_a_line(capture, message, args, secret):
    logging.getLogger("expertbot.test").error(message, *args)
    text = capture.getvalue()
    assert secret not in text and REDACTED in text
    assert json.loads(text)["level"] == "ERROR"


def test_secrets_in_tracebacks_and_extra_fields_are_redacted(capture):
    log = logging.getLogger("expertbot.test")
    try:
        raise RuntimeError(f"Slack said invalid_auth for {SLACK_BOT}")
    except RuntimeError:
        log.exception("posting failed", extra={"url": "https://u:pw-in-url-123@example.com/x", "token": SLACK_APP})
    text = capture.getvalue()
    for secret in (SLACK_BOT, SLACK_APP, "pw-in-url-123"):
        assert secret not in text
    (entry,) = lines(capture)
    assert "RuntimeError" in str(entry["exception"]) and entry["message"] == "posting failed"


def test_library_loggers_go_through_the_same_handler(capture):
    logging.getLogger("pymilvus.decorators").error("RPC error with token %s", SLACK_BOT)
    (entry,) = lines(capture)
    assert entry["logger"] == "pymilvus.decorators" and SLACK_BOT not in capture.getvalue()


def test_text_format_is_redacted_too():
    stream = io.StringIO()
    handler = setup_logging(None, level=logging.INFO, fmt="text", stream=stream)
    try:
        with log_context(request="r-2"):
            logging.getLogger("expertbot.test").info("token %s", SLACK_BOT)
    finally:
        logging.getLogger().removeHandler(handler)
    assert stream.getvalue().strip() == f"INFO expertbot.test [request_id=r-2]: token {REDACTED}"
