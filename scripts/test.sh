#!/usr/bin/env bash
# Everything CI checks: lint, format, types, tests. Arguments go to pytest (e.g. -k stack, -x, -m "not slow").
# Runs every step, then exits non-zero if any failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh --dev

export VIRTUAL_ENV="$PWD/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"

failed=()
step() { # $1: label; the rest: the command
  local label=$1 started rc=0
  shift
  printf '\n==> %s\n' "$label"
  started=$SECONDS
  "$@" || rc=$?
  if ((rc == 0)); then
    printf '==> %s: ok (%ds)\n' "$label" $((SECONDS - started))
  else
    printf '==> %s: FAILED with exit code %d (%ds)\n' "$label" "$rc" $((SECONDS - started))
    failed+=("$label")
  fi
}

step "ruff check" ruff check .
step "ruff format --check" ruff format --check .
step "mypy" mypy .
step "pytest" python -m pytest -q "$@"

if ((${#failed[@]})); then
  joined=$(printf ', %s' "${failed[@]}")
  printf '\nFAILED: %s\n' "${joined:2}" >&2
  exit 1
fi
printf '\nall checks passed\n'
