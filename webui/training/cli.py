"""`python -m webui train ...` and `python -m webui perplexity ...`: headless, for servers
and scripts.  The training flags come from TrainingSettings' fields (one schema), the
model flags from the loaders' schemas, as for the app (webui/cli.py)."""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from webui.loaders.catalog import BUILTIN_SCHEMAS
from webui.loaders.options import add_flags, value_type
from webui.training.settings import TrainingSettings

COMMANDS = ("train", "perplexity")
# TrainingSettings fields whose flag is not simply --the-name (Text Generation WebUI's words).
FLAG_NAMES = {"lora_name": "--lora", "dataset": "--data"}
PROGRESS_SECONDS = 1.0


def _model_flags(p: argparse.ArgumentParser) -> None:
    m = p.add_argument_group("model")
    m.add_argument("--model", required=True, help="model folder (inside --model-dir) to load")
    m.add_argument("--model-dir", type=Path, help="folder holding the models (default: models/)")
    m.add_argument("--user-data-dir", type=Path, help="folder for everything you create (default: user_data/)")
    m.add_argument("--settings", type=Path, dest="settings_path", help="settings YAML (loader options)")
    add_flags(m, BUILTIN_SCHEMAS)


def _settings_flags(group: argparse._ArgumentGroup) -> None:
    """One flag per TrainingSettings field; the schema validates the values."""
    for name, info in TrainingSettings.model_fields.items():
        flag = FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
        kind = value_type(info.annotation)
        required = name == "lora_name"  # the rest: the schema says what is missing (resume needs none)
        text = (info.description or "").replace("%", "%%")
        if not required:
            text += f" (default: {_shown(info.default)})"
        if typing.get_origin(kind) is Literal:
            group.add_argument(flag, dest=name, choices=typing.get_args(kind), required=required, help=text)
        else:
            group.add_argument(flag, dest=name, required=required, help=text)


def _shown(value: Any) -> str:
    return ",".join(value) if isinstance(value, tuple) else "none" if value is None else str(value)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="webui", description="Headless LoRA training and perplexity evaluation.",
                                argument_default=argparse.SUPPRESS)
    commands = p.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train", argument_default=argparse.SUPPRESS,
        help="train a LoRA adapter into user_data/loras/NAME/",
        description="Train a LoRA (QLoRA with --load-in-4bit) on a file from user_data/training/datasets/. "
                    "A checkpoint is saved every --save-steps steps and on Ctrl-C; --resume continues an unfinished "
                    "run with the settings it started with.")
    _model_flags(train)
    _settings_flags(train.add_argument_group("training"))
    train.add_argument("--resume", action="store_true", help="continue the unfinished run of --lora")
    ppl = commands.add_parser(
        "perplexity", argument_default=argparse.SUPPRESS, help="measure perplexity; prints 'perplexity: VALUE' last",
        description="Perplexity of --model (with --lora adapters) on a .txt file from user_data/training/datasets/ "
                    "or the bundled sample; the result is added to user_data/training/perplexity.json.")
    _model_flags(ppl)
    e = ppl.add_argument_group("evaluation")
    e.add_argument("--data", required=True,
                   help="a .txt file in user_data/training/datasets/, or sample-kjv-heldout (bundled)")
    e.add_argument("--lora", dest="loras", action="append", default=[], metavar="NAME",
                   help="adapter from user_data/loras/ to apply (repeat for more)")
    e.add_argument("--context", type=int, default=0, help="tokens per window (default: the model's context)")
    e.add_argument("--stride", type=int, default=0, help="tokens between window starts (default: the context)")
    return p


def main(argv: list[str]) -> int:
    args = vars(parser().parse_args(argv))
    command = args.pop("command")
    from webui.settings import SettingsError

    try:
        service = _service(args)
    except (SettingsError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return train(service, args) if command == "train" else perplexity(service, args)


def _service(args: dict[str, Any]):
    """Settings from the model flags, the model loaded, and the training service."""
    from webui.loaders.registry import default_registry
    from webui.model_manager import ModelManager
    from webui.runtime import load_options, serving_options
    from webui.settings import LoaderSettings, build_settings
    from webui.training.service import TrainingService

    keys = {"model", "model_dir", "user_data_dir", *LoaderSettings.model_fields}
    flags = {k: args.pop(k) for k in list(args) if k in keys}
    settings, warnings = build_settings(flags, args.pop("settings_path", None))
    for note in warnings:
        print(f"warning: {note}", file=sys.stderr)
    models = ModelManager(settings.model_dir, default_registry(serving_options(settings)), load_options(settings),
                          lora_dir=settings.lora_dir)
    loaded = models.load(settings.model)
    print(f"loaded {loaded.describe()}", flush=True)
    return TrainingService(models, settings.user_data_dir)


def train(service, args: dict[str, Any]) -> int:
    from webui.settings import describe_validation_error

    resume = args.pop("resume", False)
    try:
        if resume:
            if set(args) - {"lora_name"}:
                print("note: --resume continues with the settings the run started with; other training flags are "
                      "ignored", file=sys.stderr)
            service.resume(args.get("lora_name"))
        else:
            service.start(TrainingSettings(**args))
    except ValidationError as exc:
        print(f"error: {describe_validation_error(exc)}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError) as exc:  # TrainingError, DatasetError, NameRefused, ModelLent...
        print(f"error: {exc}", file=sys.stderr)
        return 2
    shown, announced = None, False
    while True:
        try:
            status = service.wait(PROGRESS_SECONDS)
        except KeyboardInterrupt:
            print(service.stop(), flush=True)
            continue
        # Said once, even when the first status seen is already the end: a short resumed
        # run on a fast machine can finish within one wait.
        if status.first_step and not announced:
            announced = True
            print(f"resumed at step {status.first_step}", flush=True)
        line = status.line()
        if line != shown:
            print(line, flush=True)
            shown = line
        if not status.running:
            return {"done": 0, "stopped": 3}.get(status.state, 1)


def perplexity(service, args: dict[str, Any]) -> int:
    try:
        if args["loras"]:
            service.models.set_loras(args["loras"])
        result, warning = service.evaluate(args["data"], args["context"], args["stride"])
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"model {result.model} ({result.dtype}), LoRA {result.loras}, data {result.data}, context {result.context}, "
          f"stride {result.stride}, {result.tokens} tokens", flush=True)
    print(f"perplexity: {result.perplexity}", flush=True)
    return 0
