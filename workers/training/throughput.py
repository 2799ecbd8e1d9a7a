"""What a training run did with its hardware: real tokens/s, padding efficiency, peak memory and model FLOP use.

- **real tokens** are the tokens of the examples; **computed tokens** are the positions the model ran on (real
  tokens plus any padding). Their ratio is the padding efficiency: 1.0 when nothing but real tokens is computed.
- **MFU** (model FLOP utilisation) = 6 x parameters x real tokens/s ÷ the accelerator's peak dense bf16 rate, the
  usual estimate (forward 2N, backward 4N per token; attention and the recomputation of gradient checkpointing
  are not counted, so a run can do more work than the figure credits). On a CPU it is left out (no known peak).
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field
from typing import Any

import torch

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0}
"""Dense bf16 tensor-core peaks from the vendors' data sheets (SXM parts), by a word in the device's name.
`EXPERTBOT_PEAK_TFLOPS` overrides (e.g. for a PCIe or NVL part)."""


def parameter_count(config: Any) -> int:
    """Parameters of a Llama/Phi-3-style decoder from its config (quantised weights hide their true count)."""
    d, layers, vocab = int(config.hidden_size), int(config.num_hidden_layers), int(config.vocab_size)
    heads = int(config.num_attention_heads)
    kv = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or d // heads)
    inter = int(config.intermediate_size)
    attention = d * head_dim * (heads + 2 * kv) + heads * head_dim * d
    mlp = 3 * d * inter  # gate + up (fused in Phi-3) and down
    embeddings = vocab * d * (1 if getattr(config, "tie_word_embeddings", False) else 2)
    return layers * (attention + mlp + 2 * d) + embeddings + d


def peak_tflops(device_name: str) -> float | None:
    override = os.environ.get("EXPERTBOT_PEAK_TFLOPS")
    if override:
        return float(override)
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in device_name:
            return value
    return None


def device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def reset_peak_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gb() -> float:
    """Peak GPU memory allocated by torch, or on a CPU the process's peak resident memory (Linux: KiB)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def memory_kind() -> str:
    return "peak GPU memory allocated" if torch.cuda.is_available() else "peak process RSS"


@dataclass
class Meter:
    """Counts tokens and step time across a run (and across a resume: `state()` / `load()` carry it over)."""

    real_tokens: int = 0
    computed_tokens: int = 0
    loss_tokens: int = 0
    seconds: float = 0.0
    step_seconds: list[float] = field(default_factory=list)
    step_tokens: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    _began: float = 0.0
    _pending: list[tuple[Any, Any]] = field(default_factory=list)

    def count(self, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
        """One micro-batch: computed = every position; real = the unmasked ones (all of them when padding-free).

        Counts on the device are summed at the step's end (which waits for the GPU anyway), not here: reading a
        GPU number before the forward would make the CPU wait for the previous backward.
        """
        self.computed_tokens += input_ids.numel()
        real = attention_mask.sum() if attention_mask is not None else input_ids.numel()
        self._pending.append((real, (labels[..., 1:] != -100).sum()))

    def step_began(self) -> None:
        self._began = time.perf_counter()

    def step_ended(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - self._began
        real = sum(int(r) for r, _ in self._pending)
        self.real_tokens += real
        self.loss_tokens += sum(int(n) for _, n in self._pending)
        self._pending.clear()
        self.seconds += elapsed
        self.step_seconds.append(round(elapsed, 4))
        self.step_tokens.append(real)

    def state(self) -> dict[str, Any]:
        return {
            "real_tokens": self.real_tokens,
            "computed_tokens": self.computed_tokens,
            "loss_tokens": self.loss_tokens,
            "seconds": self.seconds,
            "step_seconds": self.step_seconds,
            "step_tokens": self.step_tokens,
            "losses": self.losses,
        }

    def load(self, state: dict[str, Any]) -> None:
        for key in (
            "real_tokens",
            "computed_tokens",
            "loss_tokens",
            "seconds",
            "step_seconds",
            "step_tokens",
            "losses",
        ):
            setattr(self, key, state[key])

    def figures(self, config: Any, *, warmup_steps: int = 0) -> dict[str, Any]:
        """Speed, padding efficiency, memory and MFU; `warmup_steps` first steps are left out of `steady_*`."""
        rate = self.real_tokens / self.seconds if self.seconds > 0 else 0.0
        steady_s = sum(self.step_seconds[warmup_steps:])
        steady = sum(self.step_tokens[warmup_steps:]) / steady_s if steady_s > 0 and self.step_tokens else rate
        flops = 6 * parameter_count(config)
        peak = peak_tflops(device_name())
        return {
            "device": device_name(),
            "tokens": self.real_tokens,
            "computed_tokens": self.computed_tokens,
            "loss_tokens": self.loss_tokens,
            "seconds": round(self.seconds, 3),
            "tokens_per_s": round(rate, 1),
            "steady_tokens_per_s": round(steady, 1),
            "padding_efficiency": round(self.real_tokens / self.computed_tokens, 4) if self.computed_tokens else None,
            "peak_memory_gb": round(peak_memory_gb(), 3),
            "memory": memory_kind(),
            "flops_per_token": flops,
            "peak_tflops": peak,
            "mfu": round(flops * steady / (peak * 1e12), 4) if peak else None,
        }
