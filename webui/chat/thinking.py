"""What a model's chat template says about thinking: its markers, and its switches.

Read off the template text (and the tokenizer's own tokens), never from a table of model
names, so a fine-tune with a known family's template is recognised the same way.  The
switches are the variables a template reads (Qwen3's `enable_thinking`, gpt-oss's
`reasoning_effort`): the chat shows a control only for those, and the API passes
`chat_template_kwargs` through to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import meta
from jinja2.exceptions import TemplateError

from webui.chat.template_sandbox import parse_template
from webui.generation.reasoning import HARMONY, ThinkingFormat

# Tag pairs models think between, most specific first.
TAG_PAIRS = (
    ("<seed:think>", "</seed:think>"),
    ("[THINK]", "[/THINK]"),
    ("<think>", "</think>"),
)
# Template variables that switch thinking, and the values each may take.
SWITCHES: dict[str, tuple[Any, ...]] = {
    "enable_thinking": (True, False),
    "reasoning_effort": ("low", "medium", "high"),
    "thinking": (True, False),  # DeepSeek V3.1's name for it
}
# Ollama's `think` and OpenAI's `reasoning_effort` both land on these.
EFFORTS = ("low", "medium", "high")


def thinking_format(template: str | None, tokenizer: Any = None) -> ThinkingFormat | None:
    """The markers a model with this template thinks between, or None if it does not."""
    if template:
        if "<|channel|>" in template and "analysis" in template:
            return HARMONY
        for open_tag, close_tag in TAG_PAIRS:
            if close_tag in template:
                return ThinkingFormat(open_tag, close_tag)
    vocabulary = _added_tokens(tokenizer)
    for open_tag, close_tag in TAG_PAIRS:
        if open_tag in vocabulary and close_tag in vocabulary:
            return ThinkingFormat(open_tag, close_tag)
    return None


def _added_tokens(tokenizer: Any) -> set[str]:
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    try:
        return {str(token) for token in added.values()}
    except (TypeError, AttributeError):
        return set()


@lru_cache(maxsize=64)
def template_variables(template: str) -> frozenset[str]:
    """The names a template reads that nobody sets inside it."""
    try:
        return frozenset(meta.find_undeclared_variables(parse_template(template)))
    except TemplateError:
        return frozenset()


def switches(template: str | None) -> dict[str, tuple[Any, ...]]:
    """The thinking switches this template reads, with their choices."""
    if not template:
        return {}
    used = template_variables(template)
    return {name: values for name, values in SWITCHES.items() if name in used}


def variables_for(template: str | None, enable: bool | None = None, effort: str | None = None,
                  extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Template variables for a request: `enable` and `effort` mapped onto the switches this
    template has, then `extra` (the API's chat_template_kwargs) as given."""
    have = switches(template)
    values: dict[str, Any] = {}
    if enable is None and "enable_thinking" in have:
        # On unless asked off: the models' own templates think when it is unset, and the
        # copies llama.cpp ships (which test `not enable_thinking`) need it set to think.
        enable = True
    if enable is not None:
        for name in ("enable_thinking", "thinking"):
            if name in have:
                values[name] = enable
    if effort is not None and "reasoning_effort" in have:
        values["reasoning_effort"] = effort
    values.update(extra or {})
    return values


@dataclass(frozen=True)
class ThinkingAsk:
    """What one request asks of a thinking model: thinking on or off (None: the template's
    default), an effort, and values for the template's own variables."""

    enable: bool | None = None
    effort: str | None = None
    template_kwargs: Mapping[str, Any] | None = None

    def variables(self, template: str | None) -> dict[str, Any]:
        return variables_for(template, self.enable, self.effort, self.template_kwargs)

    def budget(self, template: str | None, tokenizer: Any, budget: int) -> int:
        """The thinking budget to use: with thinking asked off and no switch in the
        template to turn it off (a DeepSeek-R1 distill's always opens it), none at all."""
        if self.enable is not False or budget >= 0 or thinking_format(template, tokenizer) is None:
            return budget
        values = self.variables(template)
        if any(values.get(name) is False for name in ("enable_thinking", "thinking")):
            return budget
        return 0
