"""The trainer's own promises on CPU with the tiny Phi-3: packing without padding or cross-attention, answer-only
loss on chat examples, and a report.json that says what the run computed.

The pipeline around it (workers, gate, registry, resume after a kill) is covered in tests/test_training.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from agent.learning import AnswerRecord, CuratedItem
from agent.models.tiny import build_tiny_phi3
from agent.types import TENANT_WIDE
from workers.training.data import make_dataset
from workers.training.examples import IGNORE, Example, encode
from workers.training.mix import mix_items

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_phi3(tmp_path_factory.mktemp("tiny") / "base")


def _load(tiny: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model: Any = AutoModelForCausalLM.from_pretrained(tiny, attn_implementation="sdpa", dtype=torch.float32)
    model.eval()
    return model, AutoTokenizer.from_pretrained(tiny)


def test_chat_examples_learn_the_answer_only_and_documents_every_token(tiny):
    _, tokenizer = _load(tiny)
    ids, labels = encode(Example("qa", "t", "Where is the VPN guide?", "On the wiki."), tokenizer, 256)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Where is the VPN guide?"}], tokenize=False, add_generation_prompt=True
    )
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert labels[:n_prompt] == [IGNORE] * n_prompt and labels[n_prompt:] == ids[n_prompt:]
    assert tokenizer.decode(ids[n_prompt:], skip_special_tokens=True).strip() == "On the wiki."
    ids, labels = encode(Example("document", "t", text="Deployments run every Tuesday."), tokenizer, 256)
    assert labels == ids and ids[-1] == tokenizer.eos_token_id
    assert len(encode(Example("document", "t", text="word " * 400), tokenizer, 32)[0]) == 32


def test_packed_examples_do_not_attend_to_each_other(tiny):
    """A padding-free batch (one flat row, position ids restarting per example) gives each example the logits it
    has alone: nothing leaks across the boundary, and no padding is computed."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model, tokenizer = _load(tiny)
    texts = ["The VPN client must be updated before Friday.", "Expense reports are due on the last working day."]
    rows = [encode(Example("document", "t", text=t), tokenizer, 256) for t in texts]
    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)
    batch = collator([{"input_ids": ids, "labels": labels} for ids, labels in rows])
    assert batch["input_ids"].shape == (1, sum(len(ids) for ids, _ in rows)) and "attention_mask" not in batch
    with torch.no_grad():  # no KV cache, as in training (trl's compute_loss): with one, packing is not looked for
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        alone = [model(input_ids=torch.tensor([ids])).logits[0] for ids, _ in rows]
    assert torch.allclose(packed, torch.cat(alone), atol=1e-4)
    with torch.no_grad():  # the same flat row without position ids: the second example would see the first
        leaky = model(input_ids=batch["input_ids"], use_cache=False).logits[0]
    assert not torch.allclose(leaky[len(rows[0][0]) :], alone[1], atol=1e-4)


def _default_mix_train_file(folder: Path) -> Path:
    """The default data mix through make_dataset: curated terms and Q&A, helpful answers, document passages."""
    items = mix_items(0.25, seed=3)
    curated = [
        CuratedItem("term", t, d, "t", TENANT_WIDE, "file:g.csv", at=float(i)) for i, (t, d) in enumerate(items.terms)
    ]
    curated += [CuratedItem("qa", q, a, "t", TENANT_WIDE, "file:faq.csv") for q, a in items.qa]
    helpful = [AnswerRecord(f"a{i}", "t", TENANT_WIDE, q, a, "domain", 0.0) for i, (q, a) in enumerate(items.helpful)]
    dataset = make_dataset("t", curated, helpful, items.passages)
    assert {e.kind for e in dataset.train} == {"term", "qa", "helpful", "document"}
    return dataset.write(folder)


def test_report_json_gives_padding_efficiency_speed_and_memory_on_the_default_mix(tiny, tmp_path):
    from workers.training.train import TrainArgs, load_config, main

    trainer, _ = load_config(None)  # the shipped nightly configuration, cut to a few small steps for a CPU
    trainer.update(max_steps=3, epochs=None, batch_size=1, grad_accum=2, warmup_steps=1, gradient_checkpointing=False)
    train_file = _default_mix_train_file(tmp_path / "data")

    def run(name: str, **changes: Any) -> dict[str, Any]:
        args = TrainArgs(
            base_model=str(tiny), train_file=train_file, output_dir=tmp_path / name, **{**trainer, **changes}
        )
        main(args)
        report: dict[str, Any] = json.loads((args.output_dir / "report.json").read_text())
        assert (args.output_dir / "loss.png").stat().st_size > 1000
        return report

    packed = run("packed")
    assert packed["packing"] == "padding-free BFD" and packed["args"]["max_seq_len"] == 1024
    assert packed["padding_efficiency"] >= 0.90, packed
    assert packed["computed_tokens"] >= packed["tokens"] > 2 * 1024  # rows were filled with several examples
    assert packed["tokens_per_s"] > 0 and packed["peak_memory_gb"] > 0 and packed["memory"] == "peak process RSS"
    assert packed["mfu"] is None and packed["device"] == "cpu"  # no known peak FLOP rate for a CPU
    assert 0 < packed["loss_tokens"] < packed["tokens"]  # prompts of chat examples carry no loss
    assert len(packed["losses"]) == 3 and packed["steps"] == 3

    padded = run("padded", packing=False, batch_size=4, grad_accum=1)  # the old way: padded batches
    assert padded["packing"] == "padded, grouped by length"
    assert padded["padding_efficiency"] < packed["padding_efficiency"], padded


def test_a_night_is_some_epochs_over_the_packed_rows_capped_by_max_steps():
    from dataclasses import replace

    from workers.training.train import TrainArgs, steps_for

    args = TrainArgs("base", Path("train.jsonl"), Path("out"), epochs=3, max_steps=2000, batch_size=4, grad_accum=4)
    assert steps_for(args, 100) == 19  # 300 rows, 16 a step
    assert steps_for(replace(args, max_steps=10), 100) == 10
    assert steps_for(replace(args, epochs=None), 100) == 2000  # no epochs: exactly max_steps
    assert steps_for(args, 1) == 1


def test_training_continues_from_the_served_adapter(tiny, tmp_path):
    """With `init_adapter` (the served version), training starts from its weights and rank, not a fresh LoRA."""
    from safetensors.torch import load_file

    from agent.models.tiny import build_tiny_adapter
    from workers.training.mix import write_mix
    from workers.training.train import TrainArgs, main

    served = build_tiny_adapter(tiny, tmp_path / "served", seed=4)  # rank 8; the trainer's own default is 16
    args = TrainArgs(
        base_model=str(tiny),
        train_file=write_mix(tmp_path / "mix.jsonl", 0.05),
        output_dir=tmp_path / "out",
        init_adapter=served,
        max_steps=2,
        batch_size=1,
        max_seq_len=128,
        warmup_steps=0,
        learning_rate=1e-2,
    )
    result = main(args)
    assert json.loads((args.output_dir / "adapter_config.json").read_text())["r"] == 8
    before = load_file(str(served / "adapter_model.safetensors"))
    after = load_file(str(args.output_dir / "adapter_model.safetensors"))
    assert before.keys() == after.keys() and result.steps == 2
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained ...
    assert all((before[k] - after[k]).abs().max() < 0.05 for k in before)  # ... from the served weights (2 Adam steps)
