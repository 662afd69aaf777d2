#!/usr/bin/env bash
# One install command: system packages, torch, then vidsearch (editable, with test tools).
#   ./install.sh               CPU machine: torch 2.13.0 CPU wheel, pinned by constraints.txt
#   VIDSEARCH_GPU=1 ./install.sh   GPU machine: keeps the CUDA torch you installed first, adds faiss-gpu
#   PYTHON=.venv/bin/python ./install.sh   into a virtual environment (recommended outside these machines)
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
    # CUDA machine: the registry's Linux torch wheel is the CUDA build (a CUDA torch already installed is
    # kept); faiss-gpu builds and searches the coarse index on the GPU when it sees one
    "$PY" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null \
        || "$PY" -m pip install -q torch==2.13.0
    "$PY" -m pip install -q -e ".[dev,gpu]"
    # faiss-cpu (a core dependency) and faiss-gpu both install the `faiss` module: keep the GPU one
    "$PY" -m pip uninstall -q -y faiss-cpu || true
    "$PY" -m pip install -q --force-reinstall --no-deps faiss-gpu-cu12
    "$PY" -c "import torch, faiss; print('CUDA torch', torch.version.cuda, '| GPUs seen by torch:', torch.cuda.device_count(), '| by faiss:', faiss.get_num_gpus())"
else
    # torch first, then everything else under the pin, so no later dependency swaps in CUDA torch.
    # The CPU build comes from PyTorch's CPU wheel index (a stock index's Linux torch is the CUDA build,
    # which the pin then refuses); where that index cannot be reached, the configured index is used
    # (this project's machines keep the CPU wheel there). A CPU torch 2.13.0 already installed is kept.
    if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__ == '2.13.0+cpu' else 1)" 2>/dev/null; then
        "$PY" -m pip install -q --retries 0 --timeout 20 --index-url https://download.pytorch.org/whl/cpu torch==2.13.0+cpu \
            || "$PY" -m pip install -q torch==2.13.0
    fi
    "$PY" -c "import torch, sys; torch.version.cuda is None or sys.exit('install.sh: a CUDA torch ' + torch.__version__ + ' was installed; install the CPU build from https://download.pytorch.org/whl/cpu, or use VIDSEARCH_GPU=1')"
    "$PY" -m pip install -q -c constraints.txt -e ".[dev]"
fi
"$PY" -c "import vidsearch.cli, vidsearch.server, vidsearch.lab; print('vidsearch installed')"
# PyTriton's tritonserver (CPU) for the Triton tests and the local demo, in its own environment because it
# needs numpy<2 (~1.5 min the first time). Not fatal: the Triton tests then say why they were skipped.
"$PY" deploy/triton/local_server.py prepare || echo "warning: PyTriton could not be installed; the Triton tests will be skipped"
