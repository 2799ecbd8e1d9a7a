"""Loading Phi-3 (a hub id or a local folder) for inference, with an optional LoRA adapter.

The device is chosen from `torch.cuda.is_available()` alone: bitsandbytes imports and even "works" on a CPU
machine, so its presence says nothing about whether 4-bit loading makes sense.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the GPU supports it, fp16 on older GPUs, float32 on CPU (half precision is slow there)."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def load_phi3(
    model_id_or_path: str, *, adapter: Path | None, want_4bit: bool, adapter_name: str = "default"
) -> tuple[Any, Any]:
    """Load (model, tokenizer) in eval mode; 4-bit NF4 only on CUDA and when asked; the adapter frozen on top."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    device = pick_device()
    dtype = pick_dtype(device)
    local = Path(model_id_or_path).is_dir()
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": local}
    if device.type == "cuda":
        kwargs["device_map"] = {"": device.index or 0}
        if want_4bit:
            kwargs["quantization_config"] = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16 if dtype == torch.bfloat16 else torch.float16,
            )
    log.info("loading %s on %s (%s, 4-bit: %s)", model_id_or_path, device, dtype, "quantization_config" in kwargs)
    tokenizer = AutoTokenizer.from_pretrained(model_id_or_path, local_files_only=local)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model: Any = AutoModelForCausalLM.from_pretrained(model_id_or_path, **kwargs)
    if device.type != "cuda":
        model.to(device)
    if adapter is not None:
        model = attach_adapter(model, adapter, adapter_name)
    model.eval()
    return model, tokenizer


def attach_adapter(model: Any, adapter: Path, name: str) -> Any:
    """Add a frozen adapter and make it active; on failure the model is left exactly as it was, then re-raise.

    A plain model is wrapped in a PeftModel. peft injects the LoRA layers before it reads the weights, so a
    corrupt or mismatched adapter would otherwise stay half-installed (with random weights, changing outputs).
    """
    from peft import PeftModel

    if isinstance(model, PeftModel):
        previous = model.active_adapter
        try:
            model.load_adapter(str(adapter), adapter_name=name, is_trainable=False)
            model.set_adapter(name, inference_mode=True)
        except Exception:
            if name in model.peft_config and name != previous:
                model.delete_adapter(name)
            model.set_adapter(previous, inference_mode=True)
            raise
        return model
    try:
        return PeftModel.from_pretrained(model, str(adapter), adapter_name=name, is_trainable=False)
    except Exception:
        _strip_lora(model)
        raise


def detach_adapters(model: Any) -> Any:
    """The base model with every adapter removed (not merged), for serving without one."""
    from peft import PeftModel

    return model.unload() if isinstance(model, PeftModel) else model


def _strip_lora(model: Any) -> None:
    """Put back the original layers wherever peft replaced one; used after a failed wrap."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, module.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config
