#!/usr/bin/env bash
# The GPU check, in one go (under 8 minutes on one H100/H200-class GPU):
# bf16 BERT-base fine-tuning in our loop against transformers' Trainer (tokens/s,
# MFU), SDPA against eager attention, torch.compile on and off, 1 against N
# trials packed on the GPU, and a forced out-of-memory that must end FAIL oom.
# Nothing is downloaded but Python packages: the model is built from a config.
#
# Usage, from a fresh checkout on a CUDA machine:
#   benchmarks/gpu_check.sh                 # figures in gpu-check-results/
#   benchmarks/gpu_check.sh --cpu-smoke     # the same code paths, tiny model, CPU
# GPU_CHECK_PYTHON=path/to/python uses that interpreter instead of making a venv;
# GPU_CHECK_OUT sets the results folder. Other arguments go to benchmarks/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
OUT="${GPU_CHECK_OUT:-gpu-check-results}"
mkdir -p "$OUT"

if [ -n "${GPU_CHECK_PYTHON:-}" ]; then
    PY="$GPU_CHECK_PYTHON"
else
    VENV=".gpu-check-venv"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    PY="$VENV/bin/python"
    "$PY" -m pip install --quiet --upgrade pip
    # The PyPI build of this torch is a CUDA one on Linux x86_64.
    "$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install --quiet "torch==2.13.0"
    "$PY" -m pip install --quiet -e ".[worker]" "accelerate>=1.0,<2"
fi

if [ "${1:-}" != "--cpu-smoke" ]; then
    "$PY" - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"no CUDA device visible to torch {torch.__version__}; use --cpu-smoke to test the script")
print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
PY
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv || true
fi

# What is left of the 8 minutes goes to the measurements (each section is
# skipped once the budget is spent, so the figures so far are still written).
LEFT=$(( 470 - ($(date +%s) - START) ))
LEFT=$(( LEFT < 90 ? 90 : LEFT ))  # a slow install: still measure what fits, a little late
BUDGET=$(( LEFT > 120 ? LEFT - 90 : 30 ))
timeout --signal=TERM "$LEFT" "$PY" benchmarks/gpu_check.py --out "$OUT" --budget-s "$BUDGET" "$@"
echo "results: $OUT/gpu_check.json and $OUT/gpu_check.md ($(( $(date +%s) - START )) s in all)"
