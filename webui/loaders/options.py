"""One typed options schema per loader, and everything derived from it.

A loader declares its options once: a `LoaderOptions` subclass whose fields are made
with `option()`.  The type (with its range or choices) validates the value wherever it
comes from; `option()` adds the help text, the command-line flag, who may set it and
the Model tab control.  From those declarations come:

- the command-line flags (`add_flags`, called by cli.py),
- the settings.yaml keys and their validation (`flat_model`, the base of Settings),
- the per-model settings keys and the admin API's load fields (`flat_model` with
  optional values, the base of ModelSettings),
- the Model tab's controls (webui/ui/loader_controls.py).

So adding an option is one field in one schema.  Loaders share one flat namespace, as
Text Generation WebUI's flags do: two loaders may both declare `cpu`, but then they
must declare it identically (`merged_specs` refuses a mismatch).
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, create_model
from pydantic.fields import FieldInfo

# Who may set an option:
# - "model": everyone: flag, settings.yaml, per-model settings, admin API, Model tab.
# - "server": a flag or settings.yaml only (a folder on the server, say): a request
#   must never choose where the server writes.
# - "command_line": the flag only, shown read-only in the Model tab.  For switches that
#   run code from a model folder (docs/SECURITY.md): a settings file can be written by the
#   app itself and by whoever can write user_data/, a command line only by the operator.
Scope = Literal["model", "server", "command_line"]
Control = Literal["checkbox", "radio", "dropdown", "number", "textbox"]

_META_KEY = "webui_option"
MAX_GIB = float(1 << 20)


def split_commas(value: object, expected: str = "expected GiB per GPU, comma-separated, e.g. 20,7") -> object:
    """'20, 7' -> (20.0, 7.0) and [20, 7] -> (20, 7): the one parser of a per-GPU list, for
    flags, settings.yaml, per-model files, API bodies and the Model tab's text box."""
    if isinstance(value, str):
        if not value.strip():
            return ()
        try:
            return tuple(float(part) for part in value.split(","))
        except ValueError:
            raise ValueError(expected) from None
    return tuple(value) if isinstance(value, list) else value


def _to_path(value: object) -> object:
    # settings.yaml and argparse give strings; the settings are strict about types.
    return Path(value) if isinstance(value, str) else value


# Reusable constrained types: a constraint lives in the type, so every surface that
# copies the type (settings, per-model, API) validates the same way.
GiB = Annotated[float, Field(gt=0, le=MAX_GIB, allow_inf_nan=False)]
GiBList = Annotated[tuple[GiB, ...], BeforeValidator(split_commas), Field(max_length=64)]
Folder = Annotated[Path, BeforeValidator(_to_path)]


@dataclass(frozen=True)
class OptionSpec:
    """One option as the surfaces see it."""

    name: str
    annotation: Any  # the type with its constraints (Annotated), ready to reuse
    default: Any
    help: str
    flag: str
    const_flags: tuple[tuple[str, Any], ...]  # ("--bf16", "bf16"): a flag for one fixed value
    scope: Scope
    control: Control | None  # None: not shown in the Model tab
    label: str
    group: str  # which row of the Model tab
    excludes: str | None  # an option that cannot be on together with this one (8-bit / 4-bit)

    @property
    def kind(self) -> Any:
        """The type without None and constraints: bool, float, tuple, Path or a Literal."""
        return value_type(self.annotation)

    @property
    def choices(self) -> tuple[Any, ...] | None:
        kind = self.kind
        return typing.get_args(kind) if typing.get_origin(kind) is Literal else None

    @property
    def shown(self) -> bool:
        return self.scope != "server"


class Availability(BaseModel):
    """What this install can do for one option: fewer choices, or a reason it cannot be used."""

    choices: tuple[Any, ...] | None = None
    problem: str | None = None  # the option cannot be used here: its control is disabled
    note: str | None = None  # it works, but the user should know something first (slow here, say)


class LoaderOptions(BaseModel):
    """Base of every loader's options schema.  An instance is what `Loader.load` gets."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        # Check the declarations when the class is defined, not when a user first
        # opens the Model tab.
        super().__pydantic_init_subclass__(**kwargs)
        specs = cls.specs()  # refuses a field not made with option()
        names = {spec.name for spec in specs}
        for spec in specs:
            if spec.excludes is not None and spec.excludes not in names:
                raise TypeError(f"{cls.__name__}.{spec.name} excludes an unknown option {spec.excludes!r}")
            if spec.shown and spec.control is None:
                raise TypeError(f"{cls.__name__}.{spec.name} is shown in the Model tab but has no control")

    @classmethod
    def specs(cls) -> tuple[OptionSpec, ...]:
        return tuple(spec_of(name, info) for name, info in cls.model_fields.items())

    @classmethod
    def settable(cls) -> frozenset[str]:
        """What the Model tab, an API request or a saved per-model entry may change."""
        return frozenset(spec.name for spec in cls.specs() if spec.scope == "model")

    @classmethod
    def availability(cls) -> dict[str, Availability]:
        """Per option, what this machine cannot do (checked when the Model tab is built)."""
        return {}

    def summary(self) -> str:
        """A few words for the status line ("4-bit nf4"); empty when nothing is notable."""
        return ""


def option(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    const_flags: dict[str, Any] | None = None,
    scope: Scope = "model",
    control: Control | None = None,
    label: str | None = None,
    group: str = "main",
    excludes: str | None = None,
) -> Any:
    """A schema field.  `flag` defaults to --the-name (Text Generation WebUI spells a
    few with underscores: say so); `control` defaults from the type; `label` to the
    flag without dashes."""
    meta = {
        "flag": flag, "const_flags": tuple((const_flags or {}).items()), "scope": scope, "control": control,
        "label": label, "group": group, "excludes": excludes,
    }
    # json_schema_extra keeps it with the field; the plain values also document the
    # option in the JSON schema of the loader's model.
    return Field(default, description=help, json_schema_extra={_META_KEY: meta})


def value_type(annotation: Any) -> Any:
    """Strip Annotated and `| None` off a field's annotation."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            arms = [arm for arm in typing.get_args(annotation) if arm is not type(None)]
            if len(arms) != 1:
                raise TypeError(f"an option must have one type (or that type | None), not {annotation}")
            annotation = arms[0]
        else:
            return annotation


def _default_control(kind: Any) -> Control | None:
    if kind is bool:
        return "checkbox"
    if typing.get_origin(kind) is Literal:
        return "radio" if len(typing.get_args(kind)) <= 4 else "dropdown"
    if kind in (int, float):
        return "number"
    if typing.get_origin(kind) is tuple:
        return "textbox"
    return None  # a Path, say: no control, it is not the browser's to choose


def spec_of(name: str, info: FieldInfo) -> OptionSpec:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    meta = extra.get(_META_KEY)
    if not isinstance(meta, dict):
        raise TypeError(f"loader option {name!r} must be declared with option()")
    annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    flag = meta["flag"] or "--" + name.replace("_", "-")
    kind = value_type(info.annotation)
    return OptionSpec(
        name=name, annotation=annotation, default=info.default, help=info.description or "", flag=flag,
        const_flags=meta["const_flags"], scope=meta["scope"], control=meta["control"] or _default_control(kind),
        label=meta["label"] or flag.removeprefix("--"), group=meta["group"], excludes=meta["excludes"],
    )


def merged_specs(schemas: Iterable[type[LoaderOptions]]) -> tuple[OptionSpec, ...]:
    """Every option of these schemas once, in declaration order.  A name declared by
    two loaders must mean the same in both; two options may never share a flag."""
    by_name: dict[str, OptionSpec] = {}
    flags: dict[str, str] = {}
    for schema in schemas:
        for spec in schema.specs():
            known = by_name.get(spec.name)
            if known is not None and known != spec:
                raise TypeError(f"option {spec.name!r} is declared differently by two loaders")
            by_name[spec.name] = spec
            for flag in (spec.flag, *(f for f, _ in spec.const_flags)):
                if flags.setdefault(flag, spec.name) != spec.name:
                    raise TypeError(f"flag {flag} belongs to both {flags[flag]!r} and {spec.name!r}")
    return tuple(by_name.values())


def flat_model(
    name: str, schemas: Sequence[type[LoaderOptions]], *, scopes: Iterable[Scope] = ("model", "server", "command_line"),
    optional: bool = False, config: ConfigDict | None = None,
) -> type[BaseModel]:
    """A pydantic model with one field per option of `schemas` in `scopes`: same type,
    same constraints.  `optional`: every field `T | None = None` ("not set here")."""
    wanted = set(scopes)
    fields: dict[str, Any] = {}
    for spec in merged_specs(schemas):
        if spec.scope not in wanted:
            continue
        if optional:
            fields[spec.name] = (spec.annotation | None, Field(None, description=spec.help))
        else:
            fields[spec.name] = (spec.annotation, Field(spec.default, description=spec.help))
    return create_model(name, __config__=config, **fields)


# -- command-line flags -------------------------------------------------------------

def add_flags(group: argparse._ArgumentGroup, schemas: Sequence[type[LoaderOptions]]) -> None:
    """One flag per option (plus its fixed-value aliases); dest is the option's name, so
    parse_flags() hands Settings the values under their settings.yaml keys."""
    for spec in merged_specs(schemas):
        help_text = spec.help.replace("%", "%%")  # argparse formats help with %
        if spec.kind is bool:
            # Off by default: a plain switch; on by default: --x / --no-x.
            action = "store_true" if spec.default is False else argparse.BooleanOptionalAction
            group.add_argument(spec.flag, action=action, dest=spec.name, help=help_text)
        elif spec.choices is not None:
            group.add_argument(spec.flag, choices=list(spec.choices), dest=spec.name, help=help_text)
        else:
            group.add_argument(spec.flag, type=_flag_parser(spec), dest=spec.name, help=help_text)
        for alias, value in spec.const_flags:
            group.add_argument(alias, action="store_const", const=value, dest=spec.name,
                               help=f"same as {spec.flag} {value}")


def _flag_parser(spec: OptionSpec):
    # Lax validation: the flag's text becomes the option's type through the same
    # constrained type every other surface uses, so a bad value stops at the flag.
    adapter = TypeAdapter(spec.annotation)

    def parse(text: str) -> Any:
        try:
            value = adapter.validate_python(text)
        except ValidationError as exc:
            raise argparse.ArgumentTypeError(_first_message(exc)) from None
        return value

    parse.__name__ = spec.name  # argparse names the type in some of its messages
    return parse


def _first_message(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return str(err["msg"]).removeprefix("Value error, ")
