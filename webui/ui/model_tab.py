"""Model tab: pick, configure, check, load and unload a model; LoRA; hub download.

Wiring only: the work is in Runtime (load_model, fit_report), webui.loras (through
ModelManager) and webui.hub.  Every value that arrives here is re-validated: Gradio
does not check what a client sends to an event.
"""

from __future__ import annotations

import gradio as gr
from pydantic import ValidationError

from webui.chat.templates import MODEL_TEMPLATE
from webui.hub import DownloadError, DownloadRequest
from webui.loaders.base import LoadError
from webui.loaders.hf_kwargs import attention_choices, bitsandbytes_problem
from webui.model_manager import ModelBusy, NoModelLoaded
from webui.model_settings import ModelSettings
from webui.paths import NameRefused
from webui.runtime import Runtime
from webui.settings import describe_validation_error
from webui.ui.common import MODEL_GROUP, Shared, shown_path, to_params
from webui.ui.parameters_tab import control_values

DTYPES = ["auto", "bf16", "fp16", "fp32"]
COMPUTE_DTYPES = ["auto", "bfloat16", "float16", "float32"]


def status_text(runtime: Runtime) -> str:
    loaded = runtime.models.current
    return f"Loaded: **{loaded.describe()}**" if loaded else "No model loaded."


def parse_split(text: str) -> tuple[float, ...] | None:
    """'20, 7' -> (20.0, 7.0); blank -> None."""
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise gr.Error("GPU split: GiB per GPU, comma-separated, e.g. 20,7") from None


def choice_from(dtype, cpu, attention, in8, in4, quant_type, double_quant, compute, split, cpu_memory, disk,
                context, template) -> ModelSettings:
    """The Model tab's option controls -> validated ModelSettings (raises gr.Error)."""
    try:
        return ModelSettings(
            dtype=dtype, device="cpu" if cpu else "auto", attn_implementation=attention,
            load_in_8bit=in8, load_in_4bit=in4, quant_type=quant_type, use_double_quant=double_quant,
            compute_dtype=compute, gpu_split=parse_split(split),
            cpu_memory=cpu_memory if cpu_memory else None, disk=disk,
            context_length=int(context) if context else None,
            chat_template=None if template in (None, MODEL_TEMPLATE) else template,
        )
    except (ValidationError, TypeError, ValueError) as exc:
        detail = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
        raise gr.Error(f"invalid model settings: {detail}") from None


def render(runtime: Runtime, shared: Shared) -> None:
    settings = runtime.settings
    base = runtime.models.options
    current = runtime.models.current
    with gr.Row():
        model = gr.Dropdown(
            runtime.models.names(), value=current.name if current else None,
            label="Model", info=f"Folders in {shown_path(settings.model_dir)}", scale=3, elem_id="model-name",
        )
        refresh = gr.Button("↻", scale=0, min_width=40)
        dtype = gr.Radio(DTYPES, value=base.dtype, label="dtype", scale=2)
    with gr.Accordion("Loader options (saved per model)", open=False):
        with gr.Row():
            cpu = gr.Checkbox(base.device == "cpu", label="cpu", info="run on the CPU even with a GPU")
            attention = gr.Dropdown(attention_choices(), value=base.attn_implementation, label="attention")
            context = gr.Number(0, label="context length", info="0: the model's maximum", precision=0,
                                minimum=0, maximum=1 << 24)
            template = gr.Dropdown(runtime.templates.names(), value=MODEL_TEMPLATE,
                                   label="chat template", info="user_data/instruction-templates/")
        problem = bitsandbytes_problem()
        with gr.Row():
            in8 = gr.Checkbox(base.load_in_8bit, label="load-in-8bit", interactive=problem is None)
            in4 = gr.Checkbox(base.load_in_4bit, label="load-in-4bit", interactive=problem is None)
            quant_type = gr.Radio(["nf4", "fp4"], value=base.quant_type, label="quant_type (4-bit)")
            double_quant = gr.Checkbox(base.use_double_quant, label="use_double_quant (4-bit)")
            compute = gr.Dropdown(COMPUTE_DTYPES, value=base.compute_dtype, label="compute_dtype (4-bit)")
        if problem:
            gr.Markdown(f"⚠️ {problem}")
        with gr.Row():
            split = gr.Textbox(",".join(f"{g:g}" for g in base.gpu_split), label="gpu-split",
                               placeholder="GiB per GPU, e.g. 20,7", max_length=200)
            cpu_memory = gr.Number(base.cpu_memory or 0, label="cpu-memory (GiB)", info="0: no limit",
                                   minimum=0, maximum=1 << 20)
            disk = gr.Checkbox(base.disk, label="disk offload")
        with gr.Row():
            # Shown, never settable here: only the command line can enable code execution.
            gr.Checkbox(base.trust_remote_code, label="trust-remote-code", interactive=False,
                        info="command line only (--trust-remote-code)")
            gr.Checkbox(base.allow_pickle, label="allow-pickle", interactive=False,
                        info="command line only (--allow-pickle)")
    options = [dtype, cpu, attention, in8, in4, quant_type, double_quant, compute, split, cpu_memory, disk,
               context, template]
    with gr.Row():
        load = gr.Button("Load", variant="primary", elem_id="model-load")
        unload = gr.Button("Unload", elem_id="model-unload")
        fit = gr.Button("Will it fit?", elem_id="model-fit")
    status = gr.Markdown(status_text(runtime), elem_id="model-status")
    fit_out = gr.Markdown(elem_id="model-fit-report")

    with gr.Accordion("LoRA adapters (user_data/loras/)", open=False):
        with gr.Row():
            lora_pick = gr.Dropdown(runtime.models.loras(), value=[], multiselect=True, label="LoRA", scale=3)
            lora_refresh = gr.Button("↻", scale=0, min_width=40)
            lora_apply = gr.Button("Apply (none selected: remove)", scale=1)
        lora_status = gr.Markdown()

    with gr.Accordion("Download from the Hugging Face Hub", open=False):
        gr.Markdown("Downloading is the one action that contacts the network. Files go to "
                    f"`{shown_path(settings.model_dir)}/org_name`; an interrupted download continues when run again. "
                    "Gated models need `HF_TOKEN` in the environment.")
        with gr.Row():
            repo = gr.Textbox(label="Hub model (org/name)", placeholder="org/name", max_length=200, scale=3)
            revision = gr.Textbox("main", label="revision", max_length=128, scale=1)
            patterns = gr.Textbox(label="files (globs, comma-separated; blank: safetensors + config)",
                                  max_length=1000, scale=2)
        download = gr.Button("Download", elem_id="model-download")
        download_status = gr.Markdown(elem_id="model-download-status")

    def pick_model(name):
        """Show the saved settings of the model just picked, and whether it will fit."""
        saved = runtime.saved_model_settings(name)
        values = [
            saved.dtype or base.dtype, (saved.device or base.device) == "cpu",
            saved.attn_implementation or base.attn_implementation,
            base.load_in_8bit if saved.load_in_8bit is None else saved.load_in_8bit,
            base.load_in_4bit if saved.load_in_4bit is None else saved.load_in_4bit,
            saved.quant_type or base.quant_type,
            base.use_double_quant if saved.use_double_quant is None else saved.use_double_quant,
            saved.compute_dtype or base.compute_dtype,
            ",".join(f"{g:g}" for g in (base.gpu_split if saved.gpu_split is None else saved.gpu_split)),
            saved.cpu_memory or base.cpu_memory or 0, base.disk if saved.disk is None else saved.disk,
            saved.context_length or 0,
            saved.chat_template if saved.chat_template in runtime.templates.names() else MODEL_TEMPLATE,
        ]
        try:
            fits = runtime.fit_report(name, saved)
        except (NameRefused, LoadError) as exc:
            fits = f"**Cannot estimate:** {exc}"
        return [*values, fits]

    def load_model(request: gr.Request, name, *values):
        *option_values, params_state = values
        choice = choice_from(*option_values)
        try:
            _, warning = runtime.load_model(name, choice, timeout=5.0)
        except (NameRefused, LoadError, ModelBusy) as exc:
            # The previous model (if any) is still loaded and serving.
            gr.Warning(str(exc))
            return [f"**Load failed:** {exc}\n\n{status_text(runtime)}", gr.skip(), *[gr.skip()] * len(shared.controls)]
        if warning:
            gr.Warning(warning)
        # The model's generation_config.json supplies its recommended sampling values.
        params = runtime.with_model_defaults(to_params(params_state))
        runtime.remember(params, getattr(request, "username", None))
        return [status_text(runtime), params.model_dump(), *control_values(params)]

    def unload_model() -> str:
        try:
            runtime.models.unload(timeout=5.0)
        except ModelBusy as exc:
            return f"**Unload failed:** {exc}\n\n{status_text(runtime)}"
        return status_text(runtime)

    def will_it_fit(name, *values) -> str:
        try:
            return runtime.fit_report(name, choice_from(*values))
        except (NameRefused, LoadError) as exc:
            return f"**Cannot estimate:** {exc}"

    def apply_loras(names) -> tuple[str, str]:
        if not isinstance(names, list):
            raise gr.Error("LoRA: expected a list of names")
        try:
            runtime.models.set_loras(names, timeout=5.0)
        except (NameRefused, LoadError, ModelBusy, NoModelLoaded) as exc:
            gr.Warning(str(exc))
            return f"**LoRA not applied:** {exc}", status_text(runtime)
        loaded = runtime.models.current
        return f"LoRA: {', '.join(loaded.loras) or 'none'}", status_text(runtime)

    def download_model(repo_id, rev, globs, progress=gr.Progress()):  # noqa: B008 - Gradio's injection idiom
        try:
            request = DownloadRequest(
                repo_id.strip() if isinstance(repo_id, str) else repo_id,
                revision=(rev or "main").strip() if isinstance(rev, str) else rev,
                patterns=tuple(p.strip() for p in globs.split(",") if p.strip()) if isinstance(globs, str) else (),
                allow_pickle=settings.allow_pickle,
            )
            progress(0, desc=f"asking the hub about {request.repo_id}")
            folder = runtime.downloads.download(
                request, lambda p: progress(p.fraction, desc=f"{p.file} ({p.done:,} / {p.total:,} bytes)"))
        except DownloadError as exc:
            return f"**Download failed:** {exc}", gr.skip()
        return f"Downloaded to `{shown_path(folder)}`.", gr.Dropdown(choices=runtime.models.names())

    model.input(pick_model, model, [*options, fit_out], api_name="model_settings")
    load.click(
        load_model, [model, *options, shared.params], [status, shared.params, *shared.controls],
        api_name="model_load", **MODEL_GROUP,
    )
    unload.click(unload_model, None, status, api_name="model_unload", **MODEL_GROUP)
    fit.click(will_it_fit, [model, *options], fit_out, api_name="model_fit")
    refresh.click(lambda: gr.Dropdown(choices=runtime.models.names()), None, model, api_name="model_list")
    lora_refresh.click(lambda: gr.Dropdown(choices=runtime.models.loras()), None, lora_pick, api_name="lora_list")
    lora_apply.click(apply_loras, lora_pick, [lora_status, status], api_name="lora_apply", **MODEL_GROUP)
    download.click(download_model, [repo, revision, patterns], [download_status, model],
                   api_name="model_download", concurrency_id="download", concurrency_limit=1)
