"""The Model tab's loader option controls, made from the loaders' option schemas.

Each option the schemas let a user see gets one control: editable for per-model
options (scope "model"), read-only for command-line-only ones.  The editable controls,
in schema order, are the Model tab's event inputs, so the values they send line up
with ModelSettings' loader fields.  Every value is validated again by ModelSettings:
Gradio does not check what a client sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from webui.loaders.options import Availability, LoaderOptions, OptionSpec, merged_specs


@dataclass(frozen=True)
class OptionControl:
    spec: OptionSpec
    component: Any

    @property
    def editable(self) -> bool:
        return self.spec.scope == "model"

    def show(self, value: Any) -> Any:
        """An option's value -> what its control displays."""
        if self.spec.control == "textbox" and isinstance(value, tuple):
            return ",".join(f"{v:g}" for v in value)
        if self.spec.control == "number" and value is None:
            return 0  # an optional number: 0 shows "not set"
        return value

    def read(self, value: Any) -> Any:
        """What the control sent -> the option value (None: "not set"), unvalidated."""
        if self.spec.control == "textbox" and isinstance(value, str) and not value.strip():
            return None
        if self.spec.control == "number" and self.spec.default is None and value == 0:
            return None
        return value  # a text box's "20,7" is parsed by the option's own type


class OptionControls:
    """Builds the controls group by group, inside the caller's layout."""

    def __init__(self, schemas: Sequence[type[LoaderOptions]], base: Any):
        self._specs = [spec for spec in merged_specs(schemas) if spec.shown]
        self._base = base
        self._availability: dict[str, Availability] = {}
        for schema in schemas:
            self._availability.update(schema.availability())
        self._built: dict[str, OptionControl] = {}

    def base_value(self, spec: OptionSpec) -> Any:
        return getattr(self._base, spec.name, spec.default)

    def groups(self) -> list[str]:
        return list(dict.fromkeys(spec.group for spec in self._specs))

    def render(self, group: str) -> list[OptionControl]:
        """Create the controls of `group` (in the current Gradio context)."""
        made = []
        for spec in self._specs:
            if spec.group == group and spec.name not in self._built:
                control = OptionControl(spec, self._component(spec))
                self._built[spec.name] = control
                made.append(control)
        return made

    def controls_of(self, group: str) -> list[Any]:
        """The components of `group` (built already)."""
        return [c.component for name, c in self._built.items() if c.spec.group == group]

    def groups_of(self, schema: type[LoaderOptions] | None) -> set[str]:
        """The groups with an option of `schema` (a loader's options): the ones to show
        for its models (None: every group)."""
        if schema is None:
            return set(self.groups())
        names = {spec.name for spec in schema.specs()}
        return {spec.group for spec in self._specs if spec.name in names}

    def problems(self, group: str) -> list[str]:
        """Why some controls of `group` are disabled (a missing library, say) or what to know
        before using them (no fast kernel on this CPU), once each."""
        notes = []
        for spec in self._specs:
            limits = self._availability.get(spec.name)
            if spec.group == group and limits is not None:
                notes += [text for text in (limits.problem, limits.note) if text]
        return list(dict.fromkeys(notes))

    @property
    def editable(self) -> list[OptionControl]:
        """The editable controls in schema order: the event inputs."""
        missing = [spec.name for spec in self._specs if spec.name not in self._built]
        if missing:
            raise RuntimeError(f"loader options without a control: {missing}")
        return [self._built[spec.name] for spec in self._specs if self._built[spec.name].editable]

    def values(self, sent: Sequence[Any]) -> dict[str, Any]:
        """The editable controls' values, as options (None: not set)."""
        return {control.spec.name: control.read(value) for control, value in zip(self.editable, sent, strict=True)}

    def position(self, name: str) -> int | None:
        """Where option `name` is among the editable controls (the event inputs), if there."""
        return next((i for i, control in enumerate(self.editable) if control.spec.name == name), None)

    def shown(self, saved: Any) -> list[Any]:
        """What the editable controls show for a model's saved settings (None: the base)."""
        out = []
        for control in self.editable:
            value = getattr(saved, control.spec.name, None)
            out.append(control.show(self.base_value(control.spec) if value is None else value))
        return out

    def _component(self, spec: OptionSpec) -> Any:
        limits = self._availability.get(spec.name, Availability())
        value = OptionControl(spec, None).show(self.base_value(spec))
        common: dict[str, Any] = {"label": spec.label, "info": spec.help}
        if spec.scope == "command_line":
            # Shown, never settable here: only the command line can enable it (docs/SECURITY.md).
            common.update(interactive=False, info=f"command line only ({spec.flag})")
        elif limits.problem:
            common["interactive"] = False
        choices = list(limits.choices or spec.choices or ())
        if spec.control == "checkbox":
            # Room for its label beside number boxes in the same row (not a sliver).
            return gr.Checkbox(value, min_width=220, **common)
        if spec.control == "radio":
            return gr.Radio(choices, value=value, **common)
        if spec.control == "dropdown":
            # No fixed choices (a file of the model's folder): the tab fills them per model;
            # whatever is sent is checked again by the option's type and the loader's listing.
            return gr.Dropdown(choices, value=value, allow_custom_value=not choices, **common)
        if spec.control == "number":
            if spec.default is None:
                common["info"] = f"{spec.help} (0: not set)"
            if spec.kind is int:  # whole numbers arrive as ints, which the strict schemas want
                common["precision"] = 0
            return gr.Number(value, **common)
        if spec.control == "textbox":
            return gr.Textbox(value, max_length=200, **common)
        raise ValueError(f"option {spec.name!r}: no control of kind {spec.control!r}")
