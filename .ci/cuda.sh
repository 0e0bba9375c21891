#!/usr/bin/env bash
# CI: every CUDA kernel of divest compiles to PTX with NVRTC (no GPU or driver needed).
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -q 'nvidia-cuda-nvrtc-cu12>=12.0'
python .ci/cuda_ptx.py sm_70 sm_80 sm_90
