#!/usr/bin/env bash
# Quick start, main job: set up, then show the paper model's layout and run the tiny model end
# to end (prompt rendering, one training step, greedy generation). Needs no download.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
.venv/bin/emotion-llama inspect --preset paper
.venv/bin/emotion-llama smoke --preset tiny
