#!/usr/bin/env bash
# Start the web UI on http://127.0.0.1:7860 with the built-in demo model.
# First run: creates .venv and installs everything. Flags pass through:
#   ./start.sh --model my-model --listen-port 8000     (./start.sh --help lists them)
set -euo pipefail
cd "$(dirname "$0")"
# The page serves as soon as the core is installed; the GGUF engine (llama.cpp) builds
# in the background, its log in the data dir's logs/ (the Model tab shows its progress).
data_dir=user_data
for ((i = 1; i <= $#; i++)); do
    case "${!i}" in
        --user-data-dir=*) data_dir="${!i#*=}" ;;
        --user-data-dir) j=$((i + 1)); data_dir="${!j:-user_data}" ;;
    esac
done
export WEBUI_DATA_DIR="$data_dir"
WEBUI_GGUF_LATER="${WEBUI_GGUF_LATER:-1}" scripts/install.sh "${WEBUI_EXTRAS:-quant,gguf}"
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
exec "${WEBUI_VENV:-.venv}/bin/python" -m webui "$@"
