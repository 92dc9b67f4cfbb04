"""What every benchmark here shares: its flags and loading the model to measure."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from webui.loaders.base import LoadedModel, LoadOptions  # noqa: E402
from webui.loaders.registry import default_registry  # noqa: E402
from webui.model_manager import ModelManager  # noqa: E402
from webui.settings import DEMO_MODEL, PROJECT_ROOT  # noqa: E402

PROMPT = "And God said, Let there be light"


def bench_parser(doc: str, rounds: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, default=PROJECT_ROOT / "models")
    parser.add_argument("--model", default=DEMO_MODEL)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=rounds)
    return parser


def load_model(args: argparse.Namespace) -> tuple[ModelManager, LoadedModel]:
    """Load the model with EOS switched off, so every side runs the full token count."""
    manager = ModelManager(args.model_dir, default_registry(), LoadOptions())
    loaded = manager.load(args.model)
    loaded.model.generation_config.eos_token_id = None
    return manager, loaded
