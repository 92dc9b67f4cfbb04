"""The `state` dict extensions see: Text Generation WebUI's shape, built from our types.

Extensions written for Text Generation WebUI read `state["max_new_tokens"]`,
`state["mode"]`, `state["name1"]` and so on.  SamplingParams already uses the same
parameter names, so the dict is its values plus the chat fields; what a
state_modifier changes in the sampling values comes back through the same
validation as the UI and the API (a bad value is refused with the field named).
"""

from __future__ import annotations

from typing import Any

from webui.generation.params import ParamsError, SamplingParams, make_params, plain_values

Mode = str  # "chat", "chat-instruct", "instruct", "notebook", "api"


def make_state(
    params: SamplingParams,
    *,
    mode: Mode = "notebook",
    context_length: int = 0,
    name1: str = "You",
    name2: str = "Assistant",
    context: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """A fresh state dict for one request (extensions may change their copy freely)."""
    state = plain_values(params)
    if not state["truncation_length"] and context_length:
        # 0 means "the model's own length"; extensions do arithmetic with this value.
        state["truncation_length"] = context_length
    state.update(
        mode=mode,
        name1=name1,
        name2=name2,
        context=context,
        user_bio="",
        custom_system_message="",
        history={"internal": [], "visible": []},
        stream=True,
        add_bos_token=True,
        skip_special_tokens=True,
        auto_max_new_tokens=False,
        max_tokens_second=0,
        custom_stopping_strings="",
    )
    state.update(extra)
    return state


def params_from_state(state: dict[str, Any], base: SamplingParams, context_length: int = 0) -> SamplingParams:
    """The sampling values in `state`, validated on top of `base`; raises ParamsError."""
    if not isinstance(state, dict):
        raise ParamsError("state must be a dict")
    before = make_state(base, context_length=context_length)
    changes = {
        key: state[key]
        for key in SamplingParams.model_fields
        if key in state and state[key] != before[key]
    }
    return make_params(changes, base=base) if changes else base
