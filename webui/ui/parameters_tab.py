"""Parameters tab: sampling controls and presets, feeding the per-session params state."""

from __future__ import annotations

from typing import Any

import gradio as gr

from webui.paths import NameRefused
from webui.presets import ParamsError, SamplingParams, make_params
from webui.runtime import Runtime
from webui.ui.common import Shared

# (field, control factory); help texts come from the SamplingParams field descriptions.
CONTROLS = {
    "max_new_tokens": lambda info: gr.Slider(1, 4096, step=1, label="max_new_tokens", info=info),
    "temperature": lambda info: gr.Slider(0.0, 5.0, step=0.01, label="temperature", info=info),
    "top_p": lambda info: gr.Slider(0.01, 1.0, step=0.01, label="top_p", info=info),
    "top_k": lambda info: gr.Slider(0, 200, step=1, label="top_k", info=info),
    "min_p": lambda info: gr.Slider(0.0, 1.0, step=0.01, label="min_p", info=info),
    "repetition_penalty": lambda info: gr.Slider(1.0, 3.0, step=0.01, label="repetition_penalty", info=info),
    "seed": lambda info: gr.Number(label="seed", precision=0, info=info),
    "stop": lambda info: gr.Textbox(label="stop strings", info=info + " One per line.", lines=2),
}
INT_FIELDS = {"max_new_tokens", "top_k", "seed"}


def control_value(name: str, params: SamplingParams) -> Any:
    value = getattr(params, name)
    return "\n".join(value) if name == "stop" else value


def from_controls(values: dict[str, Any]) -> dict[str, Any]:
    """Control values -> SamplingParams fields (sliders send floats, stop is text)."""
    out = dict(values)
    for name in INT_FIELDS:
        if isinstance(out.get(name), float) and out[name].is_integer():
            out[name] = int(out[name])
    if isinstance(out.get("stop"), str):
        out["stop"] = [line for line in out["stop"].splitlines() if line]
    return out


def render(runtime: Runtime, shared: Shared) -> None:
    fields = SamplingParams.model_fields
    with gr.Row():
        preset = gr.Dropdown(
            runtime.presets.names(), value=runtime.settings.preset if runtime.settings.preset in runtime.presets.names() else None,
            label="Preset", elem_id="preset", scale=3,
        )
        refresh = gr.Button("↻", scale=0, min_width=40)
    status = gr.Markdown()
    controls = {}
    with gr.Row():
        with gr.Column():
            for name in ("max_new_tokens", "temperature", "top_p", "top_k"):
                controls[name] = CONTROLS[name](fields[name].description)
        with gr.Column():
            for name in ("min_p", "repetition_penalty", "seed", "stop"):
                controls[name] = CONTROLS[name](fields[name].description)
    names = list(controls)
    for name, control in controls.items():
        control.value = control_value(name, runtime.default_params)

    def apply_preset(name: str):
        try:
            params = runtime.presets.load(name)
        except (NameRefused, ParamsError) as exc:
            raise gr.Error(str(exc)) from exc
        return [params.model_dump(), f"Preset **{name}** applied."] + [control_value(n, params) for n in names]

    def update(current: dict, *values):
        try:
            params = make_params(from_controls(dict(zip(names, values, strict=True))))
        except ParamsError as exc:
            gr.Warning(f"Not applied: {exc}")
            return current, f"**Not applied:** {exc}"
        return params.model_dump(), ""

    preset.input(apply_preset, preset, [shared.params, status, *controls.values()], api_name="load_preset")
    refresh.click(lambda: gr.Dropdown(choices=runtime.presets.names()), None, preset, api_name="list_presets")
    gr.on(
        [control.input for control in controls.values()],
        update, [shared.params, *controls.values()], [shared.params, status], api_name="set_params",
    )
