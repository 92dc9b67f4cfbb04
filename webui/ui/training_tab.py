"""Training tab: train a LoRA (live progress and loss plot), Stop, resume; perplexity.

Wiring only: the work is in webui/training/service.py (through Runtime.training).
Starting, stopping, resuming and evaluating take the model from every user, so they
are the owner's (webui/ui/guard.py); watching the progress and reading the results
are anyone's.  While a run lasts, chat and API requests are refused with "training
NAME is in progress" (ModelManager.lend) and this tab says so.
"""

from __future__ import annotations

import time
import typing

import gradio as gr
import pandas as pd
from pydantic import ValidationError

from webui.runtime import Runtime
from webui.settings import describe_validation_error
from webui.training.perplexity import Result, ResultsError
from webui.training.progress import Snapshot, format_seconds
from webui.training.settings import Scheduler, TrainingSettings
from webui.ui.common import Shared

CHAT_TEMPLATE = "(the model's chat template)"
WATCH_SECONDS = 1.0
# The form's fields, in the order of the components below (TrainingSettings' names).
FIELDS = ("lora_name", "dataset", "format", "rank", "alpha", "dropout", "target_modules", "learning_rate",
          "scheduler", "warmup_steps", "epochs", "steps", "micro_batch_size", "gradient_accumulation",
          "cutoff_len", "overlap", "save_steps", "seed")


def status_markdown(runtime: Runtime, snap: Snapshot | None = None) -> str:
    snap = snap or runtime.training.status()
    lent = runtime.models.lent_for
    head = f"**{lent} in progress: the model does not answer chat or API requests until it ends.**\n\n" if lent else ""
    if snap.state == "idle":
        return head + "No training has run since the server started."
    return head + f"**{snap.name}** — {snap.line()}"


def progress_html(snap: Snapshot) -> str:
    # Only numbers and a checked plain name reach this HTML.
    percent = round(100 * snap.fraction, 1)
    eta = f" · ETA {format_seconds(snap.eta_seconds)}" if snap.eta_seconds is not None and snap.running else ""
    rate = f" · {snap.tokens_per_second:,.0f} tokens/s" if snap.tokens_per_second else ""
    return (f'<progress max="100" value="{percent}" style="width:100%"></progress>'
            f"<div>{snap.step} / {snap.max_steps} steps ({percent}%){rate}{eta}</div>")


def loss_frame(snap: Snapshot) -> pd.DataFrame:
    return pd.DataFrame(snap.losses, columns=["step", "loss"])


def results_frame(runtime: Runtime) -> pd.DataFrame:
    try:
        rows = runtime.training.results.rows()
    except ResultsError as exc:
        gr.Warning(str(exc))
        rows = []
    return pd.DataFrame([row.row() for row in reversed(rows)], columns=list(Result.COLUMNS))


def settings_from(values: dict) -> TrainingSettings:
    values = dict(values)
    values["format"] = None if values.get("format") in (None, "", CHAT_TEMPLATE) else values["format"]
    values["steps"] = values.get("steps") or None  # 0: train for `epochs`
    try:
        return TrainingSettings(**values)
    except ValidationError as exc:
        raise gr.Error(f"invalid training settings: {describe_validation_error(exc)}") from None


def render(runtime: Runtime, shared: Shared) -> None:
    service = runtime.training
    defaults = TrainingSettings.model_fields
    status = gr.Markdown(status_markdown(runtime), elem_id="training-status")
    bar = gr.HTML(progress_html(service.status()), elem_id="training-progress")
    with gr.Row():
        with gr.Column(scale=2):
            with gr.Row():
                name = gr.Textbox(label="LoRA name", info="saved to user_data/loras/NAME/", max_length=128)
                dataset = gr.Dropdown(service.datasets(), label="dataset", info="user_data/training/datasets/")
                form = gr.Dropdown([CHAT_TEMPLATE, *service.formats()], value=CHAT_TEMPLATE, label="format (JSON data)",
                                   info="user_data/training/formats/")
                refresh = gr.Button("↻", scale=0, min_width=40)
            with gr.Row():
                rank = gr.Number(defaults["rank"].default, label="rank", precision=0, minimum=1)
                alpha = gr.Number(defaults["alpha"].default, label="alpha", precision=0, minimum=1)
                dropout = gr.Number(defaults["dropout"].default, label="dropout", minimum=0, maximum=0.99)
                targets = gr.Textbox(",".join(defaults["target_modules"].default), label="target modules",
                                     max_length=1000)
            with gr.Row():
                lr = gr.Number(defaults["learning_rate"].default, label="learning rate", minimum=0)
                scheduler = gr.Dropdown(list(typing.get_args(Scheduler)),
                                        value=defaults["scheduler"].default, label="scheduler")
                warmup = gr.Number(0, label="warm-up steps", precision=0, minimum=0)
                epochs = gr.Number(defaults["epochs"].default, label="epochs", minimum=0)
                steps = gr.Number(0, label="steps (0: use epochs)", precision=0, minimum=0)
            with gr.Row():
                micro = gr.Number(defaults["micro_batch_size"].default, label="micro-batch", precision=0, minimum=1)
                accumulation = gr.Number(1, label="gradient accumulation", precision=0, minimum=1)
                cutoff = gr.Number(defaults["cutoff_len"].default, label="cutoff length (tokens)", precision=0,
                                   minimum=8)
                overlap = gr.Number(defaults["overlap"].default, label="overlap (raw text)", precision=0, minimum=0)
                save_steps = gr.Number(defaults["save_steps"].default, label="checkpoint every (steps)", precision=0,
                                       minimum=1)
                seed = gr.Number(0, label="seed", precision=0, minimum=0)
            gr.Markdown("QLoRA: load the model in 4-bit in the Model tab, then train. The applied LoRAs are taken "
                        "off for the run and put back afterwards.")
            with gr.Row():
                start = gr.Button("Start training", variant="primary", elem_id="training-start")
                stop = gr.Button("Stop (saves a checkpoint)", elem_id="training-stop")
                watch = gr.Button("Watch progress", elem_id="training-watch")
            with gr.Row():
                unfinished = gr.Dropdown(service.unfinished(), label="unfinished runs", scale=3)
                resume = gr.Button("Resume", elem_id="training-resume", scale=1)
        with gr.Column(scale=1):
            plot = gr.LinePlot(loss_frame(service.status()), x="step", y="loss", title="training loss",
                               elem_id="training-loss")

    gr.Markdown("### Perplexity")
    with gr.Row():
        text = gr.Dropdown(list(service.texts()), value=next(iter(service.texts())), label="text",
                           info="the bundled sample, or a .txt in user_data/training/datasets/", scale=2)
        context = gr.Number(0, label="context (0: the model's)", precision=0, minimum=0)
        stride = gr.Number(0, label="stride (0: = context)", precision=0, minimum=0)
        evaluate = gr.Button("Evaluate the loaded model", elem_id="perplexity-run")
    ppl_status = gr.Markdown(elem_id="perplexity-status")
    table = gr.Dataframe(results_frame(runtime), label="results (newest first)", interactive=False,
                         elem_id="perplexity-results")

    form_inputs = [name, dataset, form, rank, alpha, dropout, targets, lr, scheduler, warmup, epochs, steps, micro,
                   accumulation, cutoff, overlap, save_steps, seed]
    outputs = [status, bar, plot]

    def view(snap: Snapshot | None = None):
        snap = snap or service.status()
        return status_markdown(runtime, snap), progress_html(snap), loss_frame(snap)

    def follow():
        """Stream the progress once a second until the run ends."""
        snap = service.status()
        yield view(snap)
        while snap.running:
            time.sleep(WATCH_SECONDS)
            snap = service.status()
            yield view(snap)

    def start_training(*values):
        service.start(settings_from(dict(zip(FIELDS, values, strict=True))))
        yield from follow()

    def resume_training(run):
        service.resume(run)
        yield from follow()

    def lists():
        return (gr.Dropdown(choices=service.datasets()), gr.Dropdown(choices=[CHAT_TEMPLATE, *service.formats()]),
                gr.Dropdown(choices=service.unfinished()), gr.Dropdown(choices=list(service.texts())))

    def run_perplexity(name_, context_, stride_, progress=gr.Progress()):  # noqa: B008 - Gradio's injection idiom
        result, warning = service.evaluate(
            name_, int(context_ or 0), int(stride_ or 0),
            on_window=lambda done, total: progress(done / total, desc=f"window {done} of {total}"))
        if warning:
            gr.Warning(warning)
        line = (f"**perplexity {result.perplexity}** — {result.model} ({result.dtype}), LoRA {result.loras}, "
                f"{result.data}, context {result.context}, stride {result.stride}, {result.tokens} tokens")
        return line, results_frame(runtime)

    start.click(start_training, form_inputs, outputs, api_name="training_start",
                concurrency_id="training", concurrency_limit=1)
    resume.click(resume_training, unfinished, outputs, api_name="training_resume",
                 concurrency_id="training", concurrency_limit=1)
    stop.click(lambda: service.stop(), None, status, api_name="training_stop", concurrency_limit=None)
    watch.click(follow, None, outputs, api_name="training_status", concurrency_limit=None)
    refresh.click(lists, None, [dataset, form, unfinished, text], api_name="training_lists")
    evaluate.click(run_perplexity, [text, context, stride], [ppl_status, table], api_name="perplexity_run",
                   concurrency_id="training", concurrency_limit=1)
    # Every page load shows the run as it is now: the page itself was built with the run
    # as it was when the UI started (idle: "0 / 0 steps" and no loss), and the folders'
    # lists as they were then.
    def on_load(request: gr.Request) -> dict:
        shown = dict(zip(outputs, view(), strict=True))
        return {**shown, **dict(zip([dataset, form, unfinished, text], lists(), strict=True))}

    shared.on_load.append((on_load, [*outputs, dataset, form, unfinished, text]))
