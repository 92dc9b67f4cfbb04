#!/usr/bin/env bash
# Build the GGUF engine (llama-cpp-python, which compiles llama.cpp) into the venv, and
# record how it went where the app looks (webui/loaders/gguf_build.py):
#   <data dir>/logs/gguf-build.state   "building|done|failed <unix time>"
#   <data dir>/logs/gguf-build.log     the build's output
# scripts/install.sh starts it in the background when WEBUI_GGUF_LATER=1 (./start.sh
# does), so the page serves while it compiles.  WEBUI_GGUF_BUILD_CMD replaces the build
# step itself (the tests use a stub; the real one is pip).
set -uo pipefail
cd "$(dirname "$0")/.."

venv="${WEBUI_VENV:-.venv}"
logs="${WEBUI_DATA_DIR:-user_data}/logs"
mkdir -p "$logs"
state="$logs/gguf-build.state"
log="$logs/gguf-build.log"
stamp="$venv/.webui-installed"

echo "building $(date +%s) $$" > "$state"
{
    echo "== GGUF engine build started $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    if [ -n "${WEBUI_GGUF_BUILD_CMD:-}" ]; then
        bash -c "$WEBUI_GGUF_BUILD_CMD"
    else
        # On CPUs with AMX, llama.cpp's native build segfaults on quantized files: name the
        # instruction sets instead, AMX left out (webui/loaders/llama_build.py says why).
        cpu_args="$("$venv/bin/python" -m webui.loaders.llama_build)"
        if [ -n "$cpu_args" ] && [[ "${CMAKE_ARGS:-}" != *GGML_NATIVE* ]]; then
            export CMAKE_ARGS="${CMAKE_ARGS:+$CMAKE_ARGS }$cpu_args"
            echo "(this CPU has AMX: llama.cpp is built with CMAKE_ARGS=$CMAKE_ARGS)"
        fi
        # The gguf extra's own requirements (pyproject.toml), not the project again: the
        # running app's files are left as they are.
        mapfile -t wanted < <(sed -n 's/^gguf = \[\(.*\)\]$/\1/p' pyproject.toml | tr -d '" ' | tr ',' '\n')
        "$venv/bin/python" -m pip --disable-pip-version-check install "${wanted[@]}" &&
            "$venv/bin/python" -c 'from webui.loaders.gguf_convert import fetch_converter; fetch_converter()'
    fi
} >> "$log" 2>&1
status=$?
if [ "$status" -eq 0 ]; then
    # The stamp gains gguf (when it still describes this pyproject.toml): later starts skip it.
    if [ -f "$stamp" ]; then
        read -r old_hash old_extras < "$stamp" || true
        if [ "$old_hash" = "$(sha256sum pyproject.toml | cut -d' ' -f1)" ]; then
            case ",$old_extras," in *",gguf,"*) ;; *) echo "$old_hash ${old_extras:+$old_extras,}gguf" > "$stamp" ;; esac
        fi
    fi
    echo "== done $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$log"
    echo "done $(date +%s)" > "$state"
else
    echo "== failed (exit $status) $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$log"
    echo "failed $(date +%s)" > "$state"
fi
exit "$status"
