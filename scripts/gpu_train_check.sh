#!/usr/bin/env bash
# The nightly trainer on one CUDA GPU, against the plain peft loop, on a random-weight Phi-3-mini-shaped model.
#
#   export PYTHONPATH=/tmp/site      # where the wheels in .whl/ are (or will be) installed
#   bash scripts/gpu_train_check.sh  # from the repository root; about 3 minutes on an H200, at most 4
#
# Runs (one random model, built once):
#   1. the product trainer (workers/training/train.py, trl SFTTrainer) at configs/default.yaml: QLoRA NF4,
#      4 packed rows x 4 accumulation, up to 1,024 tokens a row, gradient checkpointing, Liger if installed;
#   2. the same at 8 x 2 rows without Liger: the shape measured in DESIGN.md (5,142 tokens/s), as an anchor;
#   3. the plain peft loop, QLoRA NF4 at 4 x 512 random tokens (the issue's target: 5,932 tokens/s on an H200);
#   4. if time is left, the default with flex attention (block-sparse masks for packed rows; compiles first).
# Each product run is 12 optimiser steps (the first 3 untimed), the plain loop 30 steps after warm-up.
# Prints tokens/s, padding efficiency, peak GPU memory and MFU per run; the JSON is kept in $OUT (or /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
SITE="${SITE:-/tmp/site}"
export PYTHONPATH="$PWD:${PYTHONPATH:-$SITE}"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
PY="${PYTHON:-python3}"
RESULTS="${OUT:-/tmp}/gpu_train_check.json"
started=$(date +%s)

# 1. The packages the image lacks, from the wheels the lead carries (no dependency resolution: torch stays).
if ! "$PY" -c "import trl, datasets, peft, bitsandbytes, transformers" 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    echo "installing .whl/*.whl into $SITE (no dependencies)"
    "$PY" -m pip install --quiet --no-deps --no-index --target "$SITE" .whl/*.whl
  fi
fi

# 2. Preflight: every version the trainer was built against, and the GPU.
"$PY" - <<'EOF'
import importlib.metadata as md
import sys

import torch

want = {"transformers": "5.23.0", "peft": "0.21.2", "bitsandbytes": "0.50.2", "trl": "1.16.0", "datasets": "5.2.0"}
bad = []
for name in [*want, "accelerate", "huggingface-hub", "tokenizers", "safetensors", "dill", "multiprocess",
             "matplotlib", "liger-kernel"]:
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        have = "missing"
    flag = "" if name not in want or have == want[name] else f"   <- expected {want[name]}"
    if flag or (have == "missing" and name not in ("liger-kernel",)):
        bad.append(name)
    print(f"{name:16} {have}{flag}")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, python {sys.version.split()[0]}")
if not torch.cuda.is_available():
    sys.exit("no CUDA GPU visible")
print("GPU:", torch.cuda.get_device_name(0))
if bad:
    sys.exit(f"missing or other versions: {', '.join(bad)} (see HANDOFF.md for the wheel list)")
import trl.trainer.sft_trainer, workers.training.train  # noqa: E401,F401  (imports resolve before the long part)
EOF

# 3. The anchor configuration: DESIGN.md's measured shape (8 x 2 rows), without Liger.
ANCHOR=/tmp/gpu_train_check_8x2.yaml
sed -e 's/^  batch_size: .*/  batch_size: 8/' -e 's/^  grad_accum: .*/  grad_accum: 2/' -e 's/^  liger: .*/  liger: false/' \
  workers/training/configs/default.yaml > "$ANCHOR"
FLEX=/tmp/gpu_train_check_flex.yaml
sed -e 's/^  attention: .*/  attention: flex_attention/' workers/training/configs/default.yaml > "$FLEX"

# 4. The runs.
# Order: default product run, plain loop, anchor, flex. Each result lands in $RESULTS at once, so a run cut by the
# time limit still reports what finished.
rm -f "$RESULTS"
timeout 225 "$PY" -m workers.training.bench --size mini --steps 30 --plain qlora-nf4 --product-steps 12 \
  --config workers/training/configs/default.yaml "$ANCHOR" "$FLEX" --out "$RESULTS" > /dev/null \
  || echo "bench stopped early (exit $?): the table shows the runs that finished"

# 5. The figures.
[ -s "$RESULTS" ] || { echo "no run finished; see the messages above"; exit 1; }
"$PY" - "$RESULTS" <<'EOF'
import json
import sys

report = json.load(open(sys.argv[1]))
print(f"\n{report['device']}  ({report['memory']})")
print(f"{'trainer':26} {'config':26} {'method':13} {'shape':64} {'tokens/s':>9} {'pad eff':>7} {'peak GB':>8} {'MFU':>6}")
for run in report["runs"]:
    config = str(run.get("config", "-")).rsplit("/", 1)[-1]
    if "error" in run:
        print(f"{run['trainer']:26} {config:26} FAILED: {run['error']}")
        continue
    mfu = f"{run['mfu']:.1%}" if run.get("mfu") is not None else "-"
    shape = run["shape"] + (", liger" if run.get("liger") else "")
    print(
        f"{run['trainer']:26} {config:26} {run['method']:13} {shape:64} {run['tokens_per_s']:>9,.0f} "
        f"{run['padding_efficiency']:>7.3f} {run['peak_mem_gb']:>8.2f} {mfu:>6}"
    )
print(f"\nfull JSON: {sys.argv[1]}")
EOF
echo "took $(( $(date +%s) - started )) s"
