#!/usr/bin/env bash
# Quick start, main job: set up, build a sample clip from real material available offline (a real
# smiling-face video with a synthesised sentence), and analyse it: emotion label, reasoning and
# the clues behind them (faces, action units, tone, transcript), with the offline LLM.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
.venv/bin/emotion-llama sample samples/sample.mp4
.venv/bin/emotion-llama analyze samples/sample.mp4 --json samples/sample.json
