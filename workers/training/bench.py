"""Training speed: tokens/s and peak memory of LoRA (bf16) and QLoRA (NF4) side by side, on random weights.

Speed and memory do not depend on the weights' values, so a randomly initialised model of Phi-3-mini's exact
shape (`--size mini`, GPU) needs no download; `--size tiny` (the test model's shape) runs anywhere. On CPU only
plain LoRA runs: bitsandbytes' NF4 training kernels need CUDA, and the report says so.

Run as `python -m workers.training.bench` (what `expertbot bench train` calls, in a process of its own).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import torch

from agent.models.tiny import LORA_TARGETS, TINY_SHAPE

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


def _peak_gb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux: the process's peak RSS


def run_method(folder: Path, method: str, *, steps: int, batch: int, seq: int, vocab: int) -> dict[str, Any]:
    from peft import LoraConfig, get_peft_model

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
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
    result = {
        "method": method,
        "tokens_per_s": round(steps * batch * seq / elapsed, 1),
        "peak_mem_gb": round(_peak_gb(), 3),
        "steps": steps,
        "seconds": round(elapsed, 2),
    }
    del model, optimizer, params
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def bench_train(size: Size, *, steps: int | None = None, batch: int = 4, seq: int = 512) -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    if size == "mini" and not cuda:
        raise SystemExit("--size mini needs a CUDA GPU (a 3.8 B model); on CPU use --size tiny")
    config = phi3_config(size)
    steps = steps or (200 if size == "mini" else 30)
    seq = min(seq, int(config.max_position_embeddings))
    methods = ["lora-bf16", "qlora-nf4"] if cuda else ["lora-fp32-cpu"]
    report: dict[str, Any] = {
        "size": size,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "batch": batch,
        "seq_len": seq,
        "runs": [],
        "memory": "peak GPU memory allocated" if cuda else "peak process RSS",
    }
    if not cuda:
        report["note"] = "QLoRA (bitsandbytes NF4) needs CUDA: only plain LoRA was measured on this CPU"
    with tempfile.TemporaryDirectory(prefix="expertbot-bench-train-") as tmp:
        folder = _random_model(config, Path(tmp) / "model", torch.bfloat16 if cuda else torch.float32)
        for method in methods:
            print(f"training {method} for {steps} steps ...", file=sys.stderr, flush=True)
            report["runs"].append(
                run_method(folder, method, steps=steps, batch=batch, seq=seq, vocab=int(config.vocab_size))
            )
    return report


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", choices=["mini", "tiny"], default="mini" if torch.cuda.is_available() else "tiny")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    ns = parser.parse_args(argv)
    print(json.dumps(bench_train(ns.size, steps=ns.steps, batch=ns.batch, seq=ns.seq)))


if __name__ == "__main__":  # pragma: no cover
    cli()
