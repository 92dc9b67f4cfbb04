"""Which sampling values each kind of engine takes, and under which names.

A remote engine samples on its side, so only what its API accepts can be honoured.
Each kind's table maps our SamplingParams field names (webui/generation/params.py)
to the request field the engine reads.  A field outside the table is refused by our
API with its name (webui/api/completions.py fit, through Capabilities.ignores), never dropped
silently.  The tables follow each engine's documented request fields; which of them
were exercised against a running engine is said in docs/SCALING.md.
"""

from __future__ import annotations

from typing import Any

from webui.generation.backend import Capabilities
from webui.generation.params import SamplingParams, changed_fields

# OpenAI's own sampling fields: what every OpenAI-compatible server takes.
OPENAI = {
    "temperature": "temperature", "top_p": "top_p", "max_new_tokens": "max_tokens", "stop": "stop",
    "seed": "seed", "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
    "logit_bias": "logit_bias",
}
# vLLM's extra sampling parameters (its OpenAI server takes them beside OpenAI's).
VLLM = {
    **OPENAI, "top_k": "top_k", "min_p": "min_p", "repetition_penalty": "repetition_penalty",
    "ban_eos_token": "ignore_eos",
}
# llama.cpp's own server (llama-server): its /v1 endpoints take its native sampler fields.
LLAMA_CPP = {
    **OPENAI, "top_k": "top_k", "min_p": "min_p", "typical_p": "typical_p", "top_n_sigma": "top_n_sigma",
    "repetition_penalty": "repeat_penalty", "repetition_penalty_range": "repeat_last_n",
    "dry_multiplier": "dry_multiplier", "dry_base": "dry_base", "dry_allowed_length": "dry_allowed_length",
    "dry_sequence_breakers": "dry_sequence_breakers", "xtc_threshold": "xtc_threshold",
    "xtc_probability": "xtc_probability", "mirostat_mode": "mirostat", "mirostat_tau": "mirostat_tau",
    "mirostat_eta": "mirostat_eta", "ban_eos_token": "ignore_eos",
}
# llama-cpp-python's server (python -m llama_cpp.server): fewer than llama-server.
LLAMA_CPP_PYTHON = {
    **OPENAI, "top_k": "top_k", "min_p": "min_p", "typical_p": "typical_p",
    "repetition_penalty": "repeat_penalty", "mirostat_mode": "mirostat_mode", "mirostat_tau": "mirostat_tau",
    "mirostat_eta": "mirostat_eta",
}
# Another webui's API (one in front of a bigger machine): every sampler, by our own names.
WEBUI = {**{name: name for name in SamplingParams.model_fields}, "max_new_tokens": "max_tokens"}
FIELDS: dict[str, dict[str, str]] = {
    "openai": OPENAI, "vllm": VLLM, "llama.cpp": LLAMA_CPP, "llama-cpp-python": LLAMA_CPP_PYTHON, "webui": WEBUI,
}
# Honoured everywhere without a field of their own: do_sample=False is sent as temperature 0,
# and the order of the sampling steps is the engine's business once only its samplers run.
ALWAYS = frozenset({"do_sample", "sampler_priority", "temperature_last"})


def capabilities(kind: str) -> Capabilities:
    """What a model on an engine of this kind can do, in the engine's vocabulary."""
    return Capabilities(
        max_batch=1,  # the engine batches on its side; we do not
        prefix_cache=False,
        logprobs=True,  # asked for in OpenAI's shape; its tokens come back named by their text
        samplers=frozenset(FIELDS[kind]) | ALWAYS,
        # Images are forwarded as OpenAI image_url parts (data: URLs), which every kind's
        # chat endpoint takes; whether the model behind it reads them is the engine's to
        # say (a text-only model's engine refuses them, and that refusal is relayed).
        vision=True,
        guidance=False,
        input_embeddings=False,
    )


def upstream_fields(kind: str, params: SamplingParams, stops: tuple[str, ...]) -> dict[str, Any]:
    """The request fields for `params`: the ones that differ from neutral and the engine
    takes (whatever else changed is left out: the API refuses it beforehand; the UI notes it),
    plus the reply's length, greedy as temperature 0, and every stop string."""
    table = FIELDS[kind]
    body: dict[str, Any] = {table["max_new_tokens"]: params.max_new_tokens}
    plain = params.model_dump(mode="json")  # lists and dicts (control_vectors' entries too), as JSON carries them
    for name in sorted(changed_fields(params) & set(table)):
        body[table[name]] = plain[name]
    if params.greedy:
        body["temperature"] = 0.0
    if stops:
        body["stop"] = list(stops)
    else:
        body.pop("stop", None)
    return body


def ignored(kind: str, params: SamplingParams) -> list[str]:
    """Changed sampling fields an engine of this kind would not honour."""
    return capabilities(kind).ignores(changed_fields(params) - {"max_new_tokens", "seed"})
