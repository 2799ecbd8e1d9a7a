"""`adapters add` / `adapters list` logic: a real peft adapter of the tiny Phi-3 is accepted, broken or foreign
ones are refused with the reason, and the listing shows per vLLM-speaking server which version is loaded."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

from agent.models.adapter_import import AdapterRejected, add_adapter, check_adapter, list_adapters
from agent.models.factory import make_chat_model
from agent.models.tiny import build_tiny_adapter, build_tiny_phi3
from agent.settings import load_settings
from bot.bench.fakes.vllm import FakeVllm

BASE = "microsoft/Phi-3-mini-4k-instruct"


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("import")
    return build_tiny_adapter(build_tiny_phi3(root / "base"), root / "lora")


def _variant(adapter: Path, tmp_path: Path, **config: object) -> Path:
    out = tmp_path / "variant"
    shutil.copytree(adapter, out)
    data = json.loads((out / "adapter_config.json").read_text())
    data.update(config)
    (out / "adapter_config.json").write_text(json.dumps(data))
    return out


def test_a_tiny_phi3_lora_is_accepted_with_a_base_model_warning(adapter: Path, tmp_path: Path) -> None:
    check = check_adapter(adapter, base_model=BASE, max_rank=64)
    assert check.rank == 8 and sorted(check.targets) == ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]
    assert len(check.warnings) == 1 and BASE in check.warnings[0]  # trained on the tiny model's folder
    result = add_adapter(tmp_path / "adapters", adapter, tenant="T1", base_model=BASE, max_rank=64, promote=True)
    assert result["version"] == "v0001" and result["current"] == "v0001" and result["promoted"]
    again = add_adapter(tmp_path / "adapters", adapter, tenant="T1", base_model=BASE, max_rank=64)
    assert again["version"] == "v0002" and again["current"] == "v0001"
    listing = list_adapters(tmp_path / "adapters", tenant="T1")
    (entry,) = listing["tenants"]
    assert entry["current"] == "v0001" and [v["version"] for v in entry["versions"]] == ["v0001", "v0002"]
    assert entry["versions"][1]["parent"] == "v0001" and entry["versions"][0]["imported_from"] == str(adapter)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"peft_type": "PREFIX_TUNING"}, "not a LoRA adapter"),
        ({"target_modules": ["q_proj", "v_proj", "o_proj"]}, "Phi-3 does not have: q_proj, v_proj"),
        ({"target_modules": r".*\.attn\.c_attn"}, "matches none of Phi-3's modules"),
        ({"r": 128}, "LoRA rank 128 exceeds EXPERTBOT_MAX_LORA_RANK=64"),
        ({"r": 8, "rank_pattern": {"qkv_proj": 96}}, "LoRA rank 96 exceeds"),
    ],
)
def test_foreign_or_oversized_adapters_are_refused(
    adapter: Path, tmp_path: Path, change: dict[str, object], reason: str
) -> None:
    with pytest.raises(AdapterRejected, match=re.escape(reason)):
        add_adapter(
            tmp_path / "adapters", _variant(adapter, tmp_path, **change), tenant="T", base_model=BASE, max_rank=64
        )
    assert not (tmp_path / "adapters").exists() or not list((tmp_path / "adapters").rglob("manifest.json"))


def test_not_an_adapter_or_broken_weights(adapter: Path, tmp_path: Path) -> None:
    with pytest.raises(AdapterRejected, match=r"no adapter_config\.json"):
        check_adapter(tmp_path, base_model=BASE, max_rank=64)
    broken = _variant(adapter, tmp_path)
    (broken / "adapter_model.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(AdapterRejected, match="unreadable"):
        check_adapter(broken, base_model=BASE, max_rank=64)
    (broken / "adapter_model.safetensors").unlink()
    with pytest.raises(AdapterRejected, match=r"no adapter_model\.safetensors"):
        check_adapter(broken, base_model=BASE, max_rank=64)


def test_list_shows_per_server_which_version_is_loaded(adapter: Path, tmp_path: Path) -> None:
    root = tmp_path / "adapters"
    add_adapter(root, adapter, tenant="T1", base_model=BASE, max_rank=64, promote=True)
    with FakeVllm() as one, FakeVllm() as two:
        settings = load_settings(
            generator="openai",
            openai_base_url=f"{one.base_url},{two.base_url}",
            openai_lora="runtime",
            adapters_dir=root,
        )
        chat = make_chat_model(settings)
        assert chat is not None
        chat.invoke([HumanMessage("hello")], tenant="T1")
        two.restart()
        (entry,) = list_adapters(root, servers=settings.openai_base_urls)["tenants"]
        assert entry["servers"] == {
            one.base_url: {"loaded": ["v0001"], "refused": None},
            two.base_url: {"loaded": [], "refused": None},
        }
    (down,) = list_adapters(root, servers=[one.base_url])["tenants"]
    assert down["servers"][one.base_url]["loaded"] is None and "ConnectError" in down["servers"][one.base_url]["error"]


def test_the_adapters_commands_add_refuse_and_list(adapter: Path, tmp_path: Path, monkeypatch) -> None:
    """`expertbot adapters add` and `adapters list` as an operator runs them (the CLI glue over the logic)."""
    from typer.testing import CliRunner

    from agent.settings import get_settings
    from bot.cli.app import app

    monkeypatch.setenv("EXPERTBOT_ADAPTERS_DIR", str(tmp_path / "adapters"))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        added = runner.invoke(app, ["adapters", "add", str(adapter), "--tenant", "T9", "--promote", "--json"])
        assert added.exit_code == 0, added.output
        assert json.loads(added.stdout)["version"] == "v0001"
        refused = runner.invoke(
            app, ["adapters", "add", str(_variant(adapter, tmp_path, r=128)), "--tenant", "T9", "--json"]
        )
        assert refused.exit_code == 1 and "exceeds" in json.loads(refused.stdout)["reason"]
        listed = json.loads(runner.invoke(app, ["adapters", "list", "--tenant", "T9", "--json"]).stdout)
        assert listed["serving"] == "v0001" and [v["version"] for v in listed["versions"]] == ["v0001"]
    finally:
        get_settings.cache_clear()
