"""The domain fine-tuning loop on CPU with the tiny Phi-3: real Redis, Milvus Lite, Celery train workers and beat.

A tiny model learns a small synthetic glossary in a few dozen steps; the gate then has to tell a candidate that
knows it from one trained on shuffled (wrong) definitions. Each tenant has its own adapter registry: a version
trained on one tenant's material is neither served to another nor the reference another's gate compares with.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import redis
import torch
import yaml
from typer.testing import CliRunner

from agent import keys
from agent.chat import ChatCore
from agent.learning import CuratedItem, LearningStore
from agent.models.phi3_chat import Phi3Chat, adapter_name
from agent.models.registry import MANIFEST_KEYS, tenant_registry
from agent.models.tiny import build_tiny_adapter, build_tiny_phi3
from agent.settings import Settings, get_settings, load_settings
from agent.types import TENANT_WIDE, Audience, ChatRequest
from bot.bench.speed import temporary_environ
from bot.cli.app import app as cli_app
from workers.client import job_status, submit_ingest, submit_training, wait_for_job
from workers.names import TRAIN_NIGHTLY, TRAIN_QUEUE
from workers.training.data import build_dataset
from workers.training.pipeline import (
    _HeldLock,
    judge_and_register,
    run_training,
    tenant_dir,
    train_candidate,
    trainer_and_gate,
)
from workers.training.pipeline import tenant_documents as read_tenant_documents

pytestmark = pytest.mark.timeout(240)

GLOSSARY = [
    ("vesting cliff", "the first year before any shares vest"),
    ("burn rate", "monthly cash spent beyond income"),
    ("runway", "months of cash left at the current burn rate"),
    ("churn", "customers who cancel in a month"),
    ("ARR", "annual recurring revenue from subscriptions"),
    ("SLA", "the uptime promised to customers in the contract"),
    ("on-call", "the engineer who answers alerts at night"),
    ("postmortem", "a blameless report written after an outage"),
    ("canary", "a release sent to one percent of servers first"),
    ("OKR", "a quarterly goal with measurable key results"),
    ("SKU", "a stock keeping unit code for one product variant"),
    ("RFC", "a design proposal circulated for comments"),
    ("backlog", "the ordered list of work not yet started"),
    ("sprint", "a two week period of planned work"),
    ("standup", "a short daily meeting of the team"),
]
TRAINER = {
    "max_steps": 60,
    "batch_size": 1,  # one packed row of up to 256 tokens: about 6 glossary examples a step
    "grad_accum": 1,
    "learning_rate": 0.01,
    "warmup_steps": 5,
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.0,
    "max_seq_len": 256,
    "checkpoint_every": 10,
    "continue_from_current": False,
}
GATE = {"min_gain": 0.1, "min_domain_gain": 0.05, "max_forgetting": 0.1, "containment_probes": 2}
runner = CliRunner()
WIDE = {"COLUMNS": "400"}


def _tenant(name: str) -> str:
    return f"{name}-{uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def train_settings(services: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The session's services plus a tiny base model, a quick training config and this module's registry."""
    root = tmp_path_factory.mktemp("training")
    config = root / "train.yaml"
    config.write_text(yaml.safe_dump({"trainer": TRAINER, "gate": GATE}))
    env = {
        "EXPERTBOT_PHI3_MODEL": str(build_tiny_phi3(root / "base")),
        "EXPERTBOT_TRAIN_CONFIG": str(config),
        "EXPERTBOT_ADAPTERS_DIR": str(root / "adapters"),
        "EXPERTBOT_TRAIN_LOCK_TTL_S": "3",
        "EXPERTBOT_TRAIN_AT": "03:15",
    }
    with temporary_environ(env):  # read by the worker processes started below and by the CLI's settings
        get_settings.cache_clear()
        try:
            yield load_settings()
        finally:
            get_settings.cache_clear()


@pytest.fixture(scope="module")
def train_worker(train_settings: Settings) -> Iterator[dict[str, Any]]:
    """The train worker (queue `train`, concurrency 1); a test may kill it and put its successor in ["proc"]."""
    from bot.localstack import start_worker

    holder = {"proc": start_worker(train_settings, [TRAIN_QUEUE], 1, f"train-{uuid4().hex[:6]}")}
    try:
        yield holder
    finally:
        holder["proc"].stop()


def _teach(client: redis.Redis[bytes], tenant: str, pairs: list[tuple[str, str]], scope: str = TENANT_WIDE) -> None:
    store = LearningStore(client)
    for i, (term, definition) in enumerate(pairs):
        store.add_curated(CuratedItem("term", term, definition, tenant, scope, "file:test.csv", at=1000.0 + i))


def _redis(settings: Settings) -> redis.Redis[bytes]:
    return redis.Redis.from_url(settings.effective_redis_url)


def _png_size_and_colours(path: Path) -> tuple[int, int, int]:
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        rgb = image.convert("RGB")
        return rgb.width, rgb.height, len(set(rgb.getdata()))


# --- training data ---------------------------------------------------------------------------------------------


def test_private_scope_content_never_enters_the_training_set(train_settings, worker):
    tenant, client = _tenant("privacy"), _redis(train_settings)
    store = LearningStore(client)
    _teach(client, tenant, [("grommet", "a ring that protects a cable passing through a hole")])
    _teach(client, tenant, [("nightjar", "PRIVATE-TERM-41 the code name of the merger")], scope="C-board")
    wide = store.remember_answer(Audience(tenant, TENANT_WIDE), "Who ships on Fridays?", "The Grommet team.", "domain")
    dm = store.remember_answer(Audience(tenant, "D-ceo"), "What is my salary?", "PRIVATE-ANSWER-99", "domain")
    store.vote(wide, "U1", True)
    store.vote(dm, "U1", True)

    before = store.changed_at(tenant)
    handbook = b"# Handbook\n\nThe Grommet team ships every Friday after the standup."
    merger = b"# Merger\n\nPRIVATE-DOC-777: the board meets the buyer on Monday."
    jobs = [
        submit_ingest(train_settings, Audience(tenant, "C-board"), merger, "merger.md"),
        submit_ingest(train_settings, Audience(tenant, TENANT_WIDE), handbook, "handbook.md"),
    ]
    assert all(wait_for_job(j, 120).result["status"] == "ready" for j in jobs)
    assert store.changed_at(tenant) > before  # a tenant-wide document is new training data

    documents = read_tenant_documents(train_settings, tenant)
    assert [doc for doc, _ in documents] == ["handbook.md"]
    dataset = build_dataset(store, tenant, documents)
    folder = dataset.write(tenant_dir(train_settings, tenant) / "data").parent
    written = (folder / "train.jsonl").read_text() + (folder / "eval.json").read_text()
    for secret in ("PRIVATE-TERM-41", "nightjar", "PRIVATE-ANSWER-99", "salary", "PRIVATE-DOC-777"):
        assert secret not in written
    sources = {json.loads(line)["source"] for line in (folder / "train.jsonl").read_text().splitlines()}
    assert "file:test.csv (term)" in sources and f"helpful answer {wide}" in sources
    assert any("handbook.md" in s for s in sources) or dataset.counts["heldout_passages"] == 1
    assert "a ring that protects a cable" in written and "The Grommet team." in written
    assert dataset.counts["curated"] == 1 and dataset.counts["helpful"] == 1


# --- promote, serve without restart, reject --------------------------------------------------------------------


def test_glossary_adapter_is_promoted_served_without_restart_and_a_shuffled_one_rejected(
    train_settings, train_worker, knowledge, tmp_path
):
    tenant = _tenant("acme")
    glossary = tmp_path / "glossary.csv"
    with glossary.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["term", "definition"])
        writer.writerows(GLOSSARY)
        writer.writerow(["orphan", ""])  # a bad row is reported, the others kept
    taught = runner.invoke(cli_app, ["teach", "--file", str(glossary), "--tenant", tenant], env=WIDE)
    assert taught.exit_code == 0, taught.output
    assert "taught 15 item(s) (15 new" in taught.stdout and "line 17" in taught.output

    registry = tenant_registry(train_settings.adapter_registry, tenant)
    llm = Phi3Chat(model_id=train_settings.phi3_model, registry_root=train_settings.adapter_registry, max_new_tokens=16)
    core = ChatCore(knowledge, llm=llm)  # running before any adapter exists; never rebuilt below

    def ask() -> str:
        audience = Audience(tenant, TENANT_WIDE)  # a new thread each time: no history changes the prompt
        request = ChatRequest("What does runway mean?", audience, thread=uuid4().hex, forced_route="domain")
        reply = core.answer(request)
        assert reply.route == "domain"
        return reply.text

    base_text = ask()
    assert llm.active_adapter is None

    result = runner.invoke(cli_app, ["train", "--now", "--tenant", tenant, "--json"], env=WIDE)
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert outcome["status"] == "promoted", outcome
    assert outcome["against"] == "the base model" and "knows the domain better" in outcome["reason"]
    assert "training (loss" in result.output  # progress was shown
    cand, ref = outcome["metrics"]["candidate"], outcome["metrics"]["reference"]
    assert cand["choice_accuracy"] >= ref["choice_accuracy"] + GATE["min_gain"]
    v1 = registry.current()
    assert v1 is not None and v1.name == outcome["version"]

    tuned_text = ask()  # the same chat core, the same Phi3Chat: the pointer check swapped the adapter in
    assert llm.active_adapter == v1.name and tuned_text != base_text
    _assert_serves_weights_of(llm, tenant, v1)
    assert all(k in v1.manifest for k in MANIFEST_KEYS) and v1.manifest["tenant"] == tenant
    assert v1.manifest["examples"]["curated"] == 15 and v1.manifest["gate"]["promoted"] is True
    report = json.loads((v1.path / "report.json").read_text())
    assert len(report["losses"]) == TRAINER["max_steps"] and report["last_loss"] < report["first_loss"] / 2
    width, height, colours = _png_size_and_colours(v1.path / "loss.png")
    assert (width, height) == (640, 360) and colours >= 4  # background, grid, axes, curves

    # A candidate trained on shuffled definitions: the gate compares it with v0001 on the true glossary.
    trainer, gate = trainer_and_gate(train_settings)
    dataset = build_dataset(LearningStore(_redis(train_settings)), tenant, [])
    definitions = [d for _, d in GLOSSARY]
    wrong = dict(zip((t for t, _ in GLOSSARY), definitions[1:] + definitions[:1], strict=True))
    shuffled = [
        e.__class__(e.kind, e.source, e.prompt, wrong[_term(e.prompt)], "") if e.is_chat else e for e in dataset.train
    ]
    shuffled = [
        e.__class__("document", e.source, text=f"{t}: {wrong[t]}")
        if not e.is_chat and (t := e.text.split(":")[0]) in wrong
        else e
        for e in shuffled
    ]
    bad = dataset.with_train(shuffled)
    candidate = train_candidate(train_settings, bad, tenant_dir(train_settings, tenant), trainer)
    rejected = judge_and_register(train_settings, dataset, candidate, gate)
    assert rejected.status == "rejected" and f"does not beat {v1.name}" in rejected.reason, rejected
    assert registry.pointer() == v1.name
    assert ask() == tuned_text and llm.active_adapter == v1.name

    # Another tenant's run: its gate compares with the base model (not v1), and its version stays in its registry.
    other = _tenant("other")
    theirs = judge_and_register(train_settings, dataclasses.replace(dataset, tenant=other), candidate, gate)
    assert theirs.against == "the base model" and theirs.version == "v0001"
    assert [v.name for v in tenant_registry(train_settings.adapter_registry, other).versions()] == ["v0001"]
    assert [v.name for v in registry.versions()] == [v1.name, rejected.version] and registry.pointer() == v1.name

    T = ["--tenant", tenant]
    listed = runner.invoke(cli_app, ["adapters", "list", "--json", *T], env=WIDE)
    rows = json.loads(listed.stdout)
    assert rows["serving"] == v1.name and rows["tenant"] == tenant
    assert [(r["version"], r["gate"]) for r in rows["versions"]] == [
        (v1.name, "promoted"),
        (rejected.version, "rejected"),
    ]
    table = runner.invoke(cli_app, ["adapters", "list", *T], env=WIDE)
    assert "does not beat" in table.stdout and f"serving {tenant}: {v1.name}" in table.stdout
    default = json.loads(runner.invoke(cli_app, ["adapters", "list", "--json"], env=WIDE).stdout)
    assert default == {"tenant": train_settings.default_tenant, "serving": None, "versions": []}

    assert runner.invoke(cli_app, ["adapters", "promote", str(rejected.version), *T]).exit_code == 0
    ask()
    assert llm.active_adapter == rejected.version  # an operator's override serves from the next request on
    _assert_serves_weights_of(llm, tenant, registry.get(str(rejected.version)))
    assert "rolled back: v0001 now serves" in runner.invoke(cli_app, ["adapters", "rollback", *T]).stdout
    assert ask() == tuned_text and llm.active_adapter == v1.name
    assert runner.invoke(cli_app, ["adapters", "promote", "v9999", *T]).exit_code == 1
    assert runner.invoke(cli_app, ["adapters", "rollback"]).exit_code == 1  # the default tenant has nothing


def _term(prompt: str) -> str:
    for term, _ in GLOSSARY:
        if term in prompt:
            return term
    raise AssertionError(prompt)


def _assert_serves_weights_of(llm: Phi3Chat, tenant: str, version: Any) -> None:
    """The model in memory holds exactly the LoRA weights saved in the version's folder, and no other adapter."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    name = adapter_name(tenant, version.name)
    assert version is not None and list(llm._model.peft_config) == [name]
    saved = load_file(str(version.path / "adapter_model.safetensors"))
    served = get_peft_model_state_dict(llm._model, adapter_name=name)
    assert saved.keys() == served.keys() and saved
    assert all(torch.equal(saved[k], served[k].cpu()) for k in saved)


# --- scheduling, lock -------------------------------------------------------------------------------------------


def test_two_trainings_never_overlap(train_settings):
    tenant = _tenant("locked")  # no data needed: the lock is taken before the data is read
    other = _HeldLock(_redis(train_settings), train_settings.train_lock_ttl_s)
    assert other.acquire(wait_s=1)
    try:
        began = time.monotonic()
        outcome = run_training(train_settings, tenant, force=True)
        assert time.monotonic() - began > train_settings.train_lock_ttl_s  # outlived the TTL: it was renewed
        assert outcome.status == "busy" and "another training is running" in outcome.reason
        assert not other.lost.is_set()
    finally:
        other.release()
    assert _redis(train_settings).get(keys.TRAIN_LOCK) is None


def test_nightly_schedule_is_registered_and_its_task_runs_through_a_real_worker(train_settings, train_worker):
    from bot.localstack.services import start_beat
    from workers.celery_app import app

    entry = app.conf.beat_schedule["nightly-training"]
    assert entry["task"] == TRAIN_NIGHTLY and entry["options"]["queue"] == TRAIN_QUEUE
    from workers.celery_app import nightly_schedule

    schedule = nightly_schedule(train_settings.train_at)["nightly-training"]["schedule"]
    assert schedule.hour == {3} and schedule.minute == {15}

    beat = start_beat(train_settings)
    try:
        # Beat logs its schedule a moment after "beat: Starting" (what start_beat waits for): give it time.
        deadline = time.monotonic() + 30
        while "expertbot.train_nightly" not in (log := beat.log_tail(200)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert beat.alive() and list(train_settings.data_dir.glob("celerybeat-schedule*")), log
        assert "nightly-training" in log and "expertbot.train_nightly" in log, log
    finally:
        beat.stop()

    fresh, client = _tenant("nightly"), _redis(train_settings)
    _teach(client, fresh, GLOSSARY[:6])
    queued = _nightly(app, keep=fresh)
    assert fresh in queued
    final = wait_for_job(queued[fresh], timeout_s=180)
    assert final.state == "done" and final.result["status"] in ("promoted", "rejected"), final
    again = wait_for_job(submit_training(fresh), timeout_s=60)  # nothing new since: skipped at once
    assert again.result == {**again.result, "status": "skipped", "reason": "no new training data since the last run"}
    assert fresh not in _nightly(app, keep=fresh)


def _nightly(app: Any, keep: str) -> dict[str, str]:
    """Run the nightly dispatch on the train worker; revoke the jobs of other tests' tenants (not our business)."""
    queued: dict[str, str] = app.send_task(TRAIN_NIGHTLY, queue=TRAIN_QUEUE).get(timeout=60)["queued"]
    for tenant, job in queued.items():
        if tenant != keep:
            app.control.revoke(job)
    return queued


# --- a training killed midway ------------------------------------------------------------------------------------


def test_a_training_killed_midway_keeps_the_current_adapter_and_resumes(train_settings, train_worker):
    from bot.localstack import start_worker

    tenant = _tenant("killed")
    registry = tenant_registry(train_settings.adapter_registry, tenant)
    serving = build_tiny_adapter(Path(train_settings.phi3_model), train_settings.data_dir / f"{tenant}-a", seed=5)
    manifest = {"base_model": train_settings.phi3_model, "data_hash": "-", "examples": {}, "metrics": {}}
    registry.promote(registry.add(serving, manifest).name)
    _teach(_redis(train_settings), tenant, list(reversed(GLOSSARY)))
    job = submit_training(tenant, force=True)
    deadline = time.monotonic() + 180
    while not ((status := job_status(job)).stage.startswith("training") and status.done >= 25):
        assert time.monotonic() < deadline and not status.finished, status
        time.sleep(0.05)
    os.killpg(train_worker["proc"].pid, signal.SIGKILL)
    train_worker["proc"].stop()
    checkpoints = tenant_dir(train_settings, tenant) / "checkpoints"
    assert (checkpoints / "LATEST").read_text().startswith("step-0000")

    chat = Phi3Chat(model_id=train_settings.phi3_model, registry_root=train_settings.adapter_registry, max_new_tokens=4)
    chat.invoke([("user", "hi")], tenant=tenant)
    assert [v.name for v in registry.versions()] == ["v0001"]  # nothing half-trained was added
    assert chat.active_adapter == registry.pointer() == "v0001"  # the current adapter keeps serving

    train_worker["proc"] = start_worker(train_settings, [TRAIN_QUEUE], 1, f"train-{uuid4().hex[:6]}")
    final = wait_for_job(job, timeout_s=180)
    assert final.state == "done", final
    resumed = final.result["training"]["resumed_from_step"]
    assert resumed >= 20 and resumed % TRAINER["checkpoint_every"] == 0, final.result
    assert final.result["status"] in ("promoted", "rejected")
    assert final.result["against"] == "v0001"  # the gate compared with this tenant's own current adapter
    version = registry.get(final.result["version"])
    assert version is not None and len(json.loads((version.path / "report.json").read_text())["losses"]) == 60
    assert not checkpoints.exists()  # a finished run leaves no checkpoint to resume from


# --- benchmark ----------------------------------------------------------------------------------------------------


def test_bench_train_tiny_runs_the_product_trainer_and_the_plain_loop_and_says_qlora_needs_cuda():
    from workers.training.bench import bench_train

    report = bench_train("tiny", steps=2, batch=2, seq=64, product_steps=2, mix_scale=0.1)
    assert [(r["trainer"], r["method"]) for r in report["runs"]] == [
        ("product (trl SFTTrainer)", "lora-fp32-cpu"),
        ("plain peft loop", "lora-fp32-cpu"),
    ]
    assert all(r["tokens_per_s"] > 0 and r["peak_mem_gb"] > 0 for r in report["runs"])
    product = report["runs"][0]
    assert product["padding_efficiency"] >= 0.9 and "padding-free" in product["shape"]
    assert "QLoRA" in report["note"] and "CUDA" in report["note"]
    bad = runner.invoke(cli_app, ["bench", "train", "--size", "huge"])
    assert bad.exit_code == 2 and "mini or tiny" in bad.output


# --- small pieces --------------------------------------------------------------------------------------------------


def test_teach_file_accepts_csv_and_jsonl_and_reports_bad_rows_without_losing_good_ones():
    from agent.teach_file import read_teach_file

    jsonl = "\n".join(
        [
            json.dumps({"term": "runway", "definition": "months of cash left"}),
            json.dumps({"question": "Who approves travel?", "answer": "Your team lead."}),
            json.dumps({"kind": "style", "prompt": "Say hello", "text": "Hi there, team!"}),
            "{not json",
            json.dumps({"kind": "poem", "prompt": "x", "text": "y"}),
            json.dumps(["a", "list"]),
            json.dumps({"term": "x" * 201, "definition": "too long a term"}),
        ]
    ).encode()
    parsed = read_teach_file(jsonl, "glossary.jsonl", "acme")
    assert [(i.kind, i.prompt) for i in parsed.items] == [
        ("term", "runway"),
        ("qa", "Who approves travel?"),
        ("style", "Say hello"),
    ]
    assert all(
        i.scope == TENANT_WIDE and i.tenant == "acme" and i.source == "file:glossary.jsonl" for i in parsed.items
    )
    assert [p.split(":")[0] for p in parsed.problems] == ["line 4", "line 5", "line 6", "line 7"]
    assert "kind must be term, qa or style" in parsed.problems[1]

    csv_text = "\ufeffquestion,answer\nWhere is the VPN guide?,On the wiki.\n,missing question\n".encode()
    parsed = read_teach_file(csv_text, "faq.csv", "acme")
    assert [(i.kind, i.text) for i in parsed.items] == [("qa", "On the wiki.")] and parsed.problems[0].startswith(
        "line 3"
    )
    assert read_teach_file(b"", "empty.csv", "acme").problems == [
        "empty.csv is empty or has no header row (e.g. term,definition)"
    ]
    assert read_teach_file(b"\xff\xfe\x00bad", "latin.csv", "acme").problems == ["latin.csv is not UTF-8 text"]


def test_gate_rejects_forgetting_and_accepts_better_domain_text_without_knowing_less():
    from workers.training.gate import GateConfig, decide

    config = GateConfig(min_gain=0.1, min_domain_gain=0.05, max_forgetting=0.1)
    base = {"choice_accuracy": 0.5, "domain_ppl": 20.0, "general_ppl": 10.0}
    forgets = decide({**base, "choice_accuracy": 0.9, "general_ppl": 11.5}, base, config, "v0001")
    assert not forgets.promote and forgets.reason.startswith("forgets general language") and "+15%" in forgets.reason
    assert decide({**base, "choice_accuracy": 0.6}, base, config, "v0001").promote
    fluent = decide({**base, "domain_ppl": 18.0}, base, config, "v0001")
    assert fluent.promote and "domain's text better" in fluent.reason
    assert not decide({**base, "domain_ppl": 18.0, "choice_accuracy": 0.45}, base, config, "v0001").promote
    nothing = {"choice_accuracy": float("nan"), "domain_ppl": float("nan"), "general_ppl": 10.0}
    assert "nothing to evaluate on" in decide(nothing, nothing, config, "the base model").reason


def test_a_resumed_run_continues_exactly_as_an_uninterrupted_one(train_settings, tmp_path):
    """A crash after the step-10 checkpoint, then a resume: the same losses and weights as a run never stopped."""
    from safetensors.torch import load_file

    from workers.training.data import make_dataset
    from workers.training.train import TrainArgs
    from workers.training.train import main as train_main

    items = [
        CuratedItem("term", t, d, "t", TENANT_WIDE, "file:g.csv", at=float(i)) for i, (t, d) in enumerate(GLOSSARY)
    ]
    train_file = make_dataset("t", items, [], []).write(tmp_path / "data")
    settings: dict[str, Any] = {**TRAINER, "max_steps": 16, "checkpoint_every": 5, "lora_dropout": 0.1}

    def args(name: str) -> TrainArgs:
        return TrainArgs(
            base_model=train_settings.phi3_model,
            train_file=train_file,
            output_dir=tmp_path / name,
            checkpoint_dir=tmp_path / f"{name}-checkpoints",
            **settings,
        )

    whole = train_main(args("whole"))

    def crash(step: int, total: int, loss: float) -> None:
        if step == 12:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        train_main(args("resumed"), crash)
    assert (tmp_path / "resumed-checkpoints" / "LATEST").read_text() == "step-000010"
    resumed = train_main(args("resumed"))
    assert resumed.resumed_from == 10 and whole.resumed_from == 0
    assert resumed.losses == pytest.approx(whole.losses, rel=1e-4)
    a = load_file(str(tmp_path / "whole" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max() < 1e-4 for k in a)
