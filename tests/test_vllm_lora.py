"""Runtime LoRA on vLLM-speaking servers: the local fake (bot/fakes/vllm.py) at the wire, then the bot's side
(LoraFleet + OpenAIFleetChat) against one or two of them: promote, rollback, restart, refusal, spreading."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from langchain_core.messages import HumanMessage

from agent.models.factory import make_chat_model
from agent.models.lora_fleet import read_serving_status, refusals
from agent.models.openai_fleet import OpenAIFleetChat
from agent.models.registry import AdapterRegistry, adapter_name, tenant_registry
from agent.settings import load_settings
from bot.fakes.vllm import FakeVllm

TENANT = "T-acme"
MANIFEST = {"base_model": "microsoft/Phi-3-mini-4k-instruct", "data_hash": "x", "examples": {}, "metrics": {}}
QUESTION = [HumanMessage("What does onboarding mean here?")]


def _adapter(folder: Path, rank: int = 8) -> Path:
    """A saved peft LoRA adapter as far as a server's loader looks: config plus a weights file."""
    folder.mkdir(parents=True)
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 16, "target_modules": ["qkv_proj", "o_proj"]}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    return folder


@pytest.fixture()
def servers() -> Iterator[list[FakeVllm]]:
    fakes = [FakeVllm().start(), FakeVllm().start()]
    yield fakes
    for fake in fakes:
        fake.stop()


@pytest.fixture()
def registry(tmp_path: Path) -> AdapterRegistry:
    reg = tenant_registry(tmp_path / "adapters", TENANT)
    reg.add(_adapter(tmp_path / "src1"), MANIFEST)  # v0001
    reg.add(_adapter(tmp_path / "src2"), MANIFEST)  # v0002
    return reg


def _chat(servers: list[FakeVllm], adapters: Path, **extra: object) -> OpenAIFleetChat:
    settings = load_settings(
        generator="openai",
        openai_base_url=",".join(s.base_url for s in servers),
        openai_lora="runtime",
        adapters_dir=adapters,
        **extra,
    )
    chat = make_chat_model(settings)
    assert isinstance(chat, OpenAIFleetChat) and chat.fleet is not None
    return chat


def _ask(chat: OpenAIFleetChat) -> str:
    return str(chat.invoke(QUESTION, tenant=TENANT).content)


# --- the fake at the wire ----------------------------------------------------------------------------------------


def test_fake_speaks_vllms_runtime_lora_api(tmp_path: Path) -> None:
    path = str(_adapter(tmp_path / "a"))
    with FakeVllm(max_lora_rank=16) as fake, httpx.Client(base_url=fake.base_url) as http:
        ok = http.post("/load_lora_adapter", json={"lora_name": "a", "lora_path": path})
        assert ok.status_code == 200 and ok.text == "Success: LoRA adapter 'a' added successfully."
        again = http.post("/load_lora_adapter", json={"lora_name": "a", "lora_path": path})
        assert again.status_code == 400
        assert again.json()["error"]["message"].startswith("The lora adapter 'a' has already been loaded.")
        missing = http.post("/load_lora_adapter", json={"lora_name": "b", "lora_path": str(tmp_path / "nowhere")})
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "NotFoundError"
        assert "No adapter found for" in missing.json()["error"]["message"]
        big = http.post("/load_lora_adapter", json={"lora_name": "c", "lora_path": str(_adapter(tmp_path / "c", 64))})
        assert big.status_code == 500 and "greater than max_lora_rank 16" in big.json()["error"]["message"]
        cards = http.get("/models").json()["data"]
        assert [(c["id"], c.get("root"), c.get("parent")) for c in cards][1:] == [("a", path, "phi3-domain")]
        unknown = http.post("/chat/completions", json={"model": "zz", "messages": [{"role": "user", "content": "hi"}]})
        assert unknown.status_code == 404
        assert unknown.json()["error"] == {
            "message": "The model `zz` does not exist.",
            "type": "NotFoundError",
            "param": "model",
            "code": 404,
        }
        gone = http.post("/unload_lora_adapter", json={"lora_name": "a"})
        assert gone.status_code == 200 and gone.text == "Success: LoRA adapter 'a' removed successfully."
        twice = http.post("/unload_lora_adapter", json={"lora_name": "a"})
        assert twice.status_code == 404 and twice.json()["error"]["message"] == "The lora adapter 'a' cannot be found."
        http.post("/load_lora_adapter", json={"lora_name": "a", "lora_path": path})
        fake.restart()
        assert len(http.get("/models").json()["data"]) == 1  # a restarted server has forgotten its adapters
    with FakeVllm(runtime_lora=False) as fixed, httpx.Client(base_url=fixed.base_url) as http:
        off = http.post("/load_lora_adapter", json={"lora_name": "a", "lora_path": path})
        assert off.status_code == 404  # without VLLM_ALLOW_RUNTIME_LORA_UPDATING the route does not exist


def test_fake_streams_server_sent_events_to_chatopenai(servers: list[FakeVllm]) -> None:
    settings = load_settings(generator="openai", openai_base_url=servers[0].base_url)
    chat = make_chat_model(settings)
    assert chat is not None
    pieces = [str(c.content) for c in chat.stream(QUESTION)]
    assert len([p for p in pieces if p]) > 3
    assert "".join(pieces) == str(chat.invoke(QUESTION).content) == "[phi3-domain] You asked: " + QUESTION[0].text


# --- the bot's side ------------------------------------------------------------------------------------------------


def test_promote_loads_before_use_and_rollback_returns(servers: list[FakeVllm], registry: AdapterRegistry) -> None:
    chat = _chat(servers, registry.root.parent)
    assert _ask(chat).startswith("[phi3-domain]")  # no adapter yet: the base model answers
    registry.promote("v0001")
    v1, v2 = adapter_name(TENANT, "v0001"), adapter_name(TENANT, "v0002")
    assert _ask(chat).startswith(f"[{v1}]")
    for fake in servers:  # every server got it, each before any request named it
        assert fake.loras == {v1: str(registry.get("v0001").path)}  # type: ignore[union-attr]
        named = [i for i, call in enumerate(fake.calls) if call == ("chat", v1)]
        assert not named or fake.calls.index(("load", v1)) < named[0]
    registry.promote("v0002")
    assert _ask(chat).startswith(f"[{v2}]")
    assert all(set(fake.loras) == {v2} for fake in servers)  # the superseded one unloaded
    registry.rollback()
    assert _ask(chat).startswith(f"[{v1}]")
    assert all(set(fake.loras) == {v1} for fake in servers)
    _ask(chat)
    assert [sum(f.served.values()) for f in servers] == [3, 2]  # spread over both servers in turn
    status = read_serving_status(registry.root)
    assert {url: s["version"] for url, s in status.items()} == {f.base_url: "v0001" for f in servers}


def test_restarted_server_gets_the_adapter_again_and_the_request_is_retried_once(
    servers: list[FakeVllm], registry: AdapterRegistry
) -> None:
    one = servers[:1]
    chat = _chat(one, registry.root.parent)
    registry.promote("v0001")
    name = adapter_name(TENANT, "v0001")
    assert _ask(chat).startswith(f"[{name}]")
    one[0].restart()
    assert _ask(chat).startswith(f"[{name}]")
    assert [c for c in one[0].calls if c[1] == name] == [
        ("load", name),
        ("chat", name),
        ("chat", name),  # 404: the model does not exist
        ("load", name),
        ("chat", name),
    ]
    one[0].restart()
    stream = "".join(str(c.content) for c in chat.stream(QUESTION, tenant=TENANT))
    assert stream.startswith(f"[{name}]")


def test_refused_adapter_leaves_the_previous_version_with_the_reason_recorded(
    servers: list[FakeVllm], registry: AdapterRegistry, tmp_path: Path
) -> None:
    chat = _chat(servers, registry.root.parent)
    registry.promote("v0001")
    _ask(chat)
    big = registry.add(_adapter(tmp_path / "big", rank=128), MANIFEST)  # above the servers' --max-lora-rank 64
    registry.promote(big.name)
    v1 = adapter_name(TENANT, "v0001")
    assert _ask(chat).startswith(f"[{v1}]") and _ask(chat).startswith(f"[{v1}]")
    status = read_serving_status(registry.root)
    for fake in servers:
        assert status[fake.base_url]["version"] == "v0001"
        refused = status[fake.base_url]["refused"]
        assert refused["version"] == big.name and "greater than max_lora_rank 64" in refused["reason"]
    loads = [c for c in servers[0].calls if c[0] == "load"]
    assert len(loads) == 2  # the refused version is not retried on every request
    shown = refusals(registry.root.parent)  # what `expertbot status` and /status report
    assert [(r["server"], r["version"], r["serving"]) for r in shown] == [
        (f.base_url, big.name, "v0001") for f in servers
    ]
    assert refusals(registry.root.parent, TENANT) == shown and refusals(registry.root.parent, "other") == []
    registry.promote("v0002")  # a good version clears the refusal
    assert _ask(chat).startswith(f"[{adapter_name(TENANT, 'v0002')}]")
    assert read_serving_status(registry.root)[servers[0].base_url]["refused"] is None


def test_refused_first_adapter_leaves_the_base_model(servers: list[FakeVllm], registry: AdapterRegistry) -> None:
    chat = _chat(servers[:1], registry.root.parent)
    servers[0].refuse_paths[str(registry.get("v0001").path)] = "Loading lora failed: bad safetensors"  # type: ignore[union-attr]
    registry.promote("v0001")
    assert _ask(chat).startswith("[phi3-domain]")
    status = read_serving_status(registry.root)[servers[0].base_url]
    assert status["version"] is None and "bad safetensors" in status["refused"]["reason"]


def test_superseded_adapter_waits_for_the_request_using_it(servers: list[FakeVllm], registry: AdapterRegistry) -> None:
    chat = _chat(servers[:1], registry.root.parent)
    registry.promote("v0001")
    v1, v2 = adapter_name(TENANT, "v0001"), adapter_name(TENANT, "v0002")
    stream = chat.stream(QUESTION, tenant=TENANT)
    first = next(stream)
    assert v1 in str(first.content) or str(first.content) == ""
    registry.promote("v0002")
    assert _ask(chat).startswith(f"[{v2}]")
    assert set(servers[0].loras) == {v1, v2}  # v1 still streams an answer
    rest = "".join(str(c.content) for c in stream)
    assert v1 in str(first.content) + rest
    assert set(servers[0].loras) == {v2}


def test_adapter_root_maps_to_the_servers_path(
    servers: list[FakeVllm], registry: AdapterRegistry, tmp_path: Path
) -> None:
    seen_by_server = tmp_path / "mounted"
    seen_by_server.symlink_to(registry.root.parent)  # the same folder under another path, as a shared volume
    chat = _chat(servers[:1], registry.root.parent, openai_adapter_root=str(seen_by_server))
    registry.promote("v0001")
    _ask(chat)
    expected = f"{seen_by_server}/{registry.root.name}/versions/v0001"
    assert servers[0].loras == {adapter_name(TENANT, "v0001"): expected}
