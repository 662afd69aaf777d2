#!/usr/bin/env bash
# One install command: system packages, torch, then vidsearch (editable, with test tools).
#   ./install.sh               CPU machine: torch 2.13.0 CPU wheel, pinned by constraints.txt
#   VIDSEARCH_GPU=1 ./install.sh   GPU machine: keeps the CUDA torch you installed first, adds faiss-gpu
set -euo pipefail
cd "$(dirname "$0")"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

$SUDO apt-get update -qq
# ffmpeg: decoding; flite: test speech; tesseract: on-screen text; fonts: drawtext; chromium: UI browser test
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg flite tesseract-ocr tesseract-ocr-eng \
    fonts-dejavu-core chromium >/dev/null

PY=${PYTHON:-python3}
if [ "${VIDSEARCH_GPU:-0}" = "1" ]; then
    "$PY" -m pip install -q -e ".[dev,gpu]"
else
    # torch first, then everything else under the pin, so no later dependency swaps in CUDA torch
    "$PY" -m pip install -q torch==2.13.0
    "$PY" -m pip install -q -c constraints.txt -e ".[dev]"
fi
"$PY" -c "import vidsearch.cli, vidsearch.server, vidsearch.lab; print('vidsearch installed')"
