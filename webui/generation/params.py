"""Sampling parameters: one typed, frozen model with ranges, shared by every entry point.

The same SamplingParams validates values from the UI, preset files, settings and the
API, so a bad value is refused with its field named before the model is called
(docs/SECURITY.md).  It lives with the engine, which is its consumer; preset files
(webui/presets.py) are only one way of filling it in.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from webui.generation.grammar_compile import grammar_problem

from webui.errors import AppError
from webui.settings import describe_validation_error

MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 200
MAX_SEED = 2**32 - 1
MAX_TOKEN_ID = 10_000_000  # beyond any real vocabulary; the loaded model's size is checked later
MAX_GRAMMAR_LENGTH = 100_000  # characters of a grammar or JSON schema

# Steps whose order the user may change (sampler_priority), in the default order.
# Penalties come first so they act on raw logits; mirostat always runs last because
# it picks the token itself.
SAMPLER_ORDER = (
    "repetition_penalty", "presence_penalty", "frequency_penalty", "dry", "top_n_sigma",
    "temperature", "dynamic_temperature", "quadratic_sampling", "top_k", "top_p",
    "typical_p", "epsilon_cutoff", "eta_cutoff", "tfs", "top_a", "min_p", "xtc",
    "no_repeat_ngram", "mirostat",
)
# What temperature_last moves to the end of the chain (as Text Generation WebUI does).
TEMPERATURE_STEPS = ("temperature", "dynamic_temperature", "quadratic_sampling")


def _as_tuple(value: Any) -> Any:
    """YAML and JSON give lists; the frozen model keeps tuples."""
    return tuple(value) if isinstance(value, list) else value


class SamplingParams(BaseModel):
    """Every generation setting; the defaults are neutral (they change nothing).

    Names and units follow Text Generation WebUI, so its presets load unchanged.
    """

    # strict: "0.7" is not a number here; allow_inf_nan: NaN/inf are refused.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    # -- length and reproducibility ---------------------------------------------------
    max_new_tokens: int = Field(512, ge=1, le=32768, description="Most tokens to generate.")
    truncation_length: int = Field(
        0, ge=0, le=1_048_576, description="Context to use, in tokens; 0 = the model's own length."
    )
    seed: int = Field(-1, ge=-1, le=MAX_SEED, description="-1 = a new random seed each time.")
    do_sample: bool = Field(True, description="Off = always the likeliest token (greedy).")
    deterministic: bool = Field(
        False, description="Compute the reply as it would be alone: the whole prompt, no prefix-cache reuse, and "
        "no shared batch where the model's batch changes its numbers. A slower first token on follow-ups.")
    stop: tuple[str, ...] = Field((), description="Strings that end the reply (not shown).")
    prompt_lookup_num_tokens: int = Field(
        -1, ge=-1, le=16, description="Speculative decoding: tokens drafted from the context and checked in one "
        "step while this reply runs alone; the reply is the same, sooner when it repeats its context. "
        "0 = off, -1 = the server's default (--prompt-lookup).")
    thinking_budget: int = Field(
        -1, ge=-1, le=32768, description="A thinking model's most thinking tokens, then it must answer; "
        "-1 = no limit, 0 = no thinking.")
    ban_eos_token: bool = Field(False, description="Never end on the end-of-text token.")
    custom_token_bans: tuple[int, ...] = Field((), description="Token ids never to generate.")
    logit_bias: dict[str, float] = Field(
        {}, description="Token id (digits) or text -> added to its logit (-100 bans, +100 forces)."
    )
    # -- temperature family -----------------------------------------------------------
    temperature: float = Field(1.0, ge=0.0, le=5.0, description="Randomness; 0 = greedy.")
    dynamic_temperature: bool = Field(False, description="Scale temperature with the entropy.")
    dynatemp_low: float = Field(1.0, ge=0.0, le=5.0, description="Temperature for a confident model.")
    dynatemp_high: float = Field(1.0, ge=0.0, le=5.0, description="Temperature for an unsure model.")
    dynatemp_exponent: float = Field(1.0, gt=0.0, le=10.0, description="Curve from low to high.")
    smoothing_factor: float = Field(0.0, ge=0.0, le=10.0, description="Quadratic smoothing; 0 = off.")
    smoothing_curve: float = Field(1.0, ge=1.0, le=10.0, description="Smoothing curve; 1 = quadratic.")
    temperature_last: bool = Field(False, description="Apply temperature after the truncation samplers.")
    # -- truncation -------------------------------------------------------------------
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Smallest set of tokens whose probabilities add up to this.")
    top_k: int = Field(0, ge=0, le=100_000, description="Keep only the k likeliest tokens; 0 = off.")
    min_p: float = Field(0.0, ge=0.0, le=1.0, description="Drop tokens less likely than this fraction of the top one.")
    top_n_sigma: float = Field(0.0, ge=0.0, le=10.0, description="Keep logits within n std-devs of the top; 0 = off.")
    typical_p: float = Field(1.0, gt=0.0, le=1.0, description="Locally typical sampling; 1 = off.")
    epsilon_cutoff: float = Field(0.0, ge=0.0, le=9.0, description="Drop tokens below this probability, in units of 1e-4.")
    eta_cutoff: float = Field(0.0, ge=0.0, le=20.0, description="Entropy-adaptive cutoff, in units of 1e-4.")
    tfs: float = Field(1.0, gt=0.0, le=1.0, description="Tail-free sampling; 1 = off.")
    top_a: float = Field(0.0, ge=0.0, le=1.0, description="Drop tokens below top_a x (top probability)^2.")
    xtc_threshold: float = Field(0.1, ge=0.0, le=1.0, description="XTC: 'top choices' have at least this probability.")
    xtc_probability: float = Field(0.0, ge=0.0, le=1.0, description="XTC: chance per step of excluding top choices; 0 = off.")
    # -- repetition -------------------------------------------------------------------
    repetition_penalty: float = Field(1.0, ge=1.0, le=3.0, description="Penalise tokens already in the context; 1 = off.")
    repetition_penalty_range: int = Field(1024, ge=0, le=1_048_576, description="Tokens looked back; 0 = all.")
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0, description="Flat penalty for any token already present.")
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0, description="Penalty growing with a token's count.")
    no_repeat_ngram_size: int = Field(0, ge=0, le=20, description="Never repeat an n-gram of this size; 0 = off.")
    dry_multiplier: float = Field(0.0, ge=0.0, le=5.0, description="DRY: strength of the repeated-sequence penalty; 0 = off.")
    dry_base: float = Field(1.75, ge=1.0, le=4.0, description="DRY: growth of the penalty with the repeat length.")
    dry_allowed_length: int = Field(2, ge=1, le=20, description="DRY: repeats this long are free.")
    dry_sequence_breakers: tuple[str, ...] = Field(
        ("\n", ":", '"', "*"), description="DRY: strings that interrupt a repeat."
    )
    # -- mirostat and guidance ----------------------------------------------------------
    mirostat_mode: int = Field(0, ge=0, le=2, description="2 = Mirostat v2 (it picks the token itself); 0 = off.")
    mirostat_tau: float = Field(5.0, ge=0.0, le=20.0, description="Mirostat: target surprise, in bits.")
    mirostat_eta: float = Field(0.1, gt=0.0, le=1.0, description="Mirostat: learning rate.")
    guidance_scale: float = Field(1.0, ge=0.1, le=5.0, description="CFG strength against the negative prompt; 1 = off.")
    negative_prompt: str = Field("", max_length=4000, description="CFG: text the reply should move away from.")
    sampler_priority: tuple[str, ...] = Field(SAMPLER_ORDER, description="Order of the sampling steps.")
    # -- structured output (webui/generation/grammar_compile.py) -----------------------------
    grammar_string: str = Field(
        "", max_length=MAX_GRAMMAR_LENGTH,
        description="GBNF or Lark grammar the reply must follow (regex: start: /.../); empty = off.",
    )
    json_schema: str = Field(
        "", max_length=MAX_GRAMMAR_LENGTH,
        description='JSON schema the reply must be valid against ({"type": "object"}: any object); empty = off.',
    )

    @field_validator("stop", "dry_sequence_breakers", mode="before")
    @classmethod
    def _string_list(cls, value: Any) -> Any:
        # Plain text, never evaluated (docs/SECURITY.md).
        if isinstance(value, str):
            # Text Generation WebUI writes these as '"\\n", ":", "\\""': quoted JSON strings.
            try:
                value = json.loads(f"[{value}]")
            except ValueError:
                raise ValueError("must be a list of strings") from None
        value = _as_tuple(value)
        if not isinstance(value, tuple) or not all(isinstance(s, str) for s in value):
            raise ValueError("must be a list of strings")
        if len(value) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} strings")
        if any(not s or len(s) > MAX_STOP_LENGTH for s in value):
            raise ValueError(f"each string must have 1 to {MAX_STOP_LENGTH} characters")
        return value

    @field_validator("mirostat_mode")
    @classmethod
    def _mirostat_mode(cls, value: int) -> int:
        if value not in (0, 2):
            raise ValueError("0 (off) or 2 (Mirostat v2); v1 is not supported")
        return value

    @field_validator("custom_token_bans", mode="before")
    @classmethod
    def _token_ids(cls, value: Any) -> Any:
        value = _as_tuple(value)
        if not isinstance(value, tuple) or len(value) > 1000:
            raise ValueError("must be a list of at most 1000 token ids")
        if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < MAX_TOKEN_ID for i in value):
            raise ValueError("token ids must be integers from 0 up to the vocabulary size")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, value: dict[str, float]) -> dict[str, float]:
        if len(value) > 300:
            raise ValueError("at most 300 entries")
        for key, bias in value.items():
            if not key or len(key) > 100:
                raise ValueError("each key must be a token id or a text of 1 to 100 characters")
            if not -100.0 <= bias <= 100.0:
                raise ValueError(f"bias for {key!r} must be between -100 and 100")
        return value

    @field_validator("sampler_priority", mode="before")
    @classmethod
    def _priority(cls, value: Any) -> Any:
        """Known step names, no repeats; steps left out keep their default order after."""
        value = _as_tuple(value)
        if not isinstance(value, tuple) or not all(isinstance(s, str) for s in value):
            raise ValueError("must be a list of sampler names")
        unknown = [s for s in value if s not in SAMPLER_ORDER]
        if unknown:
            raise ValueError(f"unknown sampler {unknown[0]!r}; known: {', '.join(SAMPLER_ORDER)}")
        if len(set(value)) != len(value):
            raise ValueError("a sampler is listed twice")
        return value + tuple(s for s in SAMPLER_ORDER if s not in value)

    @field_validator("grammar_string", "json_schema")
    @classmethod
    def _grammar(cls, value: str, info: ValidationInfo) -> str:
        # Compiled here, without the model's vocabulary, so a bad grammar or an
        # unsupported schema feature is refused with its field named before anything
        # is queued, whichever entry point built these values.
        if value.strip():
            if info.field_name == "json_schema" and str(info.data.get("grammar_string", "")).strip():
                raise ValueError("set grammar_string or json_schema, not both")
            problem = grammar_problem(info.field_name, value)
            if problem:
                raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _dynatemp_range(self) -> SamplingParams:
        if self.dynamic_temperature and self.dynatemp_low > self.dynatemp_high:
            raise ValueError("dynatemp_low must not exceed dynatemp_high")
        return self

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0.0

    def step_order(self) -> list[str]:
        """The sampling steps in the order they run."""
        order = [s for s in self.sampler_priority if s != "mirostat"]
        if self.temperature_last:
            order = [s for s in order if s not in TEMPERATURE_STEPS] + [
                s for s in order if s in TEMPERATURE_STEPS
            ]
        return [*order, "mirostat"]


class ParamsError(AppError, ValueError):
    """Sampling values that were refused; the message names each bad field, and
    `param` the first of them."""

    code = "invalid_value"


def _problem(error: dict[str, Any]) -> str:
    """One validation error's text: a validator's own words without pydantic's
    "Value error, " in front."""
    raised = (error.get("ctx") or {}).get("error")
    return str(raised) if error.get("type") == "value_error" and raised is not None else error["msg"]


def make_params(values: dict[str, Any], base: SamplingParams | None = None) -> SamplingParams:
    """Validate `values` on top of `base` (neutral by default); raise ParamsError."""
    merged = {**(base or SamplingParams()).model_dump(), **values}
    try:
        return SamplingParams(**merged)
    except ValidationError as exc:
        errors = exc.errors()
        first = ".".join(map(str, errors[0]["loc"])) if errors else ""
        # The first field's problem without its name, then the others' named.
        reason = "; ".join([_problem(errors[0]), *(f"{'.'.join(map(str, e['loc']))}: {_problem(e)}"
                                                   for e in errors[1:])]) if errors else None
        raise ParamsError(describe_validation_error(exc), param=first or None, reason=reason) from exc
    except TypeError as exc:  # e.g. a non-string key
        raise ParamsError(str(exc)) from exc


def plain_values(params: SamplingParams) -> dict[str, Any]:
    """JSON/YAML-friendly values (lists, not tuples)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.model_dump().items()}


def changed_fields(params: SamplingParams) -> set[str]:
    """The fields that differ from neutral: what a request actually asks of a backend."""
    neutral = SamplingParams()
    return {name for name in SamplingParams.model_fields if getattr(params, name) != getattr(neutral, name)}
