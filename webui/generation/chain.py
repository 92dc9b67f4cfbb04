"""SamplingParams -> the ordered chain of LogitsProcessors that shapes each step.

Every step is a transformers LogitsProcessor (ours in samplers/, or transformers'
own where it already has the reference definition), so nothing is monkey-patched and
the order is exactly `params.step_order()`.  A step at its neutral value is left out
of the chain entirely: an untouched parameter costs nothing.

The engine (webui/generation/engine.py) runs its own decoding loop and calls the
chain once per step on each sequence's logits: nothing else changes them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    LogitsProcessor,
    LogitsProcessorList,
    MinPLogitsWarper,
    NoRepeatNGramLogitsProcessor,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from webui.generation.samplers.dry import DRYLogitsProcessor
from webui.generation.samplers.grammar import GrammarLogitsProcessor, GrammarState
from webui.generation.samplers.mirostat import Mirostat2LogitsProcessor
from webui.generation.samplers.penalties import (
    BanTokensLogitsProcessor,
    LogitBiasLogitsProcessor,
    PresenceFrequencyPenaltyLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
)
from webui.generation.samplers.temperature import (
    DynamicTemperatureLogitsProcessor,
    QuadraticSmoothingLogitsProcessor,
)
from webui.generation.samplers.top_n_sigma import TopNSigmaLogitsProcessor
from webui.generation.samplers.truncation import TailFreeLogitsProcessor, TopALogitsProcessor, TopKLogitsProcessor
from webui.generation.samplers.xtc import XTCLogitsProcessor
from webui.generation.params import ParamsError, SamplingParams

# Text Generation WebUI gives epsilon and eta cutoffs in units of 1e-4.
CUTOFF_UNIT = 1e-4

Step = Callable[[SamplingParams], LogitsProcessor | None]


def _temperature(p: SamplingParams) -> LogitsProcessor | None:
    # With dynamic temperature on, it replaces the plain temperature.
    if p.dynamic_temperature or p.temperature in (0.0, 1.0):
        return None
    return TemperatureLogitsWarper(p.temperature)


def _dynamic_temperature(p: SamplingParams) -> LogitsProcessor | None:
    if not p.dynamic_temperature:
        return None
    return DynamicTemperatureLogitsProcessor(p.dynatemp_low, p.dynatemp_high, p.dynatemp_exponent)


# Steps that need nothing but the parameters.
SIMPLE_STEPS: dict[str, Step] = {
    "repetition_penalty": lambda p: None if p.repetition_penalty == 1.0 else
        RepetitionPenaltyLogitsProcessor(p.repetition_penalty, p.repetition_penalty_range),
    "presence_penalty": lambda p: None if p.presence_penalty == 0.0 else
        PresenceFrequencyPenaltyLogitsProcessor(p.presence_penalty, 0.0, p.repetition_penalty_range),
    "frequency_penalty": lambda p: None if p.frequency_penalty == 0.0 else
        PresenceFrequencyPenaltyLogitsProcessor(0.0, p.frequency_penalty, p.repetition_penalty_range),
    "top_n_sigma": lambda p: TopNSigmaLogitsProcessor(p.top_n_sigma) if p.top_n_sigma > 0 else None,
    "temperature": _temperature,
    "dynamic_temperature": _dynamic_temperature,
    "quadratic_sampling": lambda p: None if p.smoothing_factor == 0.0 else
        QuadraticSmoothingLogitsProcessor(p.smoothing_factor, p.smoothing_curve),
    "top_k": lambda p: TopKLogitsProcessor(p.top_k) if p.top_k > 0 else None,
    "top_p": lambda p: TopPLogitsWarper(p.top_p) if p.top_p < 1.0 else None,
    "typical_p": lambda p: TypicalLogitsWarper(p.typical_p) if p.typical_p < 1.0 else None,
    "epsilon_cutoff": lambda p: EpsilonLogitsWarper(p.epsilon_cutoff * CUTOFF_UNIT) if p.epsilon_cutoff > 0 else None,
    "eta_cutoff": lambda p: EtaLogitsWarper(p.eta_cutoff * CUTOFF_UNIT) if p.eta_cutoff > 0 else None,
    "tfs": lambda p: TailFreeLogitsProcessor(p.tfs) if p.tfs < 1.0 else None,
    "top_a": lambda p: TopALogitsProcessor(p.top_a) if p.top_a > 0 else None,
    "min_p": lambda p: MinPLogitsWarper(p.min_p) if p.min_p > 0 else None,
    "no_repeat_ngram": lambda p: NoRepeatNGramLogitsProcessor(p.no_repeat_ngram_size)
        if p.no_repeat_ngram_size > 0 else None,
}

# Steps that draw random numbers: they take the request's own generator, so a seed
# reproduces a reply whatever else is decoding beside it.
RANDOM_STEPS: dict[str, Callable[[SamplingParams, Any], LogitsProcessor | None]] = {
    "xtc": lambda p, g: XTCLogitsProcessor(p.xtc_threshold, p.xtc_probability, g) if p.xtc_probability > 0 else None,
    # A fresh instance per request: mirostat keeps its running state (mu) inside.
    "mirostat": lambda p, g: Mirostat2LogitsProcessor(p.mirostat_tau, p.mirostat_eta, g)
        if p.mirostat_mode == 2 else None,
}


def last_token_ids(tokenizer, texts: Sequence[str]) -> set[int]:
    """DRY sequence breakers: the last token of each breaker string."""
    ids = set()
    for text in texts:
        encoded = tokenizer.encode(text, add_special_tokens=False)
        if encoded:
            ids.add(encoded[-1])
    return ids


def token_ids(params: SamplingParams, tokenizer, vocab_size: int, eos_ids: set[int]) -> tuple[list[int], dict[int, float]]:
    """The ids a request bans and biases, each checked against the vocabulary.

    logit_bias keys that are digits are token ids; any other key is text, each of its
    tokens biased.  Raises ParamsError naming the field for an id outside the vocabulary.
    """

    def checked(token_id: int, field: str) -> int:
        if not 0 <= token_id < vocab_size:
            raise ParamsError(f"{field}: token id {token_id} is outside the vocabulary (0..{vocab_size - 1})", param=field)
        return token_id

    bans = [checked(token_id, "custom_token_bans") for token_id in params.custom_token_bans]
    if params.ban_eos_token:
        bans.extend(eos_ids)
    bias: dict[int, float] = {}
    for key, value in params.logit_bias.items():
        if key.startswith("-") and key[1:].isdigit():
            checked(int(key), "logit_bias")
        ids = [int(key)] if key.isdigit() else tokenizer.encode(key, add_special_tokens=False)
        for token_id in ids:
            bias[checked(token_id, "logit_bias")] = value
    return sorted(set(bans)), bias


def build_chain(params: SamplingParams, tokenizer, backend: Any, vocab_size: int, eos_ids: set[int],
                generator: torch.Generator | None = None, grammar: GrammarState | None = None) -> LogitsProcessorList:
    """The LogitsProcessorList for one request; raises ParamsError for unusable values.

    `backend` supplies classifier-free guidance (a second pass of its model);
    `generator` is the request's own random source for the steps that draw;
    `grammar` is the request's grammar position (grammar_string / json_schema)."""
    chain = LogitsProcessorList()
    if params.guidance_scale != 1.0:
        # CFG compares raw logits with and without the prompt, so it goes first.
        negative = tokenizer(params.negative_prompt or "", add_special_tokens=True)["input_ids"]
        chain.append(backend.guidance_processor(params.guidance_scale, negative))
    if grammar is not None:
        # Before every sampler: they then choose among allowed tokens only, and none of
        # them can cut the allowed set down to nothing (samplers/grammar.py).
        chain.append(GrammarLogitsProcessor(grammar))
    bans, bias = token_ids(params, tokenizer, vocab_size, eos_ids)
    if bans:
        chain.append(BanTokensLogitsProcessor(bans))
    if bias:
        chain.append(LogitBiasLogitsProcessor(bias))
    for name in params.step_order():
        if name == "dry":
            if params.dry_multiplier > 0:
                chain.append(DRYLogitsProcessor(
                    params.dry_multiplier, params.dry_base, params.dry_allowed_length,
                    last_token_ids(tokenizer, params.dry_sequence_breakers), params.repetition_penalty_range,
                ))
            continue
        if params.greedy and name in ("mirostat", "xtc"):
            continue  # steps that sample by themselves make no sense for greedy decoding
        step = RANDOM_STEPS[name](params, generator) if name in RANDOM_STEPS else SIMPLE_STEPS[name](params)
        if step is not None:
            chain.append(step)
    return chain
