"""Chat templates are rendered here: in a Jinja sandbox that also has a budget.

A chat template comes with the model (a GGUF's tokenizer.chat_template, a
chat_template.jinja) or from a user's file: it is code we did not write.  Jinja's
sandbox (as transformers uses it) stops a template from reaching Python internals,
but not from looping without end (`range(100000)` nested twice), building a string of
gigabytes (30 doublings of `ns.s ~ ns.s`) or recursing until Python gives up.  Here
every render gets a budget: steps (loop iterations, calls, operators),
characters built (output, joins, repeats, filter results; charged *before* a repeat
or a padding builds them) and a wall-clock deadline.  A template that overruns it
fails with a PromptError that says so, and nothing it built stays in memory.

The environment mirrors transformers' chat-template environment (its options,
`raise_exception`, `strftime_now`, `tojson`, `namespace`, `dict`, the
`{% generation %}` tag and loop controls), so a template renders to the same text.
Two AST rewrites give the budget its hooks: each `for` loop's iterable goes through
a counting filter, and each `~` join and each output expression through a charging
one; operators that can multiply sizes (`*`, `**`, `+`, `%`) are intercepted.
"""

from __future__ import annotations

import contextvars
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer

from webui.generation.request import PromptError

MAX_STEPS = 2_000_000  # a real template takes tens per message
MAX_SECONDS = 5.0
MIN_CHARS = 4_000_000  # characters a render may build, at least...
CHARS_PER_INPUT = 16  # ...or this many per character of its input
_FORMAT_WIDTH = re.compile(r"[0-9]{7,}")  # a %-format or {}-format width of millions


class TemplateBudgetError(Exception):
    """The template overran its budget (not a TemplateError: it must not be retried)."""


class _Budget:
    __slots__ = ("steps", "chars", "deadline")

    def __init__(self, chars: int, steps: int, seconds: float):
        self.steps = steps
        self.chars = chars
        self.deadline = time.monotonic() + seconds

    def step(self, count: int = 1) -> None:
        self.steps -= count
        if self.steps < 0:
            raise TemplateBudgetError("it takes too many steps (an endless or very long loop?)")
        if not self.steps & 0x3FF and time.monotonic() > self.deadline:
            raise TemplateBudgetError("it takes too long")

    def charge(self, size: int) -> None:
        self.chars -= size
        if self.chars < 0:
            raise TemplateBudgetError("it builds too much text")
        self.step()


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("template_budget", default=None)


def _current() -> _Budget:
    budget = _budget.get()
    # Rendered outside render_chat_template (never, today): a fresh default budget per
    # check bounds each operation, not the whole render.
    return budget if budget is not None else _Budget(MIN_CHARS, MAX_STEPS, MAX_SECONDS)


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (str, list, tuple, dict)) else 0


def _check_arguments(args: Iterable[Any]) -> None:
    """Numbers that would size a result (a padding width, a repeat count) are checked
    against what is left before the call builds anything."""
    budget = _current()
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > budget.chars:
            raise TemplateBudgetError("it asks for a string larger than a template may build")
        if isinstance(arg, str) and ("%" in arg or "{" in arg) and _FORMAT_WIDTH.search(arg):
            raise TemplateBudgetError("it asks for a format width of millions")


# -- the hooks the rewritten templates call --------------------------------------------
def _counted(iterable: Any) -> Iterator[Any]:
    budget = _current()
    for item in iterable:
        budget.step()
        yield item


def _joined(*parts: Any) -> str:
    texts = [str(part) for part in parts]
    _current().charge(sum(map(len, texts)))
    return "".join(texts)


def _charged(value: Any) -> Any:
    _current().charge(len(value) if isinstance(value, str) else 8)
    return value


def _guarded_filter(function: Callable) -> Callable:
    # A filter marked pass_context / pass_eval_context gets that first, then its value.
    skip = 2 if hasattr(function, "jinja_pass_arg") else 1

    def guarded(*args: Any, **kwargs: Any) -> Any:
        _check_arguments(args[skip:])
        _check_arguments(kwargs.values())
        if function is _REPLACE:
            _check_replace(*args[1:4])
        result = function(*args, **kwargs)
        _current().charge(_size(result))
        return result

    if hasattr(function, "jinja_pass_arg"):
        guarded.jinja_pass_arg = function.jinja_pass_arg  # type: ignore[attr-defined]
    return guarded


_REPLACE = jinja2.filters.FILTERS["replace"]


def _check_replace(value: Any, old: Any = "", new: Any = "", count: Any = None) -> None:
    """str.replace's result size, charged before it is built."""
    if isinstance(value, str) and isinstance(old, str) and isinstance(new, str) and len(new) > len(old):
        hits = value.count(old) if old else len(value) + 1
        _current().charge(hits * (len(new) - len(old)))


class _Rewriter(NodeTransformer):
    """Each for-loop's iterable -> _counted(...); each ~ join -> _joined(...); each
    output expression -> _charged(...)."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        node = self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "_budget_counted", [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        node = self.generic_visit(node)
        return nodes.Filter(node.nodes[0], "_budget_joined", node.nodes[1:], [], None, None, lineno=node.lineno)

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        node = self.generic_visit(node)
        node.nodes = [part if isinstance(part, nodes.TemplateData)
                      else nodes.Filter(part, "_budget_charged", [], [], None, None, lineno=part.lineno)
                      for part in node.nodes]
        return node


# -- the environment ---------------------------------------------------------------------
class _GenerationTag(Extension):
    """`{% generation %}...{% endgeneration %}` (transformers marks the assistant's
    tokens with it); for a prompt it renders its body as it is."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class _TemplateNamespace(Namespace):
    """namespace() without underscore names (as transformers' sandbox has it)."""

    def __init__(*args: Any, **kwargs: Any) -> None:
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check_name(name)
        Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise SecurityError(f"chat templates cannot store underscore names on a namespace ({name!r})")


class _TemplateDict:
    """dict() and dict.fromkeys() for templates, without the class itself."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


def _raise_exception(message: Any) -> None:
    raise TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    # As transformers': no HTML escaping, and its options.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class BudgetedEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self) -> None:
        super().__init__(trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, loopcontrols])
        self.filters["tojson"] = _tojson
        self.filters = {name: _guarded_filter(f) for name, f in self.filters.items()}
        self.filters.update(_budget_counted=_counted, _budget_joined=_joined, _budget_charged=_charged)
        self.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now, dict=_TemplateDict(),
                            namespace=_TemplateNamespace)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        return _Rewriter().visit(super()._parse(source, name, filename))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = _current()
        if operator == "+":  # the common one (joining strings): charged after, as ~ is
            result = left + right
            budget.charge(_size(result))
            return result
        budget.step()
        if operator == "*":
            for sized, count in ((left, right), (right, left)):
                if isinstance(sized, (str, list, tuple)) and isinstance(count, int):
                    budget.charge(len(sized) * max(count, 0))
        elif operator == "**" and isinstance(right, int) and isinstance(left, int) and abs(left) > 1:
            if right > 4096:
                raise TemplateBudgetError("it raises a number to a power above 4096")
        elif operator == "%" and isinstance(left, str) and _FORMAT_WIDTH.search(left):
            raise TemplateBudgetError("it asks for a format width of millions")
        result = super().call_binop(context, operator, left, right)
        if operator == "%":
            budget.charge(_size(result))
        return result

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's names
        budget = _current()
        budget.step()
        _check_arguments(args)
        _check_arguments(kwargs.values())
        if getattr(__obj, "__name__", None) == "replace" and isinstance(getattr(__obj, "__self__", None), str):
            _check_replace(__obj.__self__, *args[:2])
        result = super().call(__context, __obj, *args, **kwargs)
        budget.charge(_size(result))
        return result


_ENVIRONMENT = BudgetedEnvironment()


@lru_cache(maxsize=32)
def _compiled(template: str) -> jinja2.Template:
    return _ENVIRONMENT.from_string(template)


def parse_template(template: str) -> nodes.Template:
    """The template's syntax tree (to read which variables it uses), parsed as rendering does."""
    return _ENVIRONMENT.parse(template)


# -- rendering -------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """What a template may see: JSON-like data only (a rich object's methods are not
    the sandbox's to judge), without None-valued message keys (as transformers does)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return f"<{type(value).__name__}>"


_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def _message(message: Mapping[str, Any]) -> dict[str, Any]:
    message = {k: _plain(v) for k, v in message.items() if v is not None}
    reasoning = next((message[key] for key in _REASONING_FIELDS if message.get(key) is not None), None)
    if reasoning is not None:  # as transformers: the older names fill the standard one
        message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
    return message


def special_tokens(tokenizer: Any) -> dict[str, Any]:
    """The token names a template may use ({{ bos_token }}...), as each tokenizer kind
    passes them to transformers' renderer."""
    mapping = getattr(tokenizer, "special_tokens_map", None)
    if isinstance(mapping, Mapping):
        return dict(mapping)
    return {"bos_token": getattr(tokenizer, "bos_token", None) or "",
            "eos_token": getattr(tokenizer, "eos_token", None) or ""}


def render_chat_template(template: str, messages: Sequence[Mapping[str, Any]], *, tokens: Mapping[str, Any],
                         tools: Sequence[Mapping[str, Any]] | None = None, add_generation_prompt: bool = True,
                         variables: Mapping[str, Any] | None = None) -> str:
    """`template` rendered for `messages`, within a budget.  `variables`: more values the
    template reads (enable_thinking, reasoning_effort...); they never replace the ones
    set here (messages, tools, the special tokens).

    Raises PromptError when it overruns its budget, recurses without end or runs out of
    memory; SecurityError / TemplateError as Jinja raises them (the caller decides
    which to retry)."""
    chat = [_message(m) for m in messages]
    if not chat:
        raise TemplateError("there are no messages to render")
    size = sum(len(str(m)) for m in chat) + len(str(tools or ""))
    budget = _Budget(max(MIN_CHARS, CHARS_PER_INPUT * size), MAX_STEPS, MAX_SECONDS)
    token = _budget.set(budget)
    try:
        compiled = _compiled(template)
        context = {**_plain(dict(variables or {})), **_plain(dict(tokens))}
        context.update(messages=chat, tools=_plain(tools) if tools is not None else None, documents=None,
                       add_generation_prompt=add_generation_prompt)
        return compiled.render(**context)
    except TemplateBudgetError as exc:
        raise PromptError(f"the chat template was stopped: {exc}") from None
    except RecursionError:
        raise PromptError("the chat template was stopped: it recurses without end") from None
    except MemoryError:
        raise PromptError("the chat template was stopped: it ran out of memory") from None
    finally:
        _budget.reset(token)
