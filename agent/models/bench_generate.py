"""`expertbot bench generate`: how in-process generation copes with concurrent questions.

Times 1 question alone and N (default 8) asked at the same moment through the `BatchScheduler` that serves
`phi3`, plus, for reference, the same N run one batch at a time (the old queue of one). Sizes:

- `tiny` (CPU or GPU): the tiny random Phi-3 of the tests, its chat template and tokenizer; seconds per run.
- `mini` (CUDA only): a random-weight model of Phi-3-mini's shape (3.8 B parameters), in bf16 and in 4-bit NF4
  (saved once, reloaded through the serving loader with bitsandbytes); aggregate tokens/s for 1 and N streams.

Every row generates exactly `tokens` new tokens (`min_new_tokens`), so 1 and N streams do comparable work. Only
torch, transformers and bitsandbytes are imported (no LangChain, no pydantic): the GPU machine has nothing else.
Run it alone with `python -m agent.models.bench_generate --size tiny --runs 3`.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from agent.models.batching import BatchScheduler, GenRequest
from agent.models.phi3 import load_phi3
from agent.models.tiny import build_tiny_phi3

QUESTION = "How do I reset my VPN password, and who do I ask about parking and travel?"
MINI_SHAPE: dict[str, Any] = {
    "vocab_size": 32064,
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 4096,
    "original_max_position_embeddings": 4096,
}
"""microsoft/Phi-3-mini-4k-instruct's shape."""


def time_streams(
    model: Any, prompt: list[int], *, streams: int, tokens: int, pad_token_id: int, max_batch: int | None = None
) -> dict[str, float]:
    """Wall time for `streams` requests submitted at once (each exactly `tokens` new tokens) and tokens/s."""
    scheduler = BatchScheduler(lambda: model, pad_token_id=pad_token_id, max_batch=max_batch or streams)
    _sync()
    started = time.perf_counter()
    handles = [
        scheduler.submit(GenRequest(prompt, max_new_tokens=tokens, min_new_tokens=tokens)) for _ in range(streams)
    ]
    produced = sum(len(list(h)) for h in handles)
    _sync()
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 3), "tokens": produced, "tokens_per_s": round(produced / seconds, 1)}


def bench_model(
    model: Any,
    prompt: list[int],
    *,
    streams: int,
    tokens: int,
    pad_token_id: int,
    runs: int,
    baseline: bool,
) -> dict[str, Any]:
    """1 stream, `streams` at once, and (with `baseline`) `streams` one at a time; `runs` times each, all figures."""
    time_streams(model, prompt, streams=1, tokens=4, pad_token_id=pad_token_id)  # warm-up: kernels, allocator
    result: dict[str, Any] = {"streams": streams, "one": [], "together": [], "one_at_a_time": []}
    for _ in range(runs):
        result["one"].append(time_streams(model, prompt, streams=1, tokens=tokens, pad_token_id=pad_token_id))
        result["together"].append(
            time_streams(model, prompt, streams=streams, tokens=tokens, pad_token_id=pad_token_id)
        )
        if baseline:
            result["one_at_a_time"].append(
                time_streams(model, prompt, streams=streams, tokens=tokens, pad_token_id=pad_token_id, max_batch=1)
            )
    ratios = [t["seconds"] / o["seconds"] for o, t in zip(result["one"], result["together"], strict=True)]
    speedups = [t["tokens_per_s"] / o["tokens_per_s"] for o, t in zip(result["one"], result["together"], strict=True)]
    result["time_ratio"] = [round(r, 2) for r in ratios]
    result["throughput_ratio"] = [round(s, 2) for s in speedups]
    if not baseline:
        del result["one_at_a_time"]
    return result


def run_generate_bench(
    *,
    size: str = "tiny",
    streams: int = 8,
    tokens: int | None = None,
    runs: int = 3,
    baseline: bool | None = None,
    precisions: tuple[str, ...] = ("bf16", "4bit"),
    work_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The benchmark as a JSON-able dict; `size` "tiny" (any device) or "mini" (CUDA only)."""
    if size not in ("tiny", "mini"):
        raise ValueError(f"size must be tiny or mini, not {size!r}")
    if size == "mini" and not torch.cuda.is_available():
        raise RuntimeError("--size mini needs a CUDA GPU (a 3.8 B-parameter model)")
    with tempfile.TemporaryDirectory(prefix="bench-generate-", dir=work_dir) as tmp:
        folder = build_tiny_phi3(Path(tmp) / "tiny")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        out: dict[str, Any] = {"size": size, "device": device, "streams": streams, "torch": torch.__version__}
        if device == "cuda":
            out["gpu"] = torch.cuda.get_device_name(0)
        if size == "tiny":
            model, tokenizer = load_phi3(str(folder), adapter=None, want_4bit=False)
            chat = [{"role": "user", "content": QUESTION}]
            prompt = list(
                tokenizer.apply_chat_template(chat, tokenize=True, add_generation_prompt=True, return_dict=True)[
                    "input_ids"
                ]
            )
            out["tokens"] = tokens or 64
            out["threads"] = torch.get_num_threads()
            out["tiny"] = bench_model(
                model,
                prompt,
                streams=streams,
                tokens=out["tokens"],
                pad_token_id=int(tokenizer.pad_token_id),
                runs=runs,
                baseline=True if baseline is None else baseline,
            )
            log(summary(out["tiny"], "tiny"))
            return out
        out["tokens"] = tokens or 128
        prompt = torch.randint(100, 30000, (64,), generator=torch.Generator().manual_seed(0)).tolist()
        for precision in precisions:
            started = time.perf_counter()
            model = _mini(folder, Path(tmp) / "mini", four_bit=precision == "4bit", log=log)
            log(f"{precision}: model ready in {time.perf_counter() - started:.0f} s")
            out[precision] = bench_model(
                model, prompt, streams=streams, tokens=out["tokens"], pad_token_id=0, runs=runs, baseline=bool(baseline)
            )
            out[precision]["memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
            log(summary(out[precision], precision))
            del model
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        return out


def _mini(
    tiny_folder: Path,
    folder: Path,
    *,
    four_bit: bool,
    log: Callable[[str], None],
    shape: dict[str, Any] | None = None,
    device: str = "cuda",
) -> Any:
    """Phi-3-mini's shape with random weights in bf16 on the GPU; for 4-bit it is saved once and reloaded through
    `load_phi3` (bitsandbytes NF4, double quantization), exactly as the serving process loads Phi-3."""
    from transformers import AutoTokenizer, Phi3Config, Phi3ForCausalLM

    if four_bit and (folder / "config.json").is_file():
        return load_phi3(str(folder), adapter=None, want_4bit=True)[0]
    config = Phi3Config(**(shape or MINI_SHAPE), pad_token_id=0, bos_token_id=1, eos_token_id=32000)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = Phi3ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.eval()  # type: ignore[no-untyped-call]
    if not four_bit:
        return model
    started = time.perf_counter()
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_folder).save_pretrained(folder)
    log(f"saved the bf16 weights for 4-bit loading in {time.perf_counter() - started:.0f} s")
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return load_phi3(str(folder), adapter=None, want_4bit=True)[0]


def summary(result: dict[str, Any], label: str) -> str:
    """One line: ranges over the runs of time and tokens/s for 1 and N streams, and their ratios."""

    def span(values: list[float], unit: str) -> str:
        lo, hi = min(values), max(values)
        return f"{lo:.2f}{unit}" if lo == hi else f"{lo:.2f}-{hi:.2f}{unit}"

    def timing(rows: list[dict[str, Any]]) -> str:
        return f"{span([r['seconds'] for r in rows], ' s')} ({span([r['tokens_per_s'] for r in rows], ' tok/s')})"

    line = (
        f"{label}: 1 stream {timing(result['one'])}; {result['streams']} at once {timing(result['together'])}; "
        f"time ratio {span(result['time_ratio'], 'x')}, throughput {span(result['throughput_ratio'], 'x')}"
    )
    if result.get("one_at_a_time"):
        line += f"; one at a time {span([r['seconds'] for r in result['one_at_a_time']], ' s')}"
    return line


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", choices=["tiny", "mini"], default="tiny")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=None, help="new tokens per stream (tiny 64, mini 128)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--precision", action="append", choices=["bf16", "4bit"], help="mini: repeatable")
    parser.add_argument("--baseline", action="store_true", help="also time the streams one at a time (mini)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures to this file too")
    args = parser.parse_args()
    result = run_generate_bench(
        size=args.size,
        streams=args.streams,
        tokens=args.tokens,
        runs=args.runs,
        baseline=True if args.size == "tiny" else args.baseline,
        precisions=tuple(args.precision or ("bf16", "4bit")),
    )
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
