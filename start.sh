#!/usr/bin/env bash
# Start the web UI on http://127.0.0.1:7860 with the built-in demo model.
# First run: creates .venv and installs everything. Flags pass through:
#   ./start.sh --model my-model --listen-port 8000     (./start.sh --help lists them)
set -euo pipefail
cd "$(dirname "$0")"
scripts/install.sh "${WEBUI_EXTRAS:-quant,gguf}"
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
exec .venv/bin/python -m webui "$@"
