#!/usr/bin/env bash
# Run the whole test suite (installs the test extras into .venv first).
# Needs Debian's chromium and firefox-esr for the browser tests: apt-get install chromium firefox-esr
# Extra arguments go to pytest, e.g. ./test.sh -k engine
set -euo pipefail
cd "$(dirname "$0")"
scripts/install.sh quant,test,gguf
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
.venv/bin/ruff check webui tests bench scripts
exec .venv/bin/python -m pytest "$@"
