"""The extension host: loads extensions in the configured order and calls their hooks.

pluggy holds the hook specifications and validates keyword-style (@hookimpl)
implementations when they are registered.  The host adds what pluggy does not:

* Text Generation WebUI-style plain functions, called positionally with as many
  arguments as they take (so the older one-argument forms still work);
* chained modifiers (each extension gets the previous one's result), in the
  configured order;
* first-wins overrides, with a warning when two extensions compete;
* per-extension isolation: a hook that raises or returns the wrong type marks its
  extension faulty (named, with the traceback, shown in the Session tab), the value
  passes on unmodified, the other extensions keep running and the request completes.
  A faulty extension's hooks are not called again until it is loaded anew.
"""

from __future__ import annotations

import copy
import difflib
import functools
import inspect
import logging
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pluggy

from webui.extensions import hookspecs
from webui.extensions.discovery import Source, import_extension
from webui.extensions.hookspecs import OVERRIDE_HOOKS, PROJECT, TGW_ARITY

log = logging.getLogger(__name__)

_P = inspect.Parameter
SPECS: dict[str, inspect.Signature] = {
    name: inspect.signature(obj)
    for name, obj in vars(hookspecs).items()
    if callable(obj) and hasattr(obj, f"{PROJECT}_spec")
}
HOOK_NAMES = tuple(SPECS)


def spec_args(hook: str) -> tuple[str, ...]:
    """The named arguments of a hook, in order (without **kwargs)."""
    return tuple(p.name for p in SPECS[hook].parameters.values() if p.kind is _P.POSITIONAL_OR_KEYWORD)


class HookError(Exception):
    """A hook's value was refused (wrong type); the message says what was expected."""


@dataclass(frozen=True)
class Fault:
    extension: str
    hook: str  # or "import", "load"
    message: str
    traceback: str
    at_startup: bool

    def summary(self) -> str:
        return f"extension {self.extension}: {self.hook} failed: {self.message}"


@dataclass(frozen=True)
class Impl:
    """One extension's implementation of one hook, and how to call it."""

    hook: str
    function: Callable[..., Any]
    keyword: bool  # @hookimpl: arguments by name; otherwise positional (TGW style)
    argnames: tuple[str, ...]
    varkw: bool = False
    kwnames: tuple[str, ...] = ()

    def call(self, args: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> Any:
        extra = extra or {}
        passed = {k: v for k, v in extra.items() if self.varkw or k in self.kwnames}
        if self.keyword:
            return self.function(**{n: args[n] for n in self.argnames}, **passed)
        return self.function(*[args[n] for n in self.argnames], **passed)


@dataclass
class Extension:
    name: str
    source: Source | None
    module: Any
    params: dict[str, Any]
    impls: dict[str, Impl]
    fault: Fault | None = None

    @property
    def active(self) -> bool:
        return self.fault is None

    @property
    def display_name(self) -> str:
        return str(self.params.get("display_name") or self.name)

    @property
    def is_tab(self) -> bool:
        return bool(self.params.get("is_tab", False))


def _positional_impl(hook: str, function: Callable[..., Any]) -> Impl:
    """Check a plain function's signature against the hook; raise HookError if unusable."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError) as exc:
        raise HookError(f"{hook}: cannot read its signature ({exc})") from exc
    names = spec_args(hook)
    limit = TGW_ARITY.get(hook, len(names))
    params = list(signature.parameters.values())
    positional = [p for p in params if p.kind in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is _P.empty]
    kwonly_required = [p.name for p in params if p.kind is _P.KEYWORD_ONLY and p.default is _P.empty]
    shown = f"{hook}({', '.join(names[:limit])})"
    if len(required) > limit:
        raise HookError(f"{hook} takes {len(required)} required arguments; the hook passes {limit}: {shown}")
    if kwonly_required:
        raise HookError(f"{hook} has required keyword-only arguments {kwonly_required}; the hook is {shown}")
    takes_all = any(p.kind is _P.VAR_POSITIONAL for p in params)
    count = limit if takes_all else min(len(positional), limit)
    # Parameters past the positional ones can still receive a hook's keyword extras
    # (custom_generate_chat_prompt's impersonate=..., for example).
    kwnames = tuple(p.name for p in positional[count:]) + tuple(p.name for p in params if p.kind is _P.KEYWORD_ONLY)
    varkw = any(p.kind is _P.VAR_KEYWORD for p in params)
    return Impl(hook, function, False, names[:count], varkw=varkw, kwnames=kwnames)


def _misspelled(name: str) -> str | None:
    close = difflib.get_close_matches(name, HOOK_NAMES, n=1, cutoff=0.88)
    return close[0] if close and close[0] != name else None


def collect_impls(plugin: Any, manager: pluggy.PluginManager, name: str) -> dict[str, Impl]:
    """Register `plugin` with pluggy (validating @hookimpl functions) and return its hooks.

    Raises HookError for a misspelled hook name or an unusable signature.
    """
    try:
        manager.register(plugin, name=name)
        manager.check_pending()
    except (pluggy.PluginValidationError, ValueError) as exc:
        if manager.get_plugin(name) is not None:
            manager.unregister(name=name)
        raise HookError(str(exc)) from exc
    impls: dict[str, Impl] = {}
    for caller in manager.get_hookcallers(plugin) or []:
        for impl in caller.get_hookimpls():
            if impl.plugin_name == name:
                varkw = any(p.kind is _P.VAR_KEYWORD for p in inspect.signature(impl.function).parameters.values())
                impls[caller.name] = Impl(caller.name, impl.function, True, tuple(impl.argnames), varkw=varkw)
    module_name = getattr(plugin, "__name__", None)
    for attr, value in vars(plugin).items() if hasattr(plugin, "__dict__") else ():
        if attr in impls or attr.startswith("_") or not inspect.isfunction(value):
            continue
        if attr in SPECS:
            impls[attr] = _positional_impl(attr, value)
        elif module_name and getattr(value, "__module__", None) != module_name:
            continue  # an imported helper with a hook-like name is not a misspelling of ours
        elif (meant := _misspelled(attr)) is not None:
            raise HookError(f"{attr} is not a hook; did you mean {meant}?")
    return impls


class ExtensionHost:
    """The enabled extensions, in order, behind one typed facade.

    Built once (see `load_extensions`), held by the Runtime, passed to whatever
    needs to call hooks; no module-level state.
    """

    def __init__(self, available: Mapping[str, Source] | None = None) -> None:
        self.manager = pluggy.PluginManager(PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self.available: dict[str, Source] = dict(available or {})
        self.extensions: list[Extension] = []
        self.startup_faults: list[Fault] = []
        self.warnings: list[str] = []
        self._lock = threading.Lock()

    # -- loading ------------------------------------------------------------------------

    def add(self, name: str, plugin: Any, source: Source | None = None,
            overrides: Mapping[str, Any] | None = None) -> Extension | None:
        """Register an imported extension and run its setup(); None if it cannot load."""
        try:
            raw = getattr(plugin, "params", {})
            if not isinstance(raw, dict):
                raise HookError(f"params must be a dict, not {type(raw).__name__}")
            impls = collect_impls(plugin, self.manager, name)
        except HookError as exc:
            self._startup_fault(name, "load", exc)
            return None
        for key in list(raw):
            # Text Generation WebUI's settings override: "<extension>-<param>: value".
            if overrides and f"{name}-{key}" in overrides:
                raw[key] = overrides[f"{name}-{key}"]
        extension = Extension(name, source, plugin, raw, impls)
        if "setup" in impls:
            try:
                impls["setup"].call({})
            except Exception as exc:
                self.manager.unregister(name=name)
                self._startup_fault(name, "setup", exc)
                return None
        self.extensions.append(extension)
        for hook in OVERRIDE_HOOKS:
            owners = [e.name for e in self.extensions if hook in e.impls]
            if len(owners) >= 2 and owners[-1] == name:
                self.warnings.append(f"{hook}: both {owners[0]} and {name} define it; {owners[0]} is used "
                                     f"(it comes first), {name} only if the first declines")
        return extension

    def _startup_fault(self, name: str, stage: str, exc: BaseException) -> None:
        fault = Fault(name, stage, f"{exc.__class__.__name__}: {exc}", traceback.format_exc(), True)
        self.startup_faults.append(fault)
        log.error("extension %s not loaded: %s", name, fault.message)

    def names(self) -> list[str]:
        return [e.name for e in self.extensions]

    def get(self, name: str) -> Extension | None:
        return next((e for e in self.extensions if e.name == name), None)

    def faults(self) -> list[Fault]:
        return [*self.startup_faults, *(e.fault for e in self.extensions if e.fault)]

    # -- calling ------------------------------------------------------------------------

    def has(self, hook: str) -> bool:
        return any(e.active and hook in e.impls for e in self.extensions)

    def _impls(self, hook: str) -> list[tuple[Extension, Impl]]:
        return [(e, e.impls[hook]) for e in self.extensions if e.active and hook in e.impls]

    def mark_faulty(self, extension: Extension, hook: str, exc: BaseException) -> None:
        with self._lock:
            if extension.fault is not None:
                return
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            extension.fault = Fault(extension.name, hook, f"{exc.__class__.__name__}: {exc}", tb, False)
        log.error("extension %s is faulty (%s): %s; its hooks are skipped from now on",
                  extension.name, hook, extension.fault.message)

    def _call(self, extension: Extension, impl: Impl, args: Mapping[str, Any],
              check: Callable[[Any], Any] | None = None, extra: Mapping[str, Any] | None = None) -> tuple[bool, Any]:
        """(True, value) or (False, None) after marking the extension faulty."""
        try:
            value = impl.call(args, extra)
            return True, (check(value) if check else value)
        except Exception as exc:
            self.mark_faulty(extension, impl.hook, exc)
            return False, None

    def _chain(self, hook: str, value: Any, args: Callable[[Any], dict[str, Any]],
               check: Callable[[Any], Any]) -> Any:
        for extension, impl in self._impls(hook):
            ok, result = self._call(extension, impl, args(value), check)
            if ok:
                value = result
        return value

    def call_one(self, extension: Extension, hook: str, **args: Any) -> tuple[bool, Any]:
        impl = extension.impls.get(hook)
        if impl is None or not extension.active:
            return False, None
        return self._call(extension, impl, args)

    # -- the hooks, typed -----------------------------------------------------------------

    def input(self, string: str, state: dict[str, Any], is_chat: bool) -> str:
        return self._chain("input_modifier", string,
                           lambda s: {"string": s, "state": state, "is_chat": is_chat}, _str)

    def output(self, string: str, state: dict[str, Any], is_chat: bool) -> str:
        return self._chain("output_modifier", string,
                           lambda s: {"string": s, "state": state, "is_chat": is_chat}, _str)

    def chat_input(self, text: str, visible_text: str, state: dict[str, Any]) -> tuple[str, str]:
        return self._chain("chat_input_modifier", (text, visible_text),
                           lambda v: {"text": v[0], "visible_text": v[1], "state": state}, _two_str)

    def bot_prefix(self, string: str, state: dict[str, Any]) -> str:
        return self._chain("bot_prefix_modifier", string, lambda s: {"string": s, "state": state}, _str)

    def state(self, state: dict[str, Any], validate: Callable[[dict[str, Any]], Any] | None = None) -> dict[str, Any]:
        """Chained state_modifier; each gets its own copy, so a failing one changes nothing.

        `validate` (e.g. the sampling values' check) refuses a state that cannot be used.
        """

        def check(value: Any) -> dict[str, Any]:
            if not isinstance(value, dict):
                raise HookError(f"state_modifier must return a dict, not {type(value).__name__}")
            if validate is not None:
                validate(value)
            return value

        return self._chain("state_modifier", state, lambda s: {"state": copy.deepcopy(s)}, check)

    def history(self, history: Any) -> Any:
        """Chained history_modifier; the result must have the type it was given."""
        kind = type(history)

        def check(value: Any) -> Any:
            if not isinstance(value, kind):
                raise HookError(f"history_modifier must return a {kind.__name__}, not {type(value).__name__}")
            return value

        return self._chain("history_modifier", history, lambda h: {"history": copy.deepcopy(h)}, check)

    def chat_prompt(self, user_input: str, state: dict[str, Any], **kwargs: Any) -> str | None:
        """The first custom_generate_chat_prompt that returns a str; None = build it yourself."""
        for extension, impl in self._impls("custom_generate_chat_prompt"):
            ok, value = self._call(extension, impl, {"user_input": user_input, "state": state},
                                   _optional(str, "custom_generate_chat_prompt"), extra=kwargs)
            if ok and value is not None:
                return value
        return None

    def tokenized_length(self, prompt: str) -> int | None:
        """The first custom_tokenized_length that answers; None = count with the tokenizer."""
        for extension, impl in self._impls("custom_tokenized_length"):
            ok, value = self._call(extension, impl, {"prompt": prompt}, _count)
            if ok and value is not None:
                return value
        return None

    def custom_reply(self, question: str, original_question: str, seed: int, state: dict[str, Any],
                     stopping_strings: Sequence[str], is_chat: bool) -> Iterator[tuple[str, str]] | None:
        """(extension, reply so far) from the first custom_generate_reply that yields anything.

        None when no enabled extension has the hook.  An extension that yields nothing
        declines (the next one, or else the model, answers); one that fails or yields a
        non-string is marked faulty and its reply ends where it was.
        """
        impls = self._impls("custom_generate_reply")
        if not impls:
            return None
        args = {"question": question, "original_question": original_question, "seed": seed,
                "state": state, "stopping_strings": list(stopping_strings), "is_chat": is_chat}

        def run() -> Iterator[tuple[str, str]]:
            for extension, impl in impls:
                produced = False
                try:
                    replies = impl.call(args)
                    for text in [replies] if isinstance(replies, str) else replies:
                        produced = True
                        yield extension.name, _str(text, "custom_generate_reply")
                except Exception as exc:
                    self.mark_faulty(extension, "custom_generate_reply", exc)
                if produced:
                    return

        return run()

    def tokenizer(self, state: dict[str, Any], prompt: str, input_ids: Any, input_embeds: Any = None,
                  vocab_size: int | None = None) -> tuple[str, Any, Any]:
        """Chained tokenizer_modifier -> (prompt, input_ids, input_embeds).

        With `vocab_size`, ids outside the vocabulary are refused (docs/SECURITY.md).
        """
        import torch

        def check(value: Any) -> tuple[str, Any, Any]:
            if not isinstance(value, (tuple, list)) or len(value) != 3:
                raise HookError("tokenizer_modifier must return (prompt, input_ids, input_embeds)")
            text, ids, embeds = value
            if not isinstance(text, str):
                raise HookError("tokenizer_modifier: prompt must be a str")
            if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[0] != 1 or ids.is_floating_point():
                raise HookError("tokenizer_modifier: input_ids must be an integer tensor of shape (1, n)")
            if ids.shape[1] == 0:
                raise HookError("tokenizer_modifier: input_ids must not be empty")
            if vocab_size is not None and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
                raise HookError(f"tokenizer_modifier: token ids must be within the vocabulary (0..{vocab_size - 1})")
            if embeds is not None and (not isinstance(embeds, torch.Tensor) or embeds.dim() != 3
                                       or tuple(embeds.shape[:2]) != tuple(ids.shape)):
                raise HookError("tokenizer_modifier: input_embeds must be None or a (1, n, hidden) tensor")
            return text, ids, embeds

        return self._chain("tokenizer_modifier", (prompt, input_ids, input_embeds),
                           lambda v: {"state": state, "prompt": v[0], "input_ids": v[1], "input_embeds": v[2]},
                           check)

    def logits_processors(self, processor_list: Sequence[Any], input_ids: Any, tokenizer: Any = None,
                          state: dict[str, Any] | None = None) -> Any:
        """Chained logits_processor_modifier.

        Each extension gets a copy of the list (changing it in place is the Text
        Generation WebUI way; returning a list also works).  Every processor it adds is
        wrapped, so one that raises or returns a bad tensor during generation marks
        its extension faulty and leaves the scores as they were.
        """
        from transformers import LogitsProcessorList

        current = LogitsProcessorList(processor_list)
        for extension, impl in self._impls("logits_processor_modifier"):
            working = LogitsProcessorList(current)
            ok, returned = self._call(
                extension, impl,
                {"processor_list": working, "input_ids": input_ids, "tokenizer": tokenizer, "state": state},
            )
            if not ok:
                continue
            result = working if returned is None else returned
            if not isinstance(result, list) or not all(callable(p) for p in result):
                self.mark_faulty(extension, "logits_processor_modifier",
                                 HookError("logits_processor_modifier must leave a list of logits processors"))
                continue
            before = {id(p) for p in current}
            current = LogitsProcessorList(
                p if id(p) in before else GuardedProcessor(self, extension, p) for p in result
            )
        return current

    # -- page and registration ------------------------------------------------------------

    def css(self) -> str:
        return "\n".join(f"/* {e.name} */\n{css}" for e, css in self._strings("custom_css"))

    def js(self) -> str:
        """Each extension's script in its own try block, so one error does not stop the others."""
        parts = [f"try {{\n{js}\n}} catch (e) {{ console.error('extension {e.name}:', e); }}"
                 for e, js in self._strings("custom_js")]
        return "() => {\n" + "\n".join(parts) + "\n}" if parts else ""

    def _strings(self, hook: str) -> list[tuple[Extension, str]]:
        out = []
        for extension, impl in self._impls(hook):
            ok, value = self._call(extension, impl, {}, _str)
            if ok and value:
                out.append((extension, value))
        return out

    def register_loaders(self, registry: Any) -> None:
        """Add extensions' loaders after the built-in ones (first wins on a name)."""
        for extension, impl in self._impls("register_loaders"):

            def register(loader: Any, _ext: Extension = extension) -> None:
                try:
                    registry.register(loader)
                except ValueError as exc:
                    self.warnings.append(f"extension {_ext.name}: loader not added: {exc} (the first one is kept)")

            self._call(extension, impl, {"register": register})

    def register_api_routes(self, api: Any) -> None:
        """Mount extensions' API routes at /v1/extensions/<name>/..., behind the API key."""
        for extension, impl in self._impls("register_api_routes"):

            def register(path: str, endpoint: Callable[..., Any], methods: Sequence[str] = ("GET",),
                         _ext: Extension = extension) -> None:
                if not isinstance(path, str) or not path.startswith("/") or ".." in path:
                    raise HookError(f"route path must start with '/' and not contain '..': {path!r}")
                api.add_api_route(f"/v1/extensions/{_ext.name}{path}", self._guard_endpoint(_ext, endpoint),
                                  methods=list(methods))

            self._call(extension, impl, {"register": register})

    def _guard_endpoint(self, extension: Extension, endpoint: Callable[..., Any]) -> Callable[..., Any]:
        """An extension's route that fails marks it faulty and answers 500 naming it;
        once faulty, its routes answer 503.  FastAPI reads the original signature."""
        from fastapi import HTTPException

        def refuse_if_faulty() -> None:
            if not extension.active:
                raise HTTPException(503, f"extension {extension.name} is switched off after a fault")

        def failed(exc: Exception) -> HTTPException:
            self.mark_faulty(extension, "register_api_routes", exc)
            return HTTPException(500, f"extension {extension.name} failed: {exc.__class__.__name__}")

        if inspect.iscoroutinefunction(endpoint):

            @functools.wraps(endpoint)
            async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                refuse_if_faulty()
                try:
                    return await endpoint(*args, **kwargs)
                except HTTPException:
                    raise
                except Exception as exc:
                    raise failed(exc) from exc

            return guarded_async

        @functools.wraps(endpoint)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            refuse_if_faulty()
            try:
                return endpoint(*args, **kwargs)
            except HTTPException:
                raise
            except Exception as exc:
                raise failed(exc) from exc

        return guarded

    def tabs(self) -> list[tuple[Extension, str, Callable[[Any], Any]]]:
        """Tabs from register_tabs, in order; on a repeated title the first is kept."""
        found: list[tuple[Extension, str, Callable[[Any], Any]]] = []
        for extension, impl in self._impls("register_tabs"):

            def register(title: str, render: Callable[[Any], Any], _ext: Extension = extension) -> None:
                if not isinstance(title, str) or not title.strip() or not callable(render):
                    raise HookError("register(title, render): a non-empty title and a callable")
                if any(t == title for _, t, _ in found):
                    self.warnings.append(f"extension {_ext.name}: a tab titled {title!r} already exists; "
                                         "the first one is kept")
                    return
                found.append((_ext, title, render))

            self._call(extension, impl, {"register": register})
        return found


class GuardedProcessor:
    """A logits processor from an extension: a failure disables it, never the request."""

    def __init__(self, host: ExtensionHost, extension: Extension, processor: Callable[..., Any]):
        self.host = host
        self.extension = extension
        self.processor = processor

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if not self.extension.active:
            return scores
        try:
            out = self.processor(input_ids, scores)
            if getattr(out, "shape", None) != scores.shape:
                raise HookError(f"the logits processor returned {type(out).__name__} "
                                f"{tuple(getattr(out, 'shape', ()))}, not scores of shape {tuple(scores.shape)}")
            return out
        except Exception as exc:
            self.host.mark_faulty(self.extension, "logits_processor_modifier", exc)
            return scores


def _str(value: Any, hook: str = "") -> str:
    if not isinstance(value, str):
        raise HookError(f"{hook or 'the hook'} must return a str, not {type(value).__name__}")
    return value


def _two_str(value: Any) -> tuple[str, str]:
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise HookError("chat_input_modifier must return (text, visible_text), two str")
    return value[0], value[1]


def _optional(kind: type, hook: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value is not None and not isinstance(value, kind):
            raise HookError(f"{hook} must return {kind.__name__} or None, not {type(value).__name__}")
        return value

    return check


def _count(value: Any) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise HookError(f"custom_tokenized_length must return a count (int >= 0), not {value!r}")
    return value


def load_extensions(
    names: Sequence[str],
    available: Mapping[str, Source],
    overrides: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> ExtensionHost:
    """Import and register the named extensions, in this order.

    Only names in `available` (what discovery found) are ever imported; others are
    reported and skipped.  Import errors, misspelled hooks and bad signatures are
    reported (Session tab, start-up log) and the app starts without that extension.
    """
    from webui.paths import NameRefused, pick

    host = ExtensionHost(available)
    host.warnings.extend(notes)
    seen: set[str] = set()
    listing = {name: source.path or source.where for name, source in available.items()}
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        try:
            pick(name, listing, "extension")  # type: ignore[arg-type]
        except NameRefused as exc:
            host.warnings.append(f"{exc} (not in extensions/, user_data/extensions/ or an installed package)")
            continue
        source = available[name]
        try:
            plugin = import_extension(source)
        except Exception as exc:
            host._startup_fault(name, "import", exc)
            continue
        host.add(name, plugin, source, overrides)
    return host
