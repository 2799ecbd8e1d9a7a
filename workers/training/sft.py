"""trl's SFTTrainer with the nightly run's contracts: atomic checkpoints, exact resume, progress, token counts.

- **Atomic checkpoints**: the Trainer writes `checkpoint-N` into a staging folder; only when it is complete is it
  renamed to `step-00000N` beside `LATEST`, and only then named in `LATEST` (written to a temporary file and
  renamed). A run killed while a checkpoint is written resumes from the previous one. `meta.json` in each
  checkpoint holds the fingerprint (data + arguments) and the meter (losses, token counts, seconds) so far.
- **Exact resume**: the Trainer restores adapter, optimiser, schedule, data position and RNG; the RNG is
  also re-seeded at every step from (seed, step), so dropout draws the same numbers however the run got there.
- **Progress**: every optimiser step's loss goes to `progress(step, total, loss)` (the job's status); an
  exception raised there (a lost lock, a test's simulated kill) stops the run.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback
from trl.trainer.sft_trainer import SFTTrainer

from workers.training.throughput import Meter

Progress = Callable[[int, int, float], None]
"""progress(step, total_steps, loss)"""
STAGING = ".staging"


class CheckpointFolder:
    """`folder/step-NNNNNN` checkpoints, the newest named in `folder/LATEST`; older ones are removed."""

    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.folder = folder
        self.fingerprint = fingerprint

    @property
    def staging(self) -> Path:
        return self.folder / STAGING

    def latest(self) -> Path | None:
        """The newest complete checkpoint of this very run (same fingerprint), if any."""
        try:
            name = (self.folder / "LATEST").read_text("utf-8").strip()
            meta = json.loads((self.folder / name / "meta.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return self.folder / name if meta.get("fingerprint") == self.fingerprint else None

    def commit(self, written: Path, step: int, meter: Meter) -> None:
        """Seal a checkpoint the Trainer has finished writing, then point LATEST at it."""
        meta = {"step": step, "fingerprint": self.fingerprint, "meter": meter.state()}
        (written / "meta.json").write_text(json.dumps(meta), "utf-8")
        name = f"step-{step:06d}"
        shutil.rmtree(self.folder / name, ignore_errors=True)
        os.rename(written, self.folder / name)
        tmp = self.folder / ".LATEST.tmp"
        tmp.write_text(name, "utf-8")
        os.replace(tmp, self.folder / "LATEST")
        for old in self.folder.glob("step-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)


def resumed_meter(checkpoint: Path) -> Meter:
    meter = Meter()
    meter.load(json.loads((checkpoint / "meta.json").read_text("utf-8"))["meter"])
    return meter


class NightlyTrainer(SFTTrainer):
    """SFTTrainer that counts real and computed tokens and seals its checkpoints atomically."""

    def __init__(self, *args: Any, meter: Meter, checkpoints: CheckpointFolder | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.meter = meter
        self.checkpoints = checkpoints

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        self.meter.count(inputs["input_ids"], inputs["labels"], inputs.get("attention_mask"))
        loss: torch.Tensor = super().training_step(model, inputs, num_items_in_batch)  # type: ignore[no-untyped-call]
        return loss

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        step = self.state.global_step
        if self.checkpoints is None or step >= self.state.max_steps:
            return  # the finished adapter is saved by the caller; a checkpoint of the last step is never resumed
        Trainer._save_checkpoint(self, model, trial)  # without trl's model card
        written = Path(str(self.args.output_dir)) / f"checkpoint-{step}"
        self.checkpoints.commit(written, step, self.meter)


class RunCallback(TrainerCallback):
    """Per-step seeding, step timing, the loss list and progress reports."""

    def __init__(self, meter: Meter, seed: int, progress: Progress | None) -> None:
        self.meter = meter
        self.seed = seed
        self.progress = progress

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        torch.manual_seed(self.seed * 1_000_003 + state.global_step)
        self.meter.step_began()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.meter.step_ended()

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if logs and "loss" in logs:
            loss = float(logs["loss"])
            self.meter.losses.append(round(loss, 5))
            if self.progress:
                self.progress(state.global_step, state.max_steps, loss)
