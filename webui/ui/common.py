"""Small helpers shared by the tabs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from webui.generation.params import ParamsError, SamplingParams, make_params
from webui.settings import PROJECT_ROOT

# Every event that runs the model shares one Gradio concurrency group.  Its limit is not
# 1: the engine batches concurrent requests and is fair between users itself
# (docs/LOADERS.md), so Gradio hands every tab's request straight on; the group only
# bounds the handler threads (a request beyond it waits in Gradio's own queue).
MODEL_GROUP = {"concurrency_id": "model", "concurrency_limit": 64}


@dataclass
class Shared:
    """Components that several tabs use: the per-session sampling values, and the
    Parameters tab's controls (the Model tab updates them with a model's defaults)."""

    params: gr.State
    controls: list[Any] = field(default_factory=list)
    # The Chat tab's character picker: the Character tab refreshes its choices.
    character_picker: Any = None
    # (fn, outputs) for the one page-load event: fn(request) returns {component: value}
    # for some of its outputs.  One event, not one per tab: each event is a queue
    # round trip, and on a busy machine they wait behind each other.
    on_load: list[tuple[Any, list]] = field(default_factory=list)
    # Wiring that needs components of tabs built later (the Parameters tab's controls):
    # called once every tab is built.
    later: list[Any] = field(default_factory=list)


def session_id(request: gr.Request | None) -> str:
    # Each page load has its own session hash; it keys Stop to that tab alone.
    return (request.session_hash if request else None) or "anonymous"


def to_params(values: Any) -> SamplingParams:
    """The per-session params state (a dict) -> validated SamplingParams."""
    if isinstance(values, SamplingParams):
        return values
    if not isinstance(values, dict):
        raise gr.Error("sampling parameters must be a mapping")
    try:
        return make_params(values)
    except ParamsError as exc:
        raise gr.Error(f"invalid sampling parameters: {exc}") from exc


def stop_handler(runtime):
    """Stop for this browser session only (keyed by its session hash)."""

    def stop(request: gr.Request) -> str:
        return "Stopped." if runtime.stop(session_id(request)) else "Nothing was generating."

    return stop


def shown_path(path: Path | str, root: Path = PROJECT_ROOT) -> str:
    """A server path as a browser may see it: relative to the app's folder, or only its
    last part when it lies elsewhere (every browser would otherwise learn the server's
    folder layout, and under several users, each other's)."""
    path = Path(path)
    try:
        return path.resolve().relative_to(root.resolve()).as_posix() or "."
    except ValueError:
        return f"…/{path.name}"
