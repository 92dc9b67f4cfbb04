"""`python -m webui train ...` and `python -m webui perplexity ...`: headless, for servers
and scripts.  The training flags come from TrainingSettings' fields (one schema), the
model flags from the loaders' schemas, as for the app (webui/cli.py)."""

from __future__ import annotations

import argparse
import filecmp
import shutil
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
        if name == "dataset":  # the command line also takes a path (adopt_data)
            text = "the path of a data file (copied into user_data/training/datasets/), or a " + text
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
        description="Train a LoRA (QLoRA with --load-in-4bit) on --data: a file's path (copied into "
                    "user_data/training/datasets/) or the name of one there. "
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
                   help="a .txt file: its path (copied into user_data/training/datasets/), the name of one there, "
                        "or sample-kjv-heldout (bundled)")
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
        settings = _settings(args)
        # The data file is checked (and a path copied in) before the model loads: a
        # refusal comes at once, not after minutes of loading.
        key = "dataset" if command == "train" else "data"
        if key in args:
            args[key] = adopt_data(args[key], settings.user_data_dir, train=command == "train")
        service = _service(settings)
    except (SettingsError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return train(service, args) if command == "train" else perplexity(service, args)


def adopt_data(value: str, user_data: Path, train: bool) -> str:
    """--data as people pass it -> the name the training service lists.

    A name listed in user_data/training/datasets/ (or the bundled sample, for
    perplexity) is taken as it is.  A path to a file is copied into that folder, since
    the service reads only what it lists (webui/paths.py), and the copy is said; the
    same file already there is used as it is.  A refusal says what would work."""
    from webui.paths import is_plain_name
    from webui.training.folders import DATASET_SUFFIXES, TrainingFolders
    from webui.training.service import SAMPLE_NAME

    folders = TrainingFolders(user_data)
    suffixes = DATASET_SUFFIXES if train else (".txt",)
    listed = dict(folders.dataset_files(suffixes))
    if not train:
        listed[SAMPLE_NAME] = Path(SAMPLE_NAME)
    if value in listed:
        return value
    kinds = " or ".join(suffixes)
    names = ", ".join(sorted(listed)[:12]) or "none yet"
    what_works = (f"pass the path of a {kinds} file, or the name of one in {folders.datasets} "
                  f"(there: {names})")
    path = Path(value).expanduser()
    if not path.is_file():
        raise DataRefused(f"--data {value}: no such file, and no data file by that name; {what_works}")
    if path.suffix not in suffixes:
        raise DataRefused(f"--data {value}: a {kinds} file is needed, this is {path.suffix or 'without a suffix'}; "
                          f"{what_works}")
    if not is_plain_name(path.name):
        raise DataRefused(f"--data {value}: the file name {path.name!r} cannot be listed; rename the file to letters, "
                          "digits, spaces, '.', '-' or '_' (no leading dot)")
    folders.datasets.mkdir(parents=True, exist_ok=True)
    target = folders.datasets / path.name
    if target.resolve() == path.resolve():
        return path.name
    number = 1
    while target.exists():
        if filecmp.cmp(target, path, shallow=False):
            print(f"note: using {target} (the same as {path})", file=sys.stderr)
            return target.name
        number += 1
        target = folders.datasets / f"{path.stem}-{number}{path.suffix}"
    shutil.copyfile(path, target)
    print(f"note: copied {path} to {target}; later runs can name it --data {target.name}", file=sys.stderr)
    return target.name


class DataRefused(ValueError):
    """--data names no file the command can use."""


def _settings(args: dict[str, Any]):
    """The app's settings from the model flags (taken out of `args`)."""
    from webui.settings import LoaderSettings, build_settings

    keys = {"model", "model_dir", "user_data_dir", *LoaderSettings.model_fields}
    flags = {k: args.pop(k) for k in list(args) if k in keys}
    settings, warnings = build_settings(flags, args.pop("settings_path", None))
    for note in warnings:
        print(f"warning: {note}", file=sys.stderr)
    return settings


def _service(settings):
    """The model loaded, and the training service."""
    from webui.loaders.registry import default_registry
    from webui.model_manager import ModelManager
    from webui.runtime import load_options, serving_options
    from webui.training.service import TrainingService

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
