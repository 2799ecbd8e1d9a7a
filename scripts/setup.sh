#!/usr/bin/env bash
# Create .venv (if missing) and install expertbot into it; safe to run again, and fast when nothing changed.
#
#   bash scripts/setup.sh          # runtime dependencies:  pip install -e .
#   bash scripts/setup.sh --dev    # plus test and lint tools: pip install -e ".[dev]"
#
# PyTorch is installed first, pinned, so that nothing later resolves `torch` to a CUDA build from the registry
# (several GB); where a local CPU wheel of torch 2.13.0 is configured for pip, that is the one it takes.
# Set PYTHON to choose the interpreter that creates .venv (default: python3, which must be >= 3.11).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

TORCH_VERSION=2.13.0
PYTHON=${PYTHON:-python3}
VENV=.venv
VPY=$VENV/bin/python

mode=prod
for arg in "$@"; do
  case "$arg" in
    --dev) mode=dev ;;
    -h | --help)
      sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "setup.sh: unknown argument: $arg (usage: setup.sh [--dev])" >&2
      exit 2
      ;;
  esac
done

die() {
  echo "setup.sh: $*" >&2
  exit 1
}

need_python() { # $1: interpreter; fails unless it is Python >= 3.11
  "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && return 0
  local version
  version=$("$1" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || echo "not runnable")
  die "expertbot needs Python >= 3.11, but $1 is $version; install Python 3.11+ or set PYTHON=/path/to/python3.11"
}

# --- the virtual environment ------------------------------------------------------------------------------------
if [[ ! -x $VPY ]]; then
  command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found; install Python >= 3.11 or set PYTHON"
  need_python "$PYTHON"
  echo "setup: creating $VENV with $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
  "$PYTHON" -m venv "$VENV" || die "could not create $VENV (on Debian/Ubuntu: apt-get install python3-venv)"
fi
need_python "$VPY"

# One setup at a time (run.sh and test.sh may start together).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$VENV/.expertbot-setup.lock"
  flock 9
fi

# --- skip everything when this pyproject.toml is already installed in this mode ---------------------------------
hash=$("$VPY" -c 'import hashlib; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest()[:16])')
stamp=$VENV/.expertbot-installed-$hash
if [[ -e $stamp-$mode || ($mode == prod && -e $stamp-dev) ]]; then
  exit 0 # a dev install includes everything a prod one has
fi

# Quiet, but errors and real warnings still show; the filter drops only pip's notes about configured local
# package folders that do not exist (harmless, one per package). pipefail keeps pip's exit status.
pip_install() {
  { "$VPY" -m pip install --quiet --no-input --progress-bar off "$@" 2>&1 1>&3 3>&- |
    sed "/^WARNING: Location 'file:.*' is ignored: it is neither a file nor a directory\.\$/d" >&2; } 3>&1
}

installed_torch() {
  "$VPY" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true
}

# --- torch first, pinned ---------------------------------------------------------------------------------------
torch=$(installed_torch)
if [[ ${torch%%+*} != "$TORCH_VERSION" ]]; then
  echo "setup: installing torch==$TORCH_VERSION"
  pip_install "torch==$TORCH_VERSION" || die "installing torch==$TORCH_VERSION failed (see above)"
  torch=$(installed_torch)
  [[ ${torch%%+*} == "$TORCH_VERSION" ]] || die "expected torch $TORCH_VERSION after installing it, found '${torch:-none}'"
fi

# --- the project; a constraint keeps pip from swapping the torch build installed above -------------------------
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "torch==$torch" >"$constraints"

target=.
[[ $mode == dev ]] && target=".[dev]"
echo "setup: installing expertbot ($mode: pip install -e \"$target\")"
pip_install --constraint "$constraints" -e "$target" || die "installing expertbot failed (see above)"

after=$(installed_torch)
[[ $after == "$torch" ]] || die "installing expertbot replaced torch $torch with $after; reinstall torch==$TORCH_VERSION"

rm -f "$VENV"/.expertbot-installed-*
touch "$stamp-$mode"
echo "setup: done ($VENV, torch $torch)"
