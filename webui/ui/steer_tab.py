"""Steer tab: train a control vector from contrast pairs (progress, Stop), list the
vectors in user_data/control-vectors/, and check one's perplexity beside the unsteered
model's.

Wiring only: the work is in webui/steer/service.py (Runtime.steer).  Training and the
check borrow the model from every user, so they are the owner's (webui/ui/guard.py);
the listing and the progress are anyone's.  Steering a reply is a sampling value
(control_vectors): the Parameters tab's Steering box, or the API field.
"""

from __future__ import annotations

import time

import gradio as gr

from webui.runtime import Runtime
from webui.steer.train import Pairs, split_prompts
from webui.training.progress import Snapshot
from webui.ui.common import Shared

WATCH_SECONDS = 0.5
EXAMPLE_PROMPTS = "\n".join([
    "And he said unto them,", "Then the people went", "And it came to pass that", "Behold, the king",
    "And the LORD spake unto Moses, saying,", "The children of Israel", "And they came unto the city",
    "Now the word of the LORD came",
])


def progress_html(snap: Snapshot) -> str:
    percent = round(100 * snap.fraction, 1)
    return (f'<progress max="100" value="{percent}" style="width:100%"></progress>'
            f"<div>{snap.step} / {snap.max_steps} prompts ({percent}%)</div>")


def status_markdown(snap: Snapshot) -> str:
    if snap.state == "idle":
        return "No control vector has been trained since the server started."
    return f"**{snap.name}** — {snap.state}" + (f": {snap.message}" if snap.message else "")


def render(runtime: Runtime, shared: Shared) -> None:
    service = runtime.steer
    gr.Markdown("A **control vector** nudges the model's hidden states toward one persona and away from another "
                "(PCA of the hidden-state differences over your prompts, per layer). Files are llama.cpp's GGUF "
                "control vectors: the same file steers Transformers and GGUF models. Use one in the Parameters "
                "tab's **Steering** box (`name: strength`), or the API's `control_vectors`. Strong vectors "
                "break fluency: check the perplexity below.")
    with gr.Row():
        with gr.Column(scale=2):
            name = gr.Textbox(label="vector name", info="saved to user_data/control-vectors/NAME.gguf",
                              max_length=128, elem_id="steer-name")
            with gr.Row():
                positive = gr.Textbox(label="positive persona", lines=2, max_length=4000, elem_id="steer-positive",
                                      value="I love thee, and my heart is full of love.")
                negative = gr.Textbox(label="negative persona", lines=2, max_length=4000, elem_id="steer-negative",
                                      value="I hate thee, and my heart is full of hatred.")
            prompts = gr.Textbox(label="prompts", info="one per line; each is read after either persona",
                                 lines=6, value=EXAMPLE_PROMPTS, max_length=200_000, elem_id="steer-prompts")
            with gr.Row():
                start = gr.Button("Train vector", variant="primary", elem_id="steer-train")
                stop = gr.Button("Stop", elem_id="steer-stop")
        with gr.Column(scale=1):
            status = gr.Markdown(status_markdown(service.status()), elem_id="steer-status")
            bar = gr.HTML(progress_html(service.status()), elem_id="steer-progress")
    gr.Markdown("### Vectors and the perplexity check")
    with gr.Row():
        vector = gr.Dropdown(service.library.names(), label="control vector", elem_id="steer-vectors", scale=2)
        refresh = gr.Button("↻", scale=0, min_width=40)
        strength = gr.Slider(-4, 4, value=1.0, step=0.1, label="strength", elem_id="steer-strength", scale=2)
        check = gr.Button("Check perplexity", elem_id="steer-check", scale=1)
    about = gr.Markdown(elem_id="steer-about")
    checked = gr.Markdown(elem_id="steer-checked")

    def view(snap: Snapshot):
        return status_markdown(snap), progress_html(snap)

    def train(name_, positive_, negative_, prompts_):
        snap = service.start(name_, Pairs(positive_ or "", negative_ or "", split_prompts(prompts_ or "")))
        yield (*view(snap), gr.Dropdown())
        while snap.running:
            time.sleep(WATCH_SECONDS)
            snap = service.status()
            yield (*view(snap), gr.Dropdown())
        names = service.library.names()
        yield (*view(snap), gr.Dropdown(choices=names, value=snap.name if snap.name in names else None))

    def run_check(name_, strength_):
        if not name_:
            raise gr.Error("choose a control vector")
        return service.check(name_, float(strength_)).line()

    start.click(train, [name, positive, negative, prompts], [status, bar, vector], api_name="steer_train",
                concurrency_id="training", concurrency_limit=1)
    stop.click(lambda: service.stop(), None, status, api_name="steer_stop", concurrency_limit=None)
    refresh.click(lambda: gr.Dropdown(choices=service.library.names()), None, vector, api_name="steer_list")
    vector.change(lambda n: service.describe(n) if n else "", vector, about, api_name="steer_about",
                  show_progress="hidden")
    check.click(run_check, [vector, strength], checked, api_name="steer_check",
                concurrency_id="training", concurrency_limit=1)

    def on_load(request: gr.Request) -> dict:
        snap = service.status()
        return {status: status_markdown(snap), bar: progress_html(snap),
                vector: gr.Dropdown(choices=service.library.names())}

    shared.on_load.append((on_load, [status, bar, vector]))
