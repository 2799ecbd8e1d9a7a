"""The nightly trainer: trl's SFTTrainer over peft LoRA on Phi-3 (QLoRA NF4 on CUDA), packed without padding.

A plain `main(args)`: the Celery task, the training bench and the tests all call it.

- **No padding waste**: examples are packed best-fit-decreasing into rows of up to `max_seq_len` tokens and a
  micro-batch is one flat sequence with position ids restarting at every example (trl's padding-free BFD
  packing). transformers turns those position ids into a block-diagonal causal mask (or varlen kernels with
  flash attention), so no example attends to another; every computed token is a real one.
- **What is learnt**: chat examples (terms, Q&A, helpful answers) carry loss on the answer only, document text on
  every token (`workers/training/examples.py::encode`).
- **Liger kernels** (fused RMSNorm, RoPE, SwiGLU) on CUDA when `liger_kernel` is installed.
- **Contracts** kept from the hand-written loop it replaces: deterministic resume from the last checkpoint after a
  kill, checkpoints sealed atomically, progress per step, `report.json` + `loss.png`, continuing from the served
  adapter (see `workers/training/sft.py`).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from agent.models.tiny import LORA_TARGETS
from workers.training.examples import encode, read_examples
from workers.training.report import loss_curve_png
from workers.training.sft import CheckpointFolder, Progress, resumed_meter
from workers.training.throughput import Meter, reset_peak_memory

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"
__all__ = ["DEFAULT_CONFIG", "Progress", "TrainArgs", "TrainResult", "load_config", "main"]


@dataclass
class TrainArgs:
    base_model: str
    train_file: Path
    output_dir: Path
    checkpoint_dir: Path | None = None
    init_adapter: Path | None = None
    """Continue training this adapter (the served one) instead of a fresh LoRA on the base model."""
    max_steps: int = 300
    """Optimiser steps; with `epochs` set, the most steps a night may take."""
    epochs: float | None = None
    """Passes over the packed data (None: exactly `max_steps` steps)."""
    batch_size: int = 8
    """Packed rows (of up to `max_seq_len` tokens each) per micro-batch."""
    grad_accum: int = 1
    learning_rate: float = 2e-4
    warmup_steps: float = 20
    """Linear warm-up steps; a number below 1 is a share of the steps."""
    weight_decay: float = 0.0
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    max_seq_len: int = 1024
    checkpoint_every: int = 25
    quantize: Literal["auto", "none"] = "auto"
    gradient_checkpointing: bool = False
    packing: bool = True
    """Padding-free BFD packing; false: padded batches of similar lengths (for comparison)."""
    liger: bool = True
    """Liger kernels when on CUDA and installed."""
    attention: Literal["sdpa", "flex_attention", "eager"] = "sdpa"
    """sdpa masks a packed row densely (work grows with the row's length); flex_attention skips the masked
    blocks but compiles its kernels when training starts."""
    continue_from_current: bool = True
    seed: int = 0

    def fingerprint(self, data_hash: str) -> str:
        """What a checkpoint must match to be resumed: data, hyper-parameters and starting adapter."""
        keep = {k: v for k, v in asdict(self).items() if k not in ("output_dir", "checkpoint_dir", "train_file")}
        return hashlib.sha256(json.dumps([data_hash, keep], sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    resumed_from: int
    losses: list[float]
    tokens: int
    seconds: float
    method: str
    figures: dict[str, Any] = field(default_factory=dict)
    """Speed, padding efficiency, memory, MFU (`workers/training/throughput.py::Meter.figures`)."""

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """What the adapter's manifest keeps of the run."""
        keep = ("padding_efficiency", "peak_memory_gb", "mfu", "device")
        return {
            "method": self.method,
            "steps": self.steps,
            "resumed_from_step": self.resumed_from,
            "tokens_per_s": round(self.tokens_per_s, 1),
            "first_loss": self.losses[0] if self.losses else None,
            "last_loss": self.losses[-1] if self.losses else None,
            **{k: self.figures.get(k) for k in keep},
        }


def load_config(path: Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trainer section, gate section) of a YAML config; unknown trainer keys are an error naming them."""
    raw = yaml.safe_load((path or DEFAULT_CONFIG).read_text("utf-8")) or {}
    trainer, gate = dict(raw.get("trainer") or {}), dict(raw.get("gate") or {})
    known = {f.name for f in fields(TrainArgs)}
    unknown = sorted(set(trainer) - known)
    if unknown:
        raise ValueError(f"{path or DEFAULT_CONFIG}: unknown trainer setting(s) {', '.join(unknown)}")
    return trainer, gate


def use_qlora(args: TrainArgs) -> bool:
    return args.quantize == "auto" and torch.cuda.is_available()


def use_liger(args: TrainArgs) -> bool:
    return args.liger and torch.cuda.is_available() and importlib.util.find_spec("liger_kernel") is not None


def method_name(args: TrainArgs) -> str:
    return "qlora-nf4" if use_qlora(args) else ("lora-bf16" if torch.cuda.is_available() else "lora-fp32-cpu")


def load_base_for_training(args: TrainArgs) -> tuple[Any, Any]:
    """The base model ready for LoRA: NF4 + double quantisation + bf16 compute on CUDA, float32 on CPU.

    No fp32 up-casting of the frozen weights (peft's prepare_model_for_kbit_training): as in trl's QLoRA path,
    norms and the LM head stay bf16, which keeps the logits on tensor cores and the memory low.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    local = Path(args.base_model).is_dir()
    tokenizer = AutoTokenizer.from_pretrained(args.base_model, local_files_only=local)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    kwargs: dict[str, Any] = {"local_files_only": local, "attn_implementation": args.attention}
    if torch.cuda.is_available():
        kwargs.update(dtype=torch.bfloat16, device_map={"": 0})
        if use_qlora(args):
            kwargs["quantization_config"] = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16,
            )
    else:
        kwargs["dtype"] = torch.float32
    model: Any = AutoModelForCausalLM.from_pretrained(args.base_model, **kwargs)
    return model, tokenizer


def add_lora(model: Any, args: TrainArgs) -> Any:
    from peft import LoraConfig, PeftModel, get_peft_model

    torch.manual_seed(args.seed)  # the fresh LoRA matrices: the same for every run with these arguments
    if args.init_adapter is not None:
        return PeftModel.from_pretrained(model, str(args.init_adapter), is_trainable=True)
    config = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=args.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def sft_config(args: TrainArgs, output_dir: Path, *, save: bool) -> Any:
    """trl's SFTConfig for these arguments (max_steps is set once the packed data's size is known)."""
    from trl.trainer.sft_config import SFTConfig

    cuda = torch.cuda.is_available()
    return SFTConfig(
        output_dir=str(output_dir),
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine_with_min_lr",  # linear warm-up, cosine decay to a tenth
        lr_scheduler_kwargs={"min_lr_rate": 0.1},
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        max_grad_norm=1.0,
        optim="adamw_torch_fused" if cuda else "adamw_torch",
        bf16=cuda,
        logging_steps=1,
        save_strategy="steps" if save else "no",
        save_steps=args.checkpoint_every,
        report_to="none",
        disable_tqdm=True,
        log_level="warning",
        seed=args.seed,
        data_seed=args.seed,
        max_length=args.max_seq_len,
        packing=args.packing,
        packing_strategy="bfd",
        padding_free=args.packing,
        train_sampling_strategy="random" if args.packing else "group_by_length",
        shuffle_dataset=True,
        gradient_checkpointing=args.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        use_liger_kernel=use_liger(args),
        dataloader_pin_memory=cuda,
    )


def steps_for(args: TrainArgs, rows: int) -> int:
    if args.epochs is None:
        return args.max_steps
    per_step = args.batch_size * args.grad_accum
    return max(1, min(args.max_steps, math.ceil(args.epochs * rows / per_step)))


def main(args: TrainArgs, progress: Progress | None = None, *, data_hash: str | None = None) -> TrainResult:
    """Train (or resume) and save the adapter, `report.json` and `loss.png` into args.output_dir."""
    from datasets import Dataset, disable_progress_bars
    from transformers import PrinterCallback

    from workers.training.sft import NightlyTrainer, RunCallback

    disable_progress_bars()  # the job's progress is the report; a worker's log needs no bars
    examples = read_examples(args.train_file)
    if not examples:
        raise ValueError(f"{args.train_file} holds no training examples")
    data_hash = data_hash or hashlib.sha256(args.train_file.read_bytes()).hexdigest()[:16]
    fingerprint = args.fingerprint(data_hash)
    reset_peak_memory()
    model, tokenizer = load_base_for_training(args)
    model = add_lora(model, args)
    rows = [encode(e, tokenizer, args.max_seq_len) for e in examples]
    data = Dataset.from_dict({"input_ids": [r[0] for r in rows], "labels": [r[1] for r in rows]})

    checkpoints = CheckpointFolder(args.checkpoint_dir, fingerprint) if args.checkpoint_dir else None
    resume = checkpoints.latest() if checkpoints else None
    meter = resumed_meter(resume) if resume else Meter()
    if checkpoints:
        shutil.rmtree(checkpoints.staging, ignore_errors=True)  # what a killed run left half-written
    work = checkpoints.staging if checkpoints else args.output_dir / ".trainer"
    trainer = NightlyTrainer(
        model=model,
        args=sft_config(args, work, save=checkpoints is not None),
        train_dataset=data,
        processing_class=tokenizer,
        callbacks=[RunCallback(meter, args.seed, progress)],
        meter=meter,
        checkpoints=checkpoints,
    )
    trainer.remove_callback(PrinterCallback)  # progress goes to `progress`, not to stdout
    packed_rows = len(trainer.train_dataset)  # type: ignore[arg-type]
    trainer.args.max_steps = steps_for(args, packed_rows)
    start = int(resume.name.split("-")[1]) if resume else 0
    if resume:
        log.info("resuming from %s (step %d of %d)", resume, start, trainer.args.max_steps)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.output_dir / ".trainer", ignore_errors=True)
    model.save_pretrained(str(args.output_dir))
    figures = meter.figures(model.config, warmup_steps=min(3, len(meter.step_seconds) // 4))
    figures.update(
        packed_rows=packed_rows,
        examples=len(examples),
        packing="padding-free BFD" if args.packing else "padded, grouped by length",
        liger=use_liger(args),
        attention=str(getattr(model.config, "_attn_implementation", "?")),
    )
    result = TrainResult(
        args.output_dir, trainer.state.global_step, start, meter.losses, meter.real_tokens, meter.seconds,
        method_name(args), figures,
    )  # fmt: skip
    write_report(result, args, data_hash)
    return result


def write_report(result: TrainResult, args: TrainArgs, data_hash: str) -> None:
    report = {
        "method": result.method,
        "steps": result.steps,
        "resumed_from_step": result.resumed_from,
        **result.figures,
        "first_loss": result.losses[0] if result.losses else None,
        "last_loss": result.losses[-1] if result.losses else None,
        "losses": result.losses,
        "data_hash": data_hash,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(args).items()},
    }
    (args.output_dir / "report.json").write_text(json.dumps(report, indent=1), "utf-8")
    title = f"{result.method}, {result.figures.get('tokens_per_s', 0):,.0f} tokens/s on {result.figures.get('device')}"
    loss_curve_png(result.losses, args.output_dir / "loss.png", title=title)


def cli(argv: list[str] | None = None) -> None:
    """`python -m workers.training.train --base-model M --train-file F --output-dir D [--config C]`."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-model", required=True)
    parser.add_argument("--train-file", type=Path, required=True)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--checkpoint-dir", type=Path)
    parser.add_argument("--init-adapter", type=Path)
    parser.add_argument("--config", type=Path)
    ns = parser.parse_args(argv)
    trainer, _ = load_config(ns.config)
    args = TrainArgs(
        base_model=ns.base_model,
        train_file=ns.train_file,
        output_dir=ns.output_dir,
        checkpoint_dir=ns.checkpoint_dir,
        init_adapter=ns.init_adapter,
        **trainer,
    )
    result = main(args, lambda s, n, loss: print(f"step {s}/{n} loss {loss:.4f}", flush=True))
    print(json.dumps({"steps": result.steps, "resumed_from": result.resumed_from, **result.figures}))


if __name__ == "__main__":  # pragma: no cover
    cli()
