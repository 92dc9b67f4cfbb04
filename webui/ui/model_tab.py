"""Model tab: pick a folder from models/, load or unload it, see what is loaded."""

from __future__ import annotations

import gradio as gr

from webui.loaders.base import LoadError
from webui.model_manager import ModelBusy
from webui.paths import NameRefused
from webui.runtime import Runtime
from webui.ui.common import MODEL_GROUP, Shared, to_params
from webui.ui.parameters_tab import control_values

DTYPES = ["auto", "bf16", "fp16", "fp32"]


def status_text(runtime: Runtime) -> str:
    loaded = runtime.models.current
    return f"Loaded: **{loaded.describe()}**" if loaded else "No model loaded."


def render(runtime: Runtime, shared: Shared) -> None:
    current = runtime.models.current
    with gr.Row():
        model = gr.Dropdown(
            runtime.models.names(), value=current.name if current else None,
            label="Model", info=f"Folders in {runtime.settings.model_dir}", scale=3, elem_id="model-name",
        )
        refresh = gr.Button("↻", scale=0, min_width=40)
        dtype = gr.Radio(DTYPES, value=runtime.settings.dtype, label="dtype", scale=2)
    with gr.Row():
        load = gr.Button("Load", variant="primary", elem_id="model-load")
        unload = gr.Button("Unload", elem_id="model-unload")
    status = gr.Markdown(status_text(runtime), elem_id="model-status")

    def load_model(name: str, dtype_choice: str, current: dict):
        if dtype_choice not in DTYPES:
            raise gr.Error(f"unknown dtype: {dtype_choice!r}")
        try:
            runtime.models.load(name, dtype=dtype_choice, timeout=5.0)
        except (NameRefused, LoadError, ModelBusy) as exc:
            # The previous model (if any) is still loaded and serving.
            gr.Warning(str(exc))
            return [f"**Load failed:** {exc}\n\n{status_text(runtime)}", gr.skip(), *[gr.skip()] * len(shared.controls)]
        # The model's generation_config.json supplies its recommended sampling values.
        params = runtime.with_model_defaults(to_params(current))
        runtime.remember(params)
        return [status_text(runtime), params.model_dump(), *control_values(params)]

    def unload_model() -> str:
        try:
            runtime.models.unload(timeout=5.0)
        except ModelBusy as exc:
            return f"**Unload failed:** {exc}\n\n{status_text(runtime)}"
        return status_text(runtime)

    load.click(
        load_model, [model, dtype, shared.params], [status, shared.params, *shared.controls],
        api_name="model_load", **MODEL_GROUP,
    )
    unload.click(unload_model, None, status, api_name="model_unload", **MODEL_GROUP)
    refresh.click(lambda: gr.Dropdown(choices=runtime.models.names()), None, model, api_name="model_list")
