"""Settings fail early, naming the environment variable to fix."""

from __future__ import annotations

import pytest

from agent.settings import ConfigError, load_settings


def test_defaults_point_at_the_embedded_stack(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("MILVUS_URI", raising=False)
    monkeypatch.setenv("EXPERTBOT_LOCAL_REDIS_PORT", "6390")
    s = load_settings()
    assert s.uses_embedded_redis and s.effective_redis_url == "redis://127.0.0.1:6390/0"
    assert s.uses_embedded_milvus and s.effective_milvus_uri.startswith("http://127.0.0.1:")


def test_service_urls_point_the_same_code_at_real_services(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://redis.internal:6379/2")
    monkeypatch.setenv("MILVUS_URI", "http://milvus.internal:19530")
    s = load_settings()
    assert not s.uses_embedded_redis and s.effective_redis_url == "redis://redis.internal:6379/2"
    assert not s.uses_embedded_milvus and s.effective_milvus_uri == "http://milvus.internal:19530"


def test_a_wrong_value_names_its_variable(monkeypatch):
    monkeypatch.setenv("EXPERTBOT_CHUNK_CHARS", "lots")
    with pytest.raises(ConfigError, match="EXPERTBOT_CHUNK_CHARS"):
        load_settings()
    monkeypatch.setenv("EXPERTBOT_CHUNK_CHARS", "1000")
    monkeypatch.setenv("EXPERTBOT_EMBEDDING_MODEL", "word2vec")
    with pytest.raises(ConfigError, match="EXPERTBOT_EMBEDDING_MODEL"):
        load_settings()


def test_a_process_asks_only_for_what_it_needs(monkeypatch):
    monkeypatch.delenv("MILVUS_TOKEN", raising=False)
    s = load_settings()
    assert s.require("chunk_chars") is s
    with pytest.raises(ConfigError, match="MILVUS_TOKEN"):
        s.require("milvus_token")
