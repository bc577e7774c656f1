#!/usr/bin/env bash
# Quick start, tests: set up, then lint and run every CPU test (unit and slow) as CI does.
# Inner loop: .venv/bin/pytest -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Reuse converted offline models between runs.
export EMOTION_LLAMA_CACHE=${EMOTION_LLAMA_CACHE:-$PWD/.cache/emotion-llama}
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
.venv/bin/pytest -m "not gpu" "$@"
