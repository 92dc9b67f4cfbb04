#!/usr/bin/env bash
# Create .venv if missing and install the project into it, once.
#   scripts/install.sh [EXTRAS]      e.g. scripts/install.sh quant,test,gguf
# Re-runs are instant: a stamp records what was installed, and pip runs again only
# when pyproject.toml or the extras change.
#
# WEBUI_GGUF_LATER=1 (./start.sh sets it): the gguf extra, which compiles llama.cpp
# (minutes), is built in the background after everything else (scripts/build_gguf.sh,
# its log under the data dir's logs/), so the page can serve at once.  Unset (CI, a
# manual install), everything is installed before this script returns.
#
# torch: a torch you already have is kept (in .venv, or in the system Python, which
# .venv then sees).  Otherwise: with an NVIDIA driver present, pip's default (CUDA)
# build; without one, the CPU build.  TORCH_SPEC (default "torch==2.13.0") and
# TORCH_INDEX_URL (a wheel index for CPU builds) let you choose for your machine.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${1:-quant,gguf}"
python="${PYTHON:-python3}"
venv="${WEBUI_VENV:-.venv}"

# With WEBUI_GGUF_LATER=1, gguf is taken out of this run and built afterwards.
later=0
if [ "${WEBUI_GGUF_LATER:-0}" = 1 ]; then
    case ",$extras," in *",gguf,"*)
        later=1
        extras="$(echo ",$extras," | sed 's/,gguf,/,/g; s/^,//; s/,$//')" ;;
    esac
fi

# The background build, unless one runs now (its pid is alive) or the gguf extra is in.
start_gguf_build() {
    [ "$later" = 1 ] || return 0
    if [ -f "$stamp" ]; then
        read -r _h installed < "$stamp" || true
        case ",$installed," in *",gguf,"*) return 0 ;; esac
    fi
    local state="${WEBUI_DATA_DIR:-user_data}/logs/gguf-build.state"
    if [ -f "$state" ]; then
        read -r what _when pid < "$state" || true
        if [ "$what" = building ] && [ -n "${pid:-}" ] && kill -0 "$pid" 2>/dev/null; then
            return 0
        fi
    fi
    echo "The GGUF engine (llama.cpp) builds in the background; log: ${WEBUI_DATA_DIR:-user_data}/logs/gguf-build.log"
    WEBUI_VENV="$venv" nohup scripts/build_gguf.sh >/dev/null 2>&1 < /dev/null &
}

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "error: Python 3.10 or newer is needed ($python)" >&2
    exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "Creating $venv ..."
    if "$python" -c 'import torch' 2>/dev/null; then
        # Reuse the torch you already have (e.g. a CUDA build) instead of a new download.
        "$python" -m venv --system-site-packages "$venv"
    else
        "$python" -m venv "$venv"
    fi
fi

# The stamp holds pyproject.toml's hash and the extras installed with it; nothing to
# do when the hash matches and every requested extra is already in.
stamp="$venv/.webui-installed"
hash="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ -f "$stamp" ]; then
    read -r old_hash old_extras < "$stamp" || true
    if [ "$old_hash" = "$hash" ]; then
        missing=0
        for extra in ${extras//,/ }; do
            case ",$old_extras," in *",$extra,"*) ;; *) missing=1 ;; esac
        done
        if [ "$missing" = 0 ]; then
            start_gguf_build
            exit 0
        fi
        extras="$old_extras,$extras"
    fi
fi

pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
if ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1; then
        echo "Installing torch (CUDA build) ..."
        "${pip[@]}" install "${TORCH_SPEC:-torch}"
    else
        echo "Installing torch (CPU build) ..."
        "${pip[@]}" install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "${TORCH_SPEC:-torch==2.13.0}"
    fi
fi
echo "Installing webui[$extras] ..."
case ",$extras," in
    *",gguf,"*)
        echo "(the gguf extra compiles llama.cpp: 6-40 minutes the first time; CMAKE_ARGS picks a GPU backend, see README)"
        # On CPUs with AMX, llama.cpp's native build segfaults on quantized files: name the
        # instruction sets instead, AMX left out (webui/loaders/llama_build.py says why).
        cpu_args="$("$python" -m webui.loaders.llama_build)"
        if [ -n "$cpu_args" ] && [[ "${CMAKE_ARGS:-}" != *GGML_NATIVE* ]]; then
            export CMAKE_ARGS="${CMAKE_ARGS:+$CMAKE_ARGS }$cpu_args"
            echo "(this CPU has AMX: llama.cpp is built with CMAKE_ARGS=$CMAKE_ARGS)"
        fi ;;
esac
"${pip[@]}" install -e ".[$extras]"
case ",$extras," in
    *",gguf,"*)
        # llama.cpp's converter ships in llama-cpp-python's source package, not its
        # wheel: keep an unpacked copy in ~/.cache/webui for scripts/convert_to_gguf.py.
        "$venv/bin/python" -c 'from webui.loaders.gguf_convert import fetch_converter; fetch_converter()' ;;
esac
echo "$hash $extras" > "$stamp"
start_gguf_build
