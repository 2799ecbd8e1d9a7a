"""The trainer: peft LoRA on Phi-3 (QLoRA with NF4 when CUDA is present), resumable from checkpoints.

A plain `main(args)`: the Celery task, the CLI benchmark and the tests all call it. Every step is
deterministic given (data, arguments, step): the batch order is drawn from the seed and the RNG is re-seeded at
each step, so a run resumed from a checkpoint continues exactly as if it had never stopped.

Checkpoints (LoRA weights, optimiser and schedule state, losses) are written to a temporary folder, renamed into
place, and only then named in `LATEST`: a run killed while writing one resumes from the previous one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from agent.models.tiny import LORA_TARGETS
from workers.training.data import Example, read_examples
from workers.training.report import loss_curve_png

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"
Progress = Callable[[int, int, float], None]
"""progress(step, total_steps, loss)"""


@dataclass
class TrainArgs:
    base_model: str
    train_file: Path
    output_dir: Path
    checkpoint_dir: Path | None = None
    init_adapter: Path | None = None
    """Continue training this adapter (the served one) instead of a fresh LoRA on the base model."""
    max_steps: int = 300
    batch_size: int = 8
    grad_accum: int = 1
    learning_rate: float = 2e-4
    warmup_steps: int = 20
    weight_decay: float = 0.0
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    max_seq_len: int = 1024
    checkpoint_every: int = 25
    quantize: Literal["auto", "none"] = "auto"
    gradient_checkpointing: bool = False
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

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


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


def load_base_for_training(args: TrainArgs) -> tuple[Any, Any]:
    """The base model ready for LoRA: NF4 + double quantisation + bf16 compute on CUDA, float32 on CPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    local = Path(args.base_model).is_dir()
    tokenizer = AutoTokenizer.from_pretrained(args.base_model, local_files_only=local)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    kwargs: dict[str, Any] = {"local_files_only": local}
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
    if use_qlora(args):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
            model, use_gradient_checkpointing=args.gradient_checkpointing
        )
    elif args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    return model, tokenizer


def add_lora(model: Any, args: TrainArgs) -> Any:
    from peft import LoraConfig, PeftModel, get_peft_model

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


def encode(example: Example, tokenizer: Any, max_len: int) -> tuple[list[int], list[int]]:
    """(input ids, labels): a chat example through the chat template, learning only the answer; text as is."""
    if example.is_chat:
        turn = [{"role": "user", "content": example.prompt}]
        prompt = tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template([*turn, {"role": "assistant", "content": example.answer}], tokenize=False)
        ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        labels = [-100] * n_prompt + ids[n_prompt:]
    else:
        ids = tokenizer(example.text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        labels = list(ids)
    return ids[:max_len], labels[:max_len]


def collate(rows: list[tuple[list[int], list[int]]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row_ids, row_labels) in enumerate(rows):
        ids[i, : len(row_ids)] = torch.tensor(row_ids)
        labels[i, : len(row_labels)] = torch.tensor(row_labels)
        mask[i, : len(row_ids)] = 1
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}


def batch_order(n_examples: int, n_batches: int, batch_size: int, seed: int) -> list[list[int]]:
    """Epoch after epoch of shuffled examples, cut into batches: the same for a fresh and a resumed run."""
    rng = random.Random(seed)
    stream: list[int] = []
    while len(stream) < n_batches * batch_size:
        epoch = list(range(n_examples))
        rng.shuffle(epoch)
        stream += epoch
    return [stream[i * batch_size : (i + 1) * batch_size] for i in range(n_batches)]


def _schedule(args: TrainArgs) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to a tenth of the learning rate."""

    def factor(step: int) -> float:
        if step < args.warmup_steps:
            return (step + 1) / args.warmup_steps
        progress = (step - args.warmup_steps) / max(1, args.max_steps - args.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


# --- checkpoints ------------------------------------------------------------------------------------------------


def _latest_checkpoint(folder: Path | None, fingerprint: str) -> Path | None:
    if folder is None:
        return None
    try:
        name = (folder / "LATEST").read_text("utf-8").strip()
        meta = json.loads((folder / name / "meta.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return folder / name if meta.get("fingerprint") == fingerprint else None


def _save_checkpoint(folder: Path, model: Any, optimizer: Any, scheduler: Any, meta: dict[str, Any]) -> None:
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    name = f"step-{meta['step']:06d}"
    staging = folder / f".{name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    save_file(state, str(staging / "lora.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, staging / "state.pt")
    (staging / "meta.json").write_text(json.dumps(meta), "utf-8")
    shutil.rmtree(folder / name, ignore_errors=True)
    os.rename(staging, folder / name)
    tmp = folder / ".LATEST.tmp"
    tmp.write_text(name, "utf-8")
    os.replace(tmp, folder / "LATEST")
    for old in folder.glob("step-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)


def _resume(ckpt: Path, model: Any, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(ckpt / "lora.safetensors"), device=str(model.device)))
    state = torch.load(ckpt / "state.pt", map_location=model.device, weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    meta: dict[str, Any] = json.loads((ckpt / "meta.json").read_text("utf-8"))
    return meta


# --- the run ----------------------------------------------------------------------------------------------------


def main(args: TrainArgs, progress: Progress | None = None, *, data_hash: str | None = None) -> TrainResult:
    """Train (or resume) and save the adapter, `report.json` and `loss.png` into args.output_dir."""
    examples = read_examples(args.train_file)
    if not examples:
        raise ValueError(f"{args.train_file} holds no training examples")
    data_hash = data_hash or hashlib.sha256(args.train_file.read_bytes()).hexdigest()[:16]
    fingerprint = args.fingerprint(data_hash)
    model, tokenizer = load_base_for_training(args)
    torch.manual_seed(args.seed)  # the fresh LoRA matrices: the same for every run with these arguments
    model = add_lora(model, args)
    device = model.device
    encoded = [encode(e, tokenizer, args.max_seq_len) for e in examples]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(args))
    start, losses, tokens, seconds = 0, [], 0, 0.0
    ckpt = _latest_checkpoint(args.checkpoint_dir, fingerprint)
    if ckpt is not None:
        meta = _resume(ckpt, model, optimizer, scheduler)
        start, losses, tokens, seconds = meta["step"], meta["losses"], meta["tokens"], meta["seconds"]
        log.info("resuming from %s (step %d of %d)", ckpt, start, args.max_steps)
    batches = batch_order(len(encoded), args.max_steps * args.grad_accum, args.batch_size, args.seed)
    pad = int(tokenizer.pad_token_id)
    model.train()
    for step in range(start, args.max_steps):
        began = time.perf_counter()
        torch.manual_seed(args.seed * 1_000_003 + step)  # dropout draws the same numbers after a resume
        step_loss = 0.0
        for micro in range(args.grad_accum):
            batch = collate([encoded[i] for i in batches[step * args.grad_accum + micro]], pad, device)
            loss = model(**batch).loss / args.grad_accum
            loss.backward()
            step_loss += float(loss.detach())
            tokens += int(batch["attention_mask"].sum())
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(round(step_loss, 5))
        seconds += time.perf_counter() - began
        done = step + 1
        if progress:
            progress(done, args.max_steps, step_loss)
        if args.checkpoint_dir is not None and done % args.checkpoint_every == 0 and done < args.max_steps:
            meta = {"step": done, "losses": losses, "tokens": tokens, "seconds": seconds, "fingerprint": fingerprint}
            _save_checkpoint(args.checkpoint_dir, model, optimizer, scheduler, meta)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(args.output_dir))
    method = "qlora-nf4" if use_qlora(args) else ("lora-bf16" if torch.cuda.is_available() else "lora-fp32-cpu")
    result = TrainResult(args.output_dir, args.max_steps, start, losses, tokens, seconds, method)
    write_report(result, args, data_hash)
    return result


def write_report(result: TrainResult, args: TrainArgs, data_hash: str) -> None:
    report = {
        "method": result.method,
        "steps": result.steps,
        "resumed_from_step": result.resumed_from,
        "tokens": result.tokens,
        "tokens_per_s": round(result.tokens_per_s, 1),
        "first_loss": result.losses[0] if result.losses else None,
        "last_loss": result.losses[-1] if result.losses else None,
        "losses": result.losses,
        "data_hash": data_hash,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(args).items()},
    }
    (args.output_dir / "report.json").write_text(json.dumps(report, indent=1), "utf-8")
    loss_curve_png(result.losses, args.output_dir / "loss.png")


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
    print(json.dumps({"steps": result.steps, "resumed_from": result.resumed_from, "output": str(result.output_dir)}))


if __name__ == "__main__":  # pragma: no cover
    cli()
