"""The model layer on CPU: a tiny random Phi-3 built locally stands in for the real one (same loading path)."""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, cast

import pytest
import torch
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from agent.models.factory import make_chat_model
from agent.models.openai_backend import make_openai_chat
from agent.models.phi3 import load_phi3
from agent.models.phi3_chat import Phi3Chat, adapter_name
from agent.models.prompting import cut_at_stop, to_chat
from agent.models.registry import AdapterRegistry, tenant_folder, tenant_registry
from agent.models.tiny import build_tiny_adapter, build_tiny_phi3
from agent.settings import ConfigError, load_settings

MESSAGES = [SystemMessage("Answer briefly."), HumanMessage("How do I reset my VPN password? Wie geht das? 密码")]
MANIFEST = {"base_model": "tiny", "data_hash": "abc", "examples": {"train": 3, "eval": 1}, "metrics": {}}
TOKENS = 24


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    base = build_tiny_phi3(root / "base")
    return {
        "base": base,
        "a1": build_tiny_adapter(base, root / "a1", seed=1),
        "a2": build_tiny_adapter(base, root / "a2", seed=2),
        "a3": build_tiny_adapter(base, root / "a3", seed=3),
    }


def _chat(tiny: dict[str, Path], registry: Path | None = None, **kw: Any) -> Phi3Chat:
    return Phi3Chat(model_id=str(tiny["base"]), registry_root=registry, want_4bit=True, max_new_tokens=TOKENS, **kw)


def _greedy(model: Any, tokenizer: Any) -> str:
    """What the model says to MESSAGES, computed without Phi3Chat."""
    prompt = tokenizer.apply_chat_template(to_chat(MESSAGES), tokenize=False, add_generation_prompt=True)
    enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
    eos = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|end|>")]
    out = model.generate(**enc, max_new_tokens=TOKENS, do_sample=False, eos_token_id=eos)
    return str(tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))


# --- loading ------------------------------------------------------------------------------------------------


def test_load_phi3_picks_device_precision_and_applies_adapter(tiny):
    model, tokenizer = load_phi3(str(tiny["base"]), adapter=None, want_4bit=True)
    assert not model.training
    if torch.cuda.is_available():
        assert model.device.type == "cuda" and getattr(model, "is_loaded_in_4bit", False)
    else:  # bitsandbytes imports on CPU, but 4-bit is only for CUDA
        assert model.device.type == "cpu" and model.dtype == torch.float32
        assert not getattr(model, "is_loaded_in_4bit", False)
    plain_full, _ = load_phi3(str(tiny["base"]), adapter=None, want_4bit=False)
    assert not getattr(plain_full, "is_loaded_in_4bit", False)
    assert tokenizer.apply_chat_template(to_chat(MESSAGES), tokenize=False, add_generation_prompt=True).startswith(
        "<|system|>\nAnswer briefly.<|end|>\n<|user|>\n"
    )
    ids = tokenizer("Привет, مرحبا, こんにちは", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == "Привет, مرحبا, こんにちは"  # byte-level: any script round-trips

    tuned, _ = load_phi3(str(tiny["base"]), adapter=tiny["a1"], want_4bit=True)
    assert not tuned.training and not any(p.requires_grad for n, p in tuned.named_parameters() if "lora_" in n)
    enc = tokenizer("The VPN client must be updated", return_tensors="pt").to(model.device)
    with torch.no_grad():
        plain, adapted = model(**enc).logits, tuned(**enc).logits
    assert not torch.allclose(plain, adapted, atol=1e-3)  # the adapter's weights are in the forward pass


# --- Phi3Chat -----------------------------------------------------------------------------------------------


def test_invoke_and_stream_agree(tiny):
    chat = _chat(tiny)
    reply = chat.invoke(MESSAGES)
    assert isinstance(reply, AIMessage) and isinstance(reply.content, str) and reply.content.strip()
    assert reply.usage_metadata is not None and 0 < reply.usage_metadata["output_tokens"] <= TOKENS
    chunks = [c.content for c in chat.stream(MESSAGES)]
    assert len(chunks) >= 3 and "".join(map(str, chunks)) == reply.content
    assert chat.active_adapter is None


def test_stream_abandoned_early_releases_the_model(tiny):
    chat = _chat(tiny)
    stream = cast(Generator[Any, None, None], chat.stream(MESSAGES))
    next(stream)
    stream.close()  # generation is cancelled and the lock released
    assert chat.invoke(MESSAGES).content


def test_concurrent_requests_are_serialised(tiny):
    chat = _chat(tiny)
    expected = chat.invoke(MESSAGES).content
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: chat.invoke(MESSAGES).content, range(4)))
    assert results == [expected] * 4


def test_stop_strings_and_sampling(tiny):
    chat = _chat(tiny)
    full = str(chat.invoke(MESSAGES).content)
    words = full.split()
    stop = next(w for w in words[1:] if full.index(w) > 0)
    cut = full[: full.index(stop)]
    assert chat.invoke(MESSAGES, stop=[stop]).content == cut
    assert "".join(str(c.content) for c in chat.stream(MESSAGES, stop=[stop])) == cut
    torch.manual_seed(0)
    assert isinstance(chat.invoke(MESSAGES, temperature=0.9, max_new_tokens=8).content, str)


def test_cut_at_stop():
    assert cut_at_stop("hello STOP world", ["STOP"]) == ("hello ", "", True)
    assert cut_at_stop("hello ST", ["STOP"], hold_back=True) == ("hello ", "ST", False)
    assert cut_at_stop("hello", None) == ("hello", "", False)
    with pytest.raises(ValueError, match="tool"):
        to_chat([AIMessage("x"), HumanMessage("y"), _tool_message()])


def _tool_message() -> Any:
    from langchain_core.messages import ToolMessage

    return ToolMessage("result", tool_call_id="1")


def test_adapters_hot_swap_and_roll_back(tiny, tmp_path, caplog):
    registry = tenant_registry(tmp_path / "adapters", "local")  # the tenant served when a request names none
    chat = _chat(tiny, tmp_path / "adapters")
    base_text = chat.invoke(MESSAGES).content
    assert chat.active_adapter is None

    v1 = registry.add(tiny["a1"], MANIFEST)
    assert chat.invoke(MESSAGES).content == base_text  # added is not served until promoted
    registry.promote(v1.name)
    v1_text = chat.invoke(MESSAGES).content
    assert chat.active_adapter == "v0001" and v1_text != base_text
    model, tokenizer = load_phi3(str(tiny["base"]), adapter=tiny["a1"], want_4bit=True)
    assert _greedy(model, tokenizer) == v1_text  # exactly the text the adapter's weights produce

    v2 = registry.add(tiny["a2"], {**MANIFEST, "metrics": {"exact": 0.5}})
    assert v2.name == "v0002" and v2.manifest["parent"] == "v0001"
    registry.promote(v2.name)
    v2_text = "".join(str(c.content) for c in chat.stream(MESSAGES))  # the same Phi3Chat, no rebuild
    assert chat.active_adapter == "v0002" and v2_text not in (base_text, v1_text)

    broken = registry.add(tiny["a2"], MANIFEST)
    (broken.path / "adapter_model.safetensors").write_bytes(b"not a tensor file")
    registry.promote(broken.name)
    with caplog.at_level(logging.ERROR):
        assert chat.invoke(MESSAGES).content == v2_text  # the failed version is logged, the previous one kept
    assert chat.active_adapter == "v0002" and "v0003 of local failed to load" in caplog.text
    assert list(chat._model.peft_config) == [
        adapter_name("local", "v0002")
    ]  # neither the old nor the broken adapter stays in memory

    assert registry.rollback() == v2
    assert chat.invoke(MESSAGES).content == v2_text
    assert registry.rollback() == v1
    assert chat.invoke(MESSAGES).content == v1_text and chat.active_adapter == "v0001"
    assert registry.rollback() is None
    assert chat.invoke(MESSAGES).content == base_text and chat.active_adapter is None
    with pytest.raises(LookupError):
        registry.rollback()


def test_failed_first_adapter_leaves_base_model_untouched(tiny, tmp_path):
    registry = tenant_registry(tmp_path / "adapters", "local")
    chat = _chat(tiny, tmp_path / "adapters")
    base_text = chat.invoke(MESSAGES).content
    broken = registry.add(tiny["a1"], MANIFEST)
    (broken.path / "adapter_model.safetensors").write_bytes(b"not a tensor file")
    registry.promote(broken.name)
    assert chat.invoke(MESSAGES).content == base_text and chat.active_adapter is None


def _served_weights(chat: Phi3Chat, tenant: str, version: str) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return cast(
        dict[str, torch.Tensor], get_peft_model_state_dict(chat._model, adapter_name=adapter_name(tenant, version))
    )


def _same_weights(served: dict[str, torch.Tensor], folder: Path) -> bool:
    from safetensors.torch import load_file

    saved = load_file(str(folder / "adapter_model.safetensors"))
    return bool(saved) and saved.keys() == served.keys() and all(torch.equal(saved[k], served[k]) for k in saved)


def test_each_tenant_gets_its_own_adapter_and_promotions_swap_only_theirs(tiny, tmp_path):
    root = tmp_path / "adapters"
    alpha, beta, gamma = "T01.alpha", "T02/beta", "T03"  # a dot and a slash: folder and peft names stay valid
    ra, rb = tenant_registry(root, alpha), tenant_registry(root, beta)
    ra.promote(ra.add(tiny["a1"], MANIFEST).name)
    rb.promote(rb.add(tiny["a2"], MANIFEST).name)
    expected = {}
    for key, adapter in (("base", None), ("a1", tiny["a1"]), ("a2", tiny["a2"]), ("a3", tiny["a3"])):
        expected[key] = _greedy(*load_phi3(str(tiny["base"]), adapter=adapter, want_4bit=True))
    assert len(set(expected.values())) == 4

    chat = _chat(tiny, root, max_tenant_adapters=2)

    def ask(tenant: str, stream: bool = False) -> tuple[str, Any]:
        if stream:
            return "".join(str(c.content) for c in chat.stream(MESSAGES, tenant=tenant)), chat.active_adapter
        reply = chat.invoke(MESSAGES, tenant=tenant)
        assert reply.response_metadata["tenant"] == tenant
        return str(reply.content), reply.response_metadata["adapter"]

    assert ask(gamma) == (expected["base"], None)  # no adapter of its own: the base model, never another's
    assert ask(alpha) == (expected["a1"], "v0001")
    assert ask(beta, stream=True) == (expected["a2"], "v0001")
    assert ask(alpha) == (expected["a1"], "v0001")  # switching back and forth: each request its own adapter
    assert _same_weights(_served_weights(chat, alpha, "v0001"), tiny["a1"])
    assert _same_weights(_served_weights(chat, beta, "v0001"), tiny["a2"])

    ra.promote(ra.add(tiny["a3"], MANIFEST).name)  # a new version for alpha hot-swaps alpha only
    assert ask(beta) == (expected["a2"], "v0001")
    assert ask(alpha, stream=True) == (expected["a3"], "v0002")
    assert set(chat._model.peft_config) == {adapter_name(alpha, "v0002"), adapter_name(beta, "v0001")}
    assert _same_weights(_served_weights(chat, alpha, "v0002"), tiny["a3"])
    assert ask(gamma) == (expected["base"], None)  # adapters disabled for it, though two are loaded

    # Bounded: serving gamma pushed beta (least recently served of two) out of memory; it comes back on demand.
    assert chat.loaded_adapters() == {alpha: "v0002", gamma: None}
    assert list(chat._model.peft_config) == [adapter_name(alpha, "v0002")]
    assert ask(beta) == (expected["a2"], "v0001")
    rb.rollback()  # beta back to the base model; alpha untouched
    assert ask(beta) == (expected["base"], None) and ask(alpha) == (expected["a3"], "v0002")
    assert chat.invoke(MESSAGES).response_metadata == {"adapter": None, "tenant": "local"}


# --- registry -----------------------------------------------------------------------------------------------


def test_registry_ignores_incomplete_versions(tiny, tmp_path):
    registry = AdapterRegistry(tmp_path)
    assert registry.versions() == [] and registry.current() is None and registry.pointer() == ""
    half = tmp_path / "versions" / "v0001"
    half.mkdir(parents=True)
    shutil.copy(tiny["a1"] / "adapter_config.json", half)  # no weights, no manifest: a crashed copy
    (tmp_path / "versions" / "v0007").mkdir()
    (tmp_path / "versions" / "v0007" / "manifest.json").write_text(json.dumps(MANIFEST))
    assert registry.versions() == [] and registry.get("v0001") is None
    with pytest.raises(KeyError):
        registry.promote("v0001")

    added = registry.add(tiny["a1"], MANIFEST)
    assert added.name == "v0008"  # never reuses a name, even of an incomplete folder
    assert [v.name for v in registry.versions()] == ["v0008"]
    assert added.manifest["parent"] is None and added.manifest["created_at"] > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".incoming")]
    with pytest.raises(ValueError, match="data_hash"):
        registry.add(tiny["a1"], {"base_model": "tiny"})
    with pytest.raises(FileNotFoundError):
        registry.add(tmp_path / "versions", MANIFEST)

    registry.promote(added.name)
    assert registry.pointer() == "v0008" and registry.current() == added
    assert (tmp_path / "HISTORY").read_text().count("\tpromote\tv0008") == 1


def test_tenant_folders_are_safe_readable_and_distinct(tmp_path):
    ids = ["T01", "a/b", "a:b", "a_b", "..", "../../etc", "équipe", "x" * 300]
    folders = [tenant_folder(t) for t in ids]
    assert len(set(folders)) == len(ids) and folders[0].startswith("T01-")
    assert all("/" not in f and "." not in f and len(f) < 80 for f in folders)
    assert tenant_registry(tmp_path, "../../etc").root.parent == tmp_path


# --- OpenAI-compatible server -------------------------------------------------------------------------------


class _FakeOpenAI(BaseHTTPRequestHandler):
    requests: ClassVar[list[dict[str, Any]]] = []
    words: ClassVar[list[str]] = ["Reset ", "it ", "in ", "Settings."]

    def do_POST(self) -> None:
        body: dict[str, Any] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
        if self.path != "/v1/chat/completions":
            self.send_error(404)
            return
        base = {"id": "c1", "created": 0, "model": body["model"]}
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(self.words)}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            usage = {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
            payload = json.dumps({**base, "object": "chat.completion", "choices": [choice], "usage": usage})
            self._send(200, "application/json", payload.encode())
            return
        events: list[dict[str, Any]] = [
            {"index": 0, "delta": {"role": "assistant", "content": w}, "finish_reason": None} for w in self.words
        ]
        events.append({"index": 0, "delta": {}, "finish_reason": "stop"})
        lines = [f"data: {json.dumps({**base, 'object': 'chat.completion.chunk', 'choices': [e]})}\n\n" for e in events]
        self._send(200, "text/event-stream", ("".join(lines) + "data: [DONE]\n\n").encode())

    def _send(self, status: int, content_type: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def fake_openai() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FakeOpenAI.requests.clear()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_openai_backend_talks_to_a_compatible_server(fake_openai):
    settings = load_settings(generator="openai", openai_base_url=fake_openai, openai_api_key=None, max_new_tokens=64)
    chat = make_openai_chat(settings)
    assert chat.invoke(MESSAGES).content == "Reset it in Settings."
    assert [c.content for c in chat.stream(MESSAGES) if c.content] == _FakeOpenAI.words
    first = _FakeOpenAI.requests[0]
    assert first["model"] == "phi3-domain" and first["auth"] == "Bearer not-needed"
    assert first.get("max_completion_tokens", first.get("max_tokens")) == 64
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assert _FakeOpenAI.requests[1]["stream"] is True


def test_openai_backend_needs_a_base_url():
    settings = load_settings(generator="openai", openai_base_url=None)
    with pytest.raises(ConfigError, match="EXPERTBOT_OPENAI_BASE_URL"):
        make_openai_chat(settings)
    with pytest.raises(ConfigError, match="EXPERTBOT_OPENAI_BASE_URL"):
        make_chat_model(settings)


def test_factory(tiny, fake_openai, tmp_path):
    assert make_chat_model(load_settings(generator="extractive")) is None
    phi3 = make_chat_model(
        load_settings(generator="phi3", phi3_model=str(tiny["base"]), data_dir=tmp_path, max_new_tokens=16)
    )
    assert isinstance(phi3, Phi3Chat) and phi3.registry_root == tmp_path / "adapters"
    assert phi3.max_new_tokens == 16 and phi3.want_4bit is True
    assert phi3._model is None  # nothing loaded until the first request
    openai = make_chat_model(load_settings(generator="openai", openai_base_url=fake_openai))
    assert openai is not None and openai.invoke("hi").content == "Reset it in Settings."
