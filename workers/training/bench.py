"""Training speed: the product trainer and the plain peft loop side by side, on random weights of one shape.

Speed and memory do not depend on the weights' values, so a randomly initialised model of Phi-3-mini's exact
shape (`--size mini`, GPU) needs no download; `--size tiny` (the test model's shape) runs anywhere.

- **plain loop**: peft LoRA (bf16) and QLoRA (NF4), a forward/backward/step loop on `--batch` x `--seq` random
  tokens (every token real: the upper bound of what packing can reach);
- **product**: `workers.training.train.main`, the nightly trainer at its configuration (`configs/default.yaml`
  for mini, `configs/tiny.yaml` for tiny, or `--config`), on the default data mix (`workers/training/mix.py`)
  through a word-level tokenizer (about 1.1 tokens a word; Phi-3's tokenizer takes about 1.3 on English).

Each run reports real tokens/s (after the first steps), padding efficiency (real / computed tokens), peak memory
and MFU (`workers/training/throughput.py`). On CPU only plain LoRA runs: bitsandbytes' NF4 training kernels need
CUDA, and the report says so; the peak memory there is the process's peak RSS (it never goes down).

Run as `python -m workers.training.bench` (what `expertbot bench train` calls, in a process of its own). It imports
the trainer core only (torch, transformers, peft, trl, datasets, matplotlib): no chat, queue or store packages.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import torch

from agent.models.tiny import LORA_TARGETS, PHI3_CHAT_TEMPLATE, TINY_SHAPE
from workers.training.mix import mix_examples, mix_items, write_mix
from workers.training.throughput import Meter, device_name, memory_kind, peak_memory_gb, reset_peak_memory

Size = Literal["mini", "tiny"]


def phi3_config(size: Size) -> Any:
    """microsoft/Phi-3-mini-4k-instruct's shape (3.8 B parameters), or the tiny test shape."""
    from transformers import Phi3Config

    if size == "mini":
        return Phi3Config(
            vocab_size=32064,
            hidden_size=3072,
            intermediate_size=8192,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            max_position_embeddings=4096,
            original_max_position_embeddings=4096,
            rms_norm_eps=1e-5,
            sliding_window=2047,
            bos_token_id=1,
            eos_token_id=32000,
            pad_token_id=32000,
        )
    return Phi3Config(vocab_size=2000, **TINY_SHAPE, pad_token_id=0)


def _random_model(config: Any, folder: Path, dtype: torch.dtype) -> Path:
    """Save a random-weight model so that both methods load it through from_pretrained, as training does."""
    from transformers import Phi3ForCausalLM

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model: Any = Phi3ForCausalLM(config)
        model = model.to(dtype)
    model.save_pretrained(folder)
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return folder


def _load(folder: Path, method: str) -> Any:
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if method == "qlora-nf4":
        from peft import prepare_model_for_kbit_training

        quant = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        model = AutoModelForCausalLM.from_pretrained(
            folder, quantization_config=quant, dtype=torch.bfloat16, device_map={"": 0}
        )
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)  # type: ignore[no-untyped-call]
    if method == "lora-bf16":
        plain: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, device_map={"": 0})
        plain.gradient_checkpointing_enable()
        plain.enable_input_require_grads()
        return plain
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)


def run_method(folder: Path, method: str, *, steps: int, batch: int, seq: int, vocab: int) -> dict[str, Any]:
    from peft import LoraConfig, get_peft_model

    reset_peak_memory()
    model = get_peft_model(
        _load(folder, method),
        LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"),
    )
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    warmup = min(3, max(steps // 10, 1))
    started = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            started = time.perf_counter()
        ids = torch.randint(1, vocab - 1, (batch, seq), generator=generator).to(model.device)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    tokens = steps * batch * seq
    meter = Meter(
        real_tokens=tokens, computed_tokens=tokens, seconds=elapsed, step_seconds=[elapsed], step_tokens=[tokens]
    )
    figures = meter.figures(model.config)
    result = {
        "trainer": "plain peft loop",
        "method": method,
        "shape": f"{batch} x {seq} random tokens",
        "tokens_per_s": figures["tokens_per_s"],
        "padding_efficiency": figures["padding_efficiency"],
        "peak_mem_gb": round(peak_memory_gb(), 3),
        "mfu": figures["mfu"],
        "steps": steps,
        "seconds": round(elapsed, 2),
    }
    del model, optimizer, params
    _free()
    return result


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _mix_tokenizer(folder: Path) -> None:
    """A word-level BPE over the mix's words, with Phi-3's special tokens and chat template, saved into `folder`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
    tok = Tokenizer(models.BPE(unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=specials, show_progress=False)
    items = mix_items(0.5, seed=1)
    tok.train_from_iterator([e.prompt + " " + e.answer + " " + e.text for e in mix_examples(items)], trainer=trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=specials[2:],
    )
    fast.chat_template = PHI3_CHAT_TEMPLATE
    fast.save_pretrained(folder)


def run_product(folder: Path, work: Path, *, steps: int, config: Path | None, mix_scale: float) -> dict[str, Any]:
    """The nightly trainer at its configuration on the default data mix, for `steps` steps."""
    from workers.training.train import TrainArgs, load_config, main

    trainer, _ = load_config(config)
    warmup = float(trainer.get("warmup_steps", 0))
    trainer.update(max_steps=steps, epochs=None, warmup_steps=warmup if warmup < 1 else min(int(warmup), steps // 4))
    args = TrainArgs(
        base_model=str(folder),
        train_file=write_mix(work / "mix.jsonl", mix_scale),
        output_dir=work / "product",
        checkpoint_dir=None,
        **trainer,
    )
    result = main(args)
    f = result.figures
    _free()
    return {
        "trainer": "product (trl SFTTrainer)",
        "method": result.method,
        "shape": f"{args.batch_size} x {args.grad_accum} rows of <= {args.max_seq_len}, {f['packing']}, "
        f"{f['attention']}",
        "tokens_per_s": f["steady_tokens_per_s"],
        "padding_efficiency": f["padding_efficiency"],
        "peak_mem_gb": f["peak_memory_gb"],
        "mfu": f["mfu"],
        "steps": result.steps,
        "seconds": f["seconds"],
        "tokens_per_step": round(f["tokens"] / max(result.steps, 1)),
        "liger": f["liger"],
        "gradient_checkpointing": args.gradient_checkpointing,
        "config": str(config or "default"),
    }


def _save(report: dict[str, Any], out: Path | None) -> None:
    if out is not None:
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(report), "utf-8")
        tmp.replace(out)


def bench_train(
    size: Size,
    *,
    steps: int | None = None,
    batch: int = 4,
    seq: int = 512,
    plain: list[str] | None = None,
    product: bool = True,
    product_steps: int | None = None,
    configs: list[Path] | None = None,
    mix_scale: float | None = None,
    out: Path | None = None,
) -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    if size == "mini" and not cuda:
        raise SystemExit("--size mini needs a CUDA GPU (a 3.8 B model); on CPU use --size tiny")
    model_config = phi3_config(size)
    steps = steps or (200 if size == "mini" else 30)
    seq = min(seq, int(model_config.max_position_embeddings))
    methods = plain if plain is not None else (["lora-bf16", "qlora-nf4"] if cuda else ["lora-fp32-cpu"])
    report: dict[str, Any] = {
        "size": size,
        "device": device_name(),
        "batch": batch,
        "seq_len": seq,
        "runs": [],
        "memory": memory_kind(),
    }
    if not cuda:
        report["note"] = "QLoRA (bitsandbytes NF4) needs CUDA: only plain LoRA was measured on this CPU"
    tiny_config = Path(__file__).parent / "configs" / "tiny.yaml"
    with tempfile.TemporaryDirectory(prefix="expertbot-bench-train-") as tmp:
        folder = _random_model(model_config, Path(tmp) / "model", torch.bfloat16 if cuda else torch.float32)
        _mix_tokenizer(folder)
        default: list[Path | None] = [None if size == "mini" else tiny_config]
        configs_to_run: list[Path | None] = (list(configs) if configs else default) if product else []
        n = product_steps or (30 if size == "mini" else 6)
        scale = mix_scale or (4.0 if size == "mini" else 0.5)

        def product_run(config: Path | None) -> None:
            print(f"training with the product trainer ({config or 'default'}) for {n} steps ...", file=sys.stderr)
            try:
                report["runs"].append(run_product(folder, Path(tmp), steps=n, config=config, mix_scale=scale))
            except Exception as exc:  # one failing configuration (say, a kernel) must not hide the others
                failed = {"trainer": "product (trl SFTTrainer)", "config": str(config), "error": repr(exc)}
                report["runs"].append(failed)
                _free()
            _save(report, out)

        # The first product configuration, then the plain loop, then the other configurations: what matters most
        # comes first, and each result is written to `out` at once (a run cut short by a time limit keeps them).
        for config in configs_to_run[:1]:
            product_run(config)
        for method in methods:
            print(f"training {method} (plain loop) for {steps} steps ...", file=sys.stderr, flush=True)
            report["runs"].append(
                run_method(folder, method, steps=steps, batch=batch, seq=seq, vocab=int(model_config.vocab_size))
            )
            _save(report, out)
        for config in configs_to_run[1:]:
            product_run(config)
    return report


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["mini", "tiny"], default="mini" if torch.cuda.is_available() else "tiny")
    parser.add_argument("--steps", type=int, help="plain-loop steps (after 1-3 warm-up steps)")
    parser.add_argument("--batch", type=int, default=4, help="plain-loop batch")
    parser.add_argument("--seq", type=int, default=512, help="plain-loop sequence length")
    parser.add_argument("--plain", nargs="*", help="plain-loop methods (lora-bf16 qlora-nf4 lora-fp32-cpu; none: skip)")
    parser.add_argument("--no-product", action="store_true", help="skip the product trainer")
    parser.add_argument("--product-steps", type=int, help="product-trainer steps (the first 3 are not timed)")
    parser.add_argument("--config", type=Path, nargs="*", help="the product trainer's YAML config(s), one run each")
    parser.add_argument("--mix-scale", type=float, help="size of the data mix (1.0: 320 examples)")
    parser.add_argument("--out", type=Path, help="also write the report here after every run")
    ns = parser.parse_args(argv)
    report = bench_train(
        ns.size,
        steps=ns.steps,
        batch=ns.batch,
        seq=ns.seq,
        plain=ns.plain,
        product=not ns.no_product,
        product_steps=ns.product_steps,
        configs=ns.config,
        mix_scale=ns.mix_scale,
        out=ns.out,
    )
    print(json.dumps(report))


if __name__ == "__main__":  # pragma: no cover
    cli()
