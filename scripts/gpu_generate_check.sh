#!/usr/bin/env bash
# Generation throughput on a CUDA GPU (issue 16): a random-weight model of Phi-3-mini's shape served through the
# BatchScheduler that `phi3` uses, 1 stream vs 8 streams at once, 128 new tokens each, in bf16 then 4-bit NF4.
# Needs torch (CUDA), transformers, tokenizers, safetensors, bitsandbytes, accelerate on the path; no LangChain,
# pydantic or Redis. About 2 minutes on an H200 (bf16 ~30 s; 4-bit ~90 s, most of it saving and reloading 7.6 GB).
# Figures land in $OUT (or ./gpu-out) as bf16.json and 4bit.json; the log says "target met" or not per precision.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
python - <<'PY'
import torch, transformers, bitsandbytes
print("torch", torch.__version__, "transformers", transformers.__version__, "bitsandbytes", bitsandbytes.__version__)
print("gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NONE")
PY
status=0
for precision in bf16 4bit; do
  timeout 150 python -m agent.models.bench_generate --size mini --precision "$precision" --runs 2 --tokens 128 \
    --json "$OUT/$precision.json" > "$OUT/$precision.log" 2>&1
  rc=$?
  grep -v "Loading weights\|Writing model shards" "$OUT/$precision.log" | grep -E "^(bf16|4bit|saved)|Error|error" | head -20
  if [ $rc -ne 0 ]; then echo "$precision: exit $rc (see $OUT/$precision.log)"; tail -20 "$OUT/$precision.log"; status=1; continue; fi
  python - "$OUT/$precision.json" "$precision" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))[sys.argv[2]]
ratio = min(data["throughput_ratio"])
one = max(r["tokens_per_s"] for r in data["one"]); many = max(r["tokens_per_s"] for r in data["together"])
verdict = "target met" if ratio >= 5 else "target NOT met"
print(f"{sys.argv[2]}: 1 stream {one} tok/s, 8 streams {many} tok/s aggregate, x{ratio} (>= 5 wanted): {verdict}")
PY
done
exit $status
