"""Parameters tab: every sampling control, presets, the sampler order.

The controls feed one per-session state (the SamplingParams values as a dict); every
change is validated by SamplingParams and remembered in settings.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass

import re
from typing import Any

import gradio as gr

from webui.paths import NameRefused
from webui.generation.params import ParamsError, SamplingParams, make_params
from webui.runtime import Runtime
from webui.ui.common import Shared, session_id, to_params

# (group title, [(field, control kind, slider step)]); a slider's ends and every help
# text come from the SamplingParams field (its range and description), so there is one
# place that says what a parameter accepts.
GROUPS: list[tuple[str, list[tuple[str, str, float | None]]]] = [
    ("Length and randomness", [
        ("max_new_tokens", "slider", 1),
        ("thinking_budget", "number", None),
        ("truncation_length", "slider", 256),
        ("do_sample", "check", None),
        ("seed", "number", None),
        ("deterministic", "check", None),
        ("prompt_lookup_num_tokens", "number", None),
        ("temperature", "slider", 0.01),
        ("temperature_last", "check", None),
        ("dynamic_temperature", "check", None),
        ("dynatemp_low", "slider", 0.01),
        ("dynatemp_high", "slider", 0.01),
        ("dynatemp_exponent", "slider", 0.01),
        ("smoothing_factor", "slider", 0.01),
        ("smoothing_curve", "slider", 0.01),
    ]),
    ("Truncation", [
        ("top_p", "slider", 0.01),
        ("top_k", "slider", 1),
        ("min_p", "slider", 0.01),
        ("top_n_sigma", "slider", 0.01),
        ("typical_p", "slider", 0.01),
        ("epsilon_cutoff", "slider", 0.01),
        ("eta_cutoff", "slider", 0.01),
        ("tfs", "slider", 0.01),
        ("top_a", "slider", 0.01),
        ("xtc_threshold", "slider", 0.01),
        ("xtc_probability", "slider", 0.01),
    ]),
    ("Repetition", [
        ("repetition_penalty", "slider", 0.01),
        ("repetition_penalty_range", "slider", 64),
        ("presence_penalty", "slider", 0.01),
        ("frequency_penalty", "slider", 0.01),
        ("no_repeat_ngram_size", "slider", 1),
        ("dry_multiplier", "slider", 0.01),
        ("dry_base", "slider", 0.01),
        ("dry_allowed_length", "slider", 1),
        ("dry_sequence_breakers", "lines", None),
    ]),
    ("Mirostat, guidance, tokens", [
        ("mirostat_mode", "mirostat", None),
        ("mirostat_tau", "slider", 0.01),
        ("mirostat_eta", "slider", 0.01),
        ("guidance_scale", "slider", 0.05),
        ("negative_prompt", "text", None),
        ("ban_eos_token", "check", None),
        ("custom_token_bans", "ids", None),
        ("logit_bias", "bias", None),
        ("stop", "lines", None),
        ("sampler_priority", "lines", None),
    ]),
    ("Structured output", [
        ("grammar_string", "grammar", None),
        ("json_schema", "grammar", None),
    ]),
    ("Steering", [
        ("control_vectors", "vectors", None),
    ]),
]
INT_FIELDS = {name for name, info in SamplingParams.model_fields.items() if info.annotation is int}
_ESCAPES = {"\\n": "\n", "\\t": "\t", "\\\\": "\\"}


def unescape(text: str) -> str:
    r"""`\n`, `\t` and `\\` typed in a one-per-line box -> the characters (no eval)."""
    return re.sub(r"\\[nt\\]", lambda m: _ESCAPES[m.group(0)], text)


def escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


def to_control(name: str, kind: str, value: Any) -> Any:
    if kind == "lines":
        return "\n".join(escape(v) for v in value)
    if kind == "ids":
        return ", ".join(str(i) for i in value)
    if kind == "bias":
        return "\n".join(f"{key}: {bias:g}" for key, bias in value.items())
    if kind == "mirostat":
        return str(value)
    if kind == "vectors":
        return "\n".join(vector_line(v) for v in value)
    return value


def vector_line(use: Any) -> str:
    """'name: strength' and, for some layers only, ' @ first-last'."""
    use = use if isinstance(use, dict) else use.model_dump()
    layers = use.get("layers")
    strength = use["strength"]
    shown = f"{strength:g}" if float(f"{strength:g}") == strength else repr(strength)  # exact, short
    return f"{use['name']}: {shown}" + (f" @ {layers[0]}-{layers[1]}" if layers else "")


_VECTOR_LINE = re.compile(r"(?P<name>.+?)\s*:\s*(?P<strength>[-+0-9.eE]+)\s*(?:@\s*(?P<first>\d+)\s*-\s*(?P<last>\d+))?")


def vector_uses(name: str, text: str) -> list[dict[str, Any]]:
    """The Steering box's lines -> control_vectors entries (ParamsError naming the line)."""
    uses = []
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        match = _VECTOR_LINE.fullmatch(line.strip())
        try:
            strength = float(match["strength"]) if match else None
        except ValueError:
            strength = None
        if match is None or strength is None:
            raise ParamsError(f"{name}: write one 'name: strength' per line, optionally '@ first-last' layers "
                              f"(not {line.strip()[:60]!r})", param=name)
        use: dict[str, Any] = {"name": match["name"].strip(), "strength": strength}
        if match["first"] is not None:
            use["layers"] = [int(match["first"]), int(match["last"])]
        uses.append(use)
    return uses


def from_control(name: str, kind: str, value: Any) -> Any:
    """A control's value -> the SamplingParams field value (ParamsError if unreadable)."""
    if kind == "lines":
        return [unescape(line) for line in (value or "").splitlines() if line]
    if kind == "ids":
        try:
            return [int(part) for part in re.split(r"[,\s]+", value or "") if part]
        except ValueError:
            raise ParamsError(f"{name}: token ids are whole numbers separated by commas", param=name) from None
    if kind == "bias":
        bias = {}
        for line in (value or "").splitlines():
            if not line.strip():
                continue
            key, sep, amount = line.rpartition(":")
            try:
                bias[key.strip()] = float(amount)
            except ValueError:
                raise ParamsError(f"{name}: write one 'token or text: number' per line", param=name) from None
            if not sep or not key.strip():
                raise ParamsError(f"{name}: write one 'token or text: number' per line", param=name)
        return bias
    if kind == "mirostat":
        return int(value) if value in ("0", "2") else value
    if kind == "vectors":
        return vector_uses(name, value)
    if name in INT_FIELDS and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def slider_limits(name: str, step: float) -> tuple[float, float]:
    """A slider's ends: the field's validated range (SamplingParams), an exclusive end
    moved in by one step, so that every value the slider offers is valid and every
    valid value on the step grid can be chosen."""
    low = high = None
    for rule in SamplingParams.model_fields[name].metadata:
        if getattr(rule, "ge", None) is not None:
            low = rule.ge
        elif getattr(rule, "gt", None) is not None:
            low = rule.gt + step
        elif getattr(rule, "le", None) is not None:
            high = rule.le
        elif getattr(rule, "lt", None) is not None:
            high = rule.lt - step
    if low is None or high is None:
        raise RuntimeError(f"{name}: a slider needs a field with both ends of its range declared")
    return low, high


def make_control(name: str, kind: str, step, value: Any):
    info = SamplingParams.model_fields[name].description
    shown = to_control(name, kind, value)
    if kind == "slider":
        low, high = slider_limits(name, step)
        return gr.Slider(low, high, step=step, value=shown, label=name, info=info)
    if kind == "check":
        return gr.Checkbox(value=shown, label=name, info=info)
    if kind == "number":
        return gr.Number(value=shown, label=name, info=info, precision=0)
    if kind == "mirostat":
        return gr.Radio(["0", "2"], value=shown, label=name, info=info)
    lines = {"ids": 1, "text": 1, "grammar": 6, "vectors": 2}.get(kind, 3)
    hint = {"lines": " One per line; \\n for a newline.", "ids": " Comma-separated.",
            "vectors": " Made in the Steer tab, or a llama.cpp cvector file dropped there; e.g. 'calm: 1.5 @ 2-6'.",
            "bias": " One 'token id or text: bias' per line.",
            "grammar": " Checked when you leave the box; a bad one is refused with the reason."}.get(kind, "")
    return gr.Textbox(value=shown, label=name, info=info + hint, lines=lines, max_lines=30 if kind == "grammar" else None)


@dataclass
class VectorPicker:
    """Beside the Steering box: pick a saved vector, a strength and layers, and Add writes
    its line into the box (the box stays the one control of `control_vectors`)."""

    vector: gr.Dropdown
    strength: gr.Slider
    layers: gr.Textbox
    add: gr.Button


def vector_picker() -> VectorPicker:
    with gr.Row():
        vector = gr.Dropdown([], value=None, label="vector", allow_custom_value=True, scale=2,
                             elem_id="steer-pick")
        strength = gr.Slider(-4.0, 4.0, value=1.0, step=0.1, label="strength", scale=2, elem_id="steer-strength")
    with gr.Row():
        layers = gr.Textbox("", label="layers", placeholder="all, or first-last (e.g. 2-6)", scale=2,
                            elem_id="steer-layers")
        add = gr.Button("Add to Steering", scale=1, elem_id="steer-add")
    return VectorPicker(vector, strength, layers, add)


def with_vector(box: str, vector: str, strength: float, layers: str) -> str:
    """The Steering box's text with `vector`'s line added, or replaced where it is already
    there (ParamsError naming the control that is wrong)."""
    if not vector:
        raise ParamsError("vector: choose a control vector first (the Steer tab makes one)", param="control_vectors")
    span = (layers or "").strip()
    if span and not re.fullmatch(r"\d+\s*-\s*\d+", span):
        raise ParamsError("layers: leave empty for all layers, or write first-last, e.g. 2-6", param="control_vectors")
    use: dict[str, Any] = {"name": vector, "strength": round(float(strength), 3)}
    if span:
        first, last = (int(part) for part in span.split("-"))
        use["layers"] = [first, last]
    def names_it(line: str) -> bool:
        match = _VECTOR_LINE.fullmatch(line.strip())
        return match is not None and match["name"].strip() == vector

    kept = [line for line in (box or "").splitlines() if line.strip() and not names_it(line)]
    return "\n".join([*kept, vector_line(use)])


def build_controls(defaults: SamplingParams) -> tuple[dict[str, Any], VectorPicker | None]:
    controls = {}
    picker = None
    for title, fields in GROUPS:
        with gr.Accordion(title, open=title == "Length and randomness"):
            with gr.Row(equal_height=False):
                half = (len(fields) + 1) // 2
                for column in (fields[:half], fields[half:]):
                    with gr.Column():
                        for name, kind, step in column:
                            controls[name] = make_control(name, kind, step, getattr(defaults, name))
                            if kind == "vectors":
                                picker = vector_picker()
    return controls, picker


KINDS = {name: kind for _, fields in GROUPS for name, kind, _ in fields}
if set(KINDS) != set(SamplingParams.model_fields):  # a new parameter must get a control
    raise RuntimeError(f"parameters without a control: {set(SamplingParams.model_fields) - set(KINDS)}")


def control_values(params: SamplingParams) -> list[Any]:
    return [to_control(name, KINDS[name], getattr(params, name)) for name in KINDS]


def params_from_controls(values: list[Any]) -> SamplingParams:
    fields = {name: from_control(name, KINDS[name], value) for name, value in zip(KINDS, values, strict=True)}
    return make_params(fields)


def ignored_note(found: tuple[str, tuple[str, ...]] | None) -> str:
    if found is None:
        return "No model is loaded."
    who, ignored = found
    if not ignored:
        return f"**{who}** honours every parameter on this tab."
    return (f"**{who}** ignores {', '.join(f'`{name}`' for name in ignored)} (greyed out below): "
            "replies here go without them, and the API refuses them by name.")


def support_note(found: tuple[str, tuple[str, ...]] | None, determinism: str | None) -> str:
    """The ignored parameters, and what a reproducible reply may depend on (Capabilities)."""
    return ignored_note(found) + (f"\n\n{determinism}" if determinism else "")


def render(runtime: Runtime, shared: Shared, tab: gr.Tab) -> None:
    presets = runtime.presets
    start = runtime.settings.preset if runtime.settings.preset in presets.names() else None
    with gr.Row():
        preset = gr.Dropdown(presets.names(), value=start, label="Preset", elem_id="preset", scale=3)
        refresh = gr.Button("↻", scale=0, min_width=40)
        save_name = gr.Textbox(label="Save as", placeholder="preset name", scale=2, elem_id="preset-name")
        save = gr.Button("Save preset", scale=1)
        delete = gr.Button("Delete preset", scale=1, variant="stop")
        neutral = gr.Button("Neutralize samplers", scale=1)
    status = gr.Markdown(elem_id="params-status")
    support = gr.Markdown(elem_id="params-ignored")
    controls, picker = build_controls(runtime.default_params)
    shared.controls = list(controls.values())
    outputs = [shared.params, status, *shared.controls]

    def username(request: gr.Request | None) -> str | None:
        return getattr(request, "username", None)

    def applied(params: SamplingParams, message: str, request: gr.Request | None = None) -> list[Any]:
        warning = runtime.remember(params, username(request))
        return [params.model_dump(), message + (f" ({warning})" if warning else ""), *control_values(params)]

    def apply_preset(name: str, request: gr.Request):
        try:
            params = presets.load(name)
        except (NameRefused, ParamsError) as exc:
            raise gr.Error(str(exc)) from exc
        return applied(params, f"Preset **{name}** applied.", request)

    def update(request: gr.Request, current: dict, *values):
        try:
            params = params_from_controls(list(values))
        except ParamsError as exc:
            gr.Warning(f"Not applied: {exc}")
            return current, f"**Not applied:** {exc}"
        warning = runtime.remember(params, username(request))
        return params.model_dump(), warning or ""

    def restore(current: dict):
        """After a value Gradio's own checks refused (a slider past its end): the controls
        show the values in use again, not the refused one (the toast names the field)."""
        return control_values(to_params(current))

    def preset_mark(name, current: dict):
        """The preset's name, marked when the values in use differ from it."""
        try:
            same = name is not None and presets.load(name) == to_params(current)
        except (NameRefused, ParamsError):
            same = False
        return gr.Dropdown(label="Preset" if same or name is None else "Preset (modified)")

    def save_preset(name: str, current: dict):
        try:
            presets.save(name, make_params(current))
        except (NameRefused, ParamsError, OSError) as exc:
            raise gr.Error(f"Preset not saved: {exc}") from exc
        return gr.Dropdown(choices=presets.names(), value=name), f"Preset **{name}** saved."

    def delete_preset(name: str):
        try:
            presets.delete(name)
        except NameRefused as exc:
            raise gr.Error(f"{exc} (only your own presets can be deleted)") from exc
        return gr.Dropdown(choices=presets.names(), value=None), f"Preset **{name}** deleted."

    preset.input(apply_preset, preset, outputs, api_name="load_preset")
    refresh.click(lambda: gr.Dropdown(choices=presets.names()), None, preset, api_name="list_presets")
    save.click(save_preset, [save_name, shared.params], [preset, status], api_name="save_preset")
    delete.click(delete_preset, preset, [preset, status], api_name="delete_preset")
    def neutralize(current: dict, request: gr.Request):
        return applied(make_params({"max_new_tokens": make_params(current).max_new_tokens}),
                       "Samplers neutralized.", request)

    def on_load(request: gr.Request):
        """Each user starts with their own last used values."""
        params = runtime.remembered(username(request))
        owner = session_id(request)
        return [params.model_dump(), support_note(runtime.ignored_samplers(owner), runtime.determinism_note(owner)),
                *control_values(params)]

    def mark_ignored(request: gr.Request):
        """Name the parameters the model this browser tab talks to does not honour (a
        GGUF or remote backend's declared capabilities), and grey out their controls."""
        found = runtime.ignored_samplers(session_id(request))
        ignored = set(found[1]) if found else set()
        marks = {control: gr.update(elem_classes=["webui-ignored"] if name in ignored else [])
                 for name, control in controls.items()}
        return {support: support_note(found, runtime.determinism_note(session_id(request))), **marks}

    # When the tab is opened: the model may have changed since the page loaded.
    tab.select(mark_ignored, None, [support, *shared.controls], api_name="params_support", show_progress="hidden")
    neutral.click(neutralize, shared.params, outputs, api_name="neutralize_samplers")
    load_outputs = [shared.params, support, *shared.controls]
    shared.on_load.append((lambda request: dict(zip(load_outputs, on_load(request), strict=True)), load_outputs))
    # Text boxes apply when left (half-typed text would be refused); the rest at once.
    triggers = [c.blur if isinstance(c, gr.Textbox) else c.input for c in shared.controls]
    changed = gr.on(
        triggers,
        update, [shared.params, *shared.controls], [shared.params, status], api_name="set_params",
    )
    changed.failure(restore, shared.params, shared.controls, api_name="params_restore", show_progress="hidden")
    if picker is not None:
        wire_vector_picker(runtime, picker, controls["control_vectors"], update, shared, status)
    # Whatever set the values (a control, a preset, Neutralize, a model's defaults): is the
    # preset still what is in use?
    shared.params.change(preset_mark, [preset, shared.params], preset, api_name="preset_mark",
                         show_progress="hidden")



def wire_vector_picker(runtime: Runtime, picker: VectorPicker, box: gr.Textbox, update, shared: Shared,
                       status: gr.Markdown) -> None:
    """The saved vectors listed when the picker is opened; Add writes the line into the
    Steering box and applies the values as leaving the box would."""
    vectors = runtime.steer.library if runtime.steer is not None else None

    def listed():
        return gr.Dropdown(choices=vectors.names() if vectors is not None else [])

    def add(request: gr.Request, current: dict, text: str, vector: str, strength: float, layers: str, *values):
        if vector:  # a saved vector's name, checked before anything is written
            try:
                if vectors is None:
                    raise NameRefused("control vectors are not available here")
                vectors.path(vector)
            except NameRefused as exc:
                raise gr.Error(str(exc)) from exc
        try:
            text = with_vector(text, vector, strength, layers)
        except ParamsError as exc:
            gr.Warning(str(exc))
            return current, f"**Not applied:** {exc}", gr.update()
        values = [text if control is box else value for control, value in zip(shared.controls, values, strict=True)]
        params, note = update(request, current, *values)
        return params, note, text

    picker.vector.focus(listed, None, picker.vector, api_name="steer_vectors", show_progress="hidden")
    picker.add.click(add, [shared.params, box, picker.vector, picker.strength, picker.layers, *shared.controls],
                     [shared.params, status, box], api_name="steer_add")
