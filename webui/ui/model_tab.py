"""Model tab: pick, configure, check, load and unload a model; LoRA; hub download.

Wiring only: the work is in Runtime (load_model, fit_report), webui.loras (through
ModelManager) and webui.hub.  Every value that arrives here is re-validated: Gradio
does not check what a client sends to an event.
"""

from __future__ import annotations

import time

import gradio as gr
from pydantic import ValidationError

from webui.chat.templates import MODEL_TEMPLATE
from webui.hub import DownloadError, DownloadRequest
from webui.loaders.base import LoadError
from webui.loaders.gguf_build import status_line
from webui.loaders.catalog import BUILTIN_SCHEMAS
from webui.model_manager import ModelBusy, NoModelLoaded
from webui.model_settings import ModelSettings
from webui.paths import NameRefused, pick
from webui.runtime import Runtime
from webui.settings import describe_validation_error
from webui.ui.common import MODEL_GROUP, Shared, shown_path, to_params
from webui.ui.loader_controls import OptionControls
from webui.ui.parameters_tab import control_values
from webui.ui import documents_panel, remote_picker


def status_text(runtime: Runtime) -> str:
    loaded = runtime.models.current
    lent = runtime.models.lent_for
    busy = f"\n\n**{lent} in progress: the model does not answer until it ends.**" if lent else ""
    # A backend may say how it has fared (a llama.cpp worker that crashed and was
    # restarted, or that keeps crashing: webui/loaders/gguf_process.py).
    note = getattr(loaded.backend, "status_note", None) if loaded else None
    health = f"\n\n⚠️ {note}" if note else ""
    build = status_line(runtime.settings.user_data_dir)
    building = f"\n\n{build}" if build else ""
    return ((f"Loaded: **{loaded.describe()}**" if loaded else "No model loaded.") + health + busy
            + resident_text(runtime) + building)


def resident_text(runtime: Runtime) -> str:
    """The models in memory (loaded on demand beside this one: webui/resident.py), each
    since when and until when it stays unused."""
    residents = runtime.resident.entries() if runtime.resident is not None else []
    if len(residents) < 2 and not runtime.settings.loads_on_demand:
        return ""
    rows = []
    for resident in residents:
        since = time.strftime("%H:%M:%S", time.localtime(resident.since))
        expires = resident.expires_at(runtime.resident.idle_seconds, runtime.resident.clock)
        until = f", unloaded if unused until {expires}" if expires else ""
        rows.append(f"- `{resident.name}`: in memory since {since}{until}")
    head = ("\n\nIn memory (a request naming another listed model loads it):" if runtime.settings.loads_on_demand
            else "\n\nIn memory:")
    return head + ("\n" + "\n".join(rows) if rows else " none")


def choice_from(controls: OptionControls, values, context, template) -> ModelSettings:
    """The Model tab's option controls -> validated ModelSettings (raises gr.Error)."""
    try:
        return ModelSettings(
            **controls.values(values),
            context_length=int(context) if context else None,
            chat_template=None if template in (None, MODEL_TEMPLATE) else template,
        )
    except (ValidationError, TypeError, ValueError) as exc:
        detail = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
        raise gr.Error(f"invalid model settings: {detail}") from None


def loader_groups(runtime: Runtime, name, controls: OptionControls) -> set[str]:
    """The option groups of the loader that loads model `name` (every group when unknown)."""
    try:
        folder = pick(name, runtime.models.available(), "model")
        schema = runtime.models.registry.for_folder(folder).options_schema
    except (NameRefused, LoadError):
        schema = None
    return controls.groups_of(schema)


def load_and_show(runtime: Runtime, shared: Shared, name, choice: ModelSettings | None, params_state,
                  request: gr.Request | None) -> list:
    """Load `name` (with `choice` over its saved settings): [status, params, *Parameters tab
    controls].  The Model tab and the chat's model picker load through this."""
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


def render(runtime: Runtime, shared: Shared, tab: gr.Tab | None = None) -> None:
    settings = runtime.settings
    current = runtime.models.current
    # Controls for the built-in loaders' options (the ones ModelSettings can hold),
    # showing the start-up values until a model with saved settings is picked.
    controls = OptionControls(BUILTIN_SCHEMAS, runtime.models.options)
    with gr.Row():
        model = gr.Dropdown(
            runtime.models.names(), value=current.name if current else None,
            label="Model", info=f"Folders and .gguf files in {shown_path(settings.model_dir)}", scale=3,
            elem_id="model-name",
        )
        refresh = gr.Button("↻", scale=0, min_width=40)
        shown = loader_groups(runtime, current.name if current else None, controls)
        for control in controls.render("main"):
            control.component.visible = "main" in shown
    with gr.Accordion("Loader options (saved per model)", open=False):
        with gr.Row():
            # Beyond the loader: what the model is used with.
            context = gr.Number(0, label="context length", info="0: the model's maximum", precision=0,
                                minimum=0, maximum=1 << 24)
            template = gr.Dropdown(runtime.templates.names(), value=MODEL_TEMPLATE,
                                   label="chat template", info="user_data/instruction-templates/")
        # A row per group of options, a new loader's groups included; only the groups of
        # the picked model's loader are shown.
        rows = {}
        for group in controls.groups():
            if group == "main":
                continue
            with gr.Column(visible=group in shown) as rows[group]:
                with gr.Row():
                    controls.render(group)
                for problem in controls.problems(group):
                    gr.Markdown(f"⚠️ {problem}")
    n_loader = len(controls.editable)
    options = [*(c.component for c in controls.editable), context, template]
    with gr.Row():
        load = gr.Button("Load", variant="primary", elem_id="model-load")
        unload = gr.Button("Unload", elem_id="model-unload")
        fit = gr.Button("Will it fit?", elem_id="model-fit")
    status = gr.Markdown(status_text(runtime), elem_id="model-status")
    # Every page load shows the status as it is then (a llama.cpp worker may have been
    # restarted since the page was built).
    shared.on_load.append((lambda request: {status: status_text(runtime)}, [status]))
    fit_out = gr.Markdown(elem_id="model-fit-report")
    if runtime.remotes:  # only when the operator configured remote engines
        remote_picker.render(runtime)

    with gr.Accordion("LoRA adapters (user_data/loras/)", open=False):
        with gr.Row():
            lora_pick = gr.Dropdown(runtime.models.loras(), value=[], multiselect=True, label="LoRA", scale=3)
            lora_refresh = gr.Button("↻", scale=0, min_width=40)
            lora_apply = gr.Button("Apply (none selected: remove)", scale=1)
        lora_status = gr.Markdown()

    documents_panel.render_embedding_choice(runtime)  # which model embeds documents (webui/documents/)
    with gr.Accordion("Download from the Hugging Face Hub", open=False):
        gr.Markdown("Downloading is the one action that contacts the network. Files go to "
                    f"`{shown_path(settings.model_dir)}/org_name`; an interrupted download continues when run again. "
                    "Gated models need `HF_TOKEN` in the environment.")
        with gr.Row():
            repo = gr.Textbox(label="Hub model (org/name)", placeholder="org/name", max_length=200, scale=3)
            revision = gr.Textbox("main", label="revision", max_length=128, scale=1)
            patterns = gr.Textbox(label="files (globs, comma-separated; blank: safetensors + config)",
                                  max_length=1000, scale=2)
        with gr.Row():
            list_gguf = gr.Button("List GGUF files", scale=1)
            gguf_pick = gr.Dropdown([], label="GGUF file (fills 'files')", scale=3, allow_custom_value=False)
        download = gr.Button("Download", elem_id="model-download")
        download_status = gr.Markdown(elem_id="model-download-status")

    def pick_model(name):
        """Show the saved settings of the model just picked, and whether it will fit."""
        saved = runtime.saved_model_settings(name)
        values = [
            *controls.shown(saved), saved.context_length or 0,
            saved.chat_template if saved.chat_template in runtime.templates.names() else MODEL_TEMPLATE,
        ]
        at = controls.position("gguf_file")
        if at is not None:  # this model's own files to choose from
            values[at] = gr.Dropdown(choices=runtime.gguf_file_choices(name), value=values[at] or "")
        try:
            fits = runtime.fit_report(name, saved)
        except (NameRefused, LoadError) as exc:
            fits = f"**Cannot estimate:** {exc}"
        return [*values, fits]

    def load_model(request: gr.Request, name, *values):
        *option_values, params_state = values
        choice = choice_from(controls, option_values[:n_loader], *option_values[n_loader:])
        return load_and_show(runtime, shared, name, choice, params_state, request)

    def unload_model() -> str:
        try:
            runtime.models.unload(timeout=5.0)
        except ModelBusy as exc:
            return f"**Unload failed:** {exc}\n\n{status_text(runtime)}"
        return status_text(runtime)

    def will_it_fit(name, *values) -> str:
        try:
            return runtime.fit_report(name, choice_from(controls, values[:n_loader], *values[n_loader:]))
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

    def gguf_files(repo_id, rev):
        """A GGUF repository's files with their sizes, to pick the one to download."""
        try:
            request = DownloadRequest(repo_id.strip() if isinstance(repo_id, str) else repo_id,
                                      revision=(rev or "main").strip() if isinstance(rev, str) else rev)
            files = runtime.downloads.list_gguf(request)
        except DownloadError as exc:
            return f"**Cannot list:** {exc}", gr.Dropdown(choices=[])
        if not files:
            return f"{request.repo_id} has no .gguf files.", gr.Dropdown(choices=[])
        rows = "\n".join(f"| `{f.name}` | {f.size / (1 << 30):.2f} GiB |" for f in files)
        return (f"| file | size |\n|---|---|\n{rows}",
                gr.Dropdown(choices=[f.name for f in files], value=None))

    def show_groups(name):
        groups = loader_groups(runtime, name, controls)
        main = [gr.update(visible="main" in groups)] * len(controls.controls_of("main"))
        return [*main, *(gr.update(visible=group in groups) for group in rows)]

    model.change(show_groups, model, [*controls.controls_of("main"), *rows.values()], api_name="model_loader_options",
                 show_progress="hidden")
    list_gguf.click(gguf_files, [repo, revision], [download_status, gguf_pick], api_name="model_gguf_files",
                    concurrency_id="download", concurrency_limit=1)
    gguf_pick.input(lambda name: name or "", gguf_pick, patterns)
    model.input(pick_model, model, [*options, fit_out], api_name="model_settings")
    load.click(
        load_model, [model, *options, shared.params], [status, shared.params, *shared.controls],
        api_name="model_load", **MODEL_GROUP,
    )
    unload.click(unload_model, None, status, api_name="model_unload", **MODEL_GROUP)
    fit.click(will_it_fit, [model, *options], fit_out, api_name="model_fit")
    refresh.click(lambda: gr.Dropdown(choices=runtime.models.names()), None, model, api_name="model_list")
    lora_refresh.click(lambda: gr.Dropdown(choices=runtime.models.loras()), None, lora_pick, api_name="lora_list")
    if tab is not None:
        # Opening the tab lists what is on disk now: a LoRA just trained, a model just
        # downloaded or copied in (the ↻ buttons stay for a list changed while it is open).
        # The status too: the chat's model picker may have loaded another model meanwhile.
        tab.select(lambda: (gr.Dropdown(choices=runtime.models.names()), gr.Dropdown(choices=runtime.models.loras()),
                            status_text(runtime)),
                   None, [model, lora_pick, status], api_name="model_tab_lists", show_progress="hidden")
    lora_apply.click(apply_loras, lora_pick, [lora_status, status], api_name="lora_apply", **MODEL_GROUP)
    download.click(download_model, [repo, revision, patterns], [download_status, model],
                   api_name="model_download", concurrency_id="download", concurrency_limit=1)
