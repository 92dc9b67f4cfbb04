"""Command-line flags -> a dict of the values the user actually gave.

Flag names follow Text Generation WebUI where it has one.  Every default is
argparse.SUPPRESS so that a flag left out never hides a value from settings.yaml.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

S = argparse.SUPPRESS


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="webui",
        description="A browser workbench for open-weights language models.",
        argument_default=S,
    )
    m = p.add_argument_group("model")
    m.add_argument("--model", help="model folder (inside --model-dir) to load at start")
    m.add_argument("--model-dir", type=Path, help="folder holding the models (default: models/)")
    m.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"], help="weights dtype")
    m.add_argument("--bf16", action="store_const", const="bf16", dest="dtype", help="same as --dtype bf16")
    m.add_argument("--cpu", action="store_true", help="use the CPU even if a GPU is present")
    m.add_argument("--attn-implementation", choices=["auto", "sdpa", "eager", "flash_attention_2"],
                   help="attention kernel (default auto; flash_attention_2 needs flash-attn and a GPU)")
    m.add_argument("--load-in-8bit", action="store_true", help="quantize to 8 bits on load (bitsandbytes)")
    m.add_argument("--load-in-4bit", action="store_true", help="quantize to 4 bits on load (bitsandbytes)")
    m.add_argument("--quant_type", choices=["nf4", "fp4"], help="4-bit data type (default nf4)")
    m.add_argument("--use_double_quant", action="store_true", help="4-bit: also quantize the scales")
    m.add_argument("--compute_dtype", choices=["auto", "bfloat16", "float16", "float32"],
                   help="4-bit: dtype of the matmuls (default: the model dtype)")
    m.add_argument("--gpu-split", type=gpu_split,
                   help="GiB of each GPU to use, comma-separated, e.g. 20,7 (shards the model)")
    m.add_argument("--cpu-memory", type=float, help="GiB of RAM for the layers that do not fit the GPUs")
    m.add_argument("--disk", action="store_true", help="offload what fits neither GPUs nor RAM to disk")
    m.add_argument("--disk-cache-dir", type=Path, help="disk offload folder (default user_data/cache)")
    m.add_argument("--allow-pickle", action="store_true",
                   help="allow pickle checkpoints (*.bin), which can run code when loaded")
    m.add_argument("--trust-remote-code", action="store_true",
                   help="run Python code shipped inside a model folder")
    h = p.add_argument_group("download (the only action that contacts the network)")
    h.add_argument("--download", metavar="ORG/NAME", dest="download_repo",
                   help="download a model from the Hugging Face Hub into --model-dir, then exit")
    h.add_argument("--revision", dest="download_revision", help="branch, tag or commit (default main)")
    h.add_argument("--include", dest="download_patterns", action="append", metavar="PATTERN",
                   help="only files matching this glob (repeat for more; default: safetensors + config)")
    d = p.add_argument_group("data")
    d.add_argument("--settings", type=Path, dest="settings_path",
                   help="settings YAML (default: user_data/settings.yaml if present)")
    d.add_argument("--user-data-dir", type=Path, help="folder for everything you create")
    d.add_argument("--preset", help="sampling preset to start with")
    e = p.add_argument_group("extensions")
    e.add_argument("--extensions", nargs="+", metavar="NAME",
                   help="extensions to load, in this order (folders in extensions/ or user_data/extensions/, "
                        "or installed packages)")
    e.add_argument("--extensions-dir", type=Path, help="folder of bundled extensions (default: extensions/)")
    n = p.add_argument_group("server")
    n.add_argument("--listen", action="store_true", help="listen on all interfaces (needs --gradio-auth)")
    n.add_argument("--listen-host", help="address to listen on (default 127.0.0.1)")
    n.add_argument("--listen-port", type=int, help="port (default 7860)")
    n.add_argument("--gradio-auth", help="user:pass[,user2:pass2] required to open the UI")
    n.add_argument("--gradio-auth-path", type=Path, help="file of user:pass entries, one per line")
    n.add_argument("--ssl-keyfile", type=Path, help="TLS private key, to serve HTTPS")
    n.add_argument("--ssl-certfile", type=Path, help="TLS certificate, to serve HTTPS")
    n.add_argument("--listen-without-auth", action="store_true",
                   help="DANGEROUS: serve beyond loopback with no password (trusted networks only)")
    n.add_argument("--share", action="store_true",
                   help="ask Gradio for a public share link (contacts Gradio's servers; needs --gradio-auth)")
    n.add_argument("--max-queue", type=int, help="waiting requests before new ones are refused")
    n.add_argument("--max-batch", type=int, help="requests decoded together at most (default 8)")
    n.add_argument("--max-batch-per-user", type=int,
                   help="running requests per user or API key (default: --max-batch minus 1, so one place "
                        "is always free for someone else)")
    n.add_argument("--prefix-cache-gib", type=float,
                   help="GiB kept for reusing earlier prompts' KV cache (default 1; 0 = off)")
    n.add_argument("--max-kv-gib", type=float,
                   help="GiB the running batch's KV cache may take (default: from free memory)")
    a = p.add_argument_group("API")
    a.add_argument("--api", action="store_true", help="serve the OpenAI-compatible API (/v1)")
    a.add_argument("--api-port", type=int, help="API port (default 5000)")
    a.add_argument("--api-key", help="key every API request must send (required beyond loopback)")
    a.add_argument("--admin-key", help="key for the model management endpoints")
    a.add_argument("--api-cors-origin", dest="api_cors_origins", action="append",
                   help="a web origin allowed to call the API (repeat for more); none by default")
    return p


def download_request(argv: list[str] | None = None) -> dict[str, Any] | None:
    """The --download flags, or None when no download was asked for."""
    values = vars(parser().parse_args(argv))
    if "download_repo" not in values:
        return None
    return {
        "repo_id": values["download_repo"],
        "revision": values.get("download_revision", "main"),
        "patterns": tuple(values.get("download_patterns", ())),
    }


def gpu_split(text: str) -> tuple[float, ...]:
    """'20,7' -> (20.0, 7.0): GiB per GPU, in device order."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("expected GiB per GPU, e.g. 20,7") from None
    if not values or any(not (v > 0) or v == float("inf") for v in values):
        raise argparse.ArgumentTypeError("every GPU share must be a positive number of GiB")
    return values


def parse_flags(argv: list[str] | None = None) -> tuple[dict[str, Any], Path | None]:
    """Returns (settings overrides, explicit settings file or None)."""
    values = vars(parser().parse_args(argv))
    values.pop("download_repo", None), values.pop("download_revision", None), values.pop("download_patterns", None)
    settings_path = values.pop("settings_path", None)
    for key in ("api_cors_origins", "extensions"):
        if key in values:
            values[key] = tuple(values[key])
    return values, settings_path
