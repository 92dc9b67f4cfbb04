"""A request's output constraint (grammar_string or json_schema) -> an llguidance grammar.

llguidance (github.com/guidance-ai/llguidance) compiles the grammar and, during
decoding, says which tokens may come next (webui/generation/samplers/grammar.py).
This module only turns the text a user gave into llguidance's grammar definition and
checks it; it needs no model, so SamplingParams can refuse a bad grammar or an
unsupported JSON-schema feature with the field named before anything is queued.

A grammar is hostile input to native code: its reference depth is measured here in
Python first (webui/generation/grammar_depth.py) and refused past MAX_DEPTH, and what
passes is compiled by a child process (webui/generation/grammar_worker.py) that may
crash or overrun without taking the server with it.  Outcomes are kept by the text's
hash, so the same grammar on the next request (or the engine's matcher for this one)
costs a dictionary look-up.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass

from webui.generation.grammar_depth import grammar_depth, schema_depth
from webui.generation.grammar_worker import JSON_DEFAULTS, CompilePool, Compiled, WorkerFailed

__all__ = ["JSON_DEFAULTS", "Constraint", "constraint_of", "grammar_problem", "compiled"]

# Longest chain of rule references (grammars) or of nested objects/arrays through
# $refs (schemas).  llguidance 1.9 needs ~3 KiB of stack per level and overflowed a
# 1 MiB stack at ~400; real grammars and schemas stay under 30 (llama.cpp's C grammar: 12).
MAX_DEPTH = 200
CACHE_ENTRIES = 256
CACHE_CHARS = 32 * 1024 * 1024  # compiled grammar text kept, in all

_pool = CompilePool()
_cache: OrderedDict[tuple[str, str], Compiled] = OrderedDict()
_cache_chars = 0
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class Constraint:
    """What a reply must match: `kind` is the SamplingParams field that asked for it."""

    kind: str  # "grammar_string" or "json_schema"
    text: str

    def grammar(self) -> str:
        """llguidance's grammar definition; ValueError when the text cannot constrain a reply."""
        outcome = compiled(self.kind, self.text)
        if outcome.grammar is None:
            raise ValueError(outcome.problem or "the grammar is invalid")
        return outcome.grammar


def constraint_of(grammar_string: str, json_schema: str) -> Constraint | None:
    if grammar_string.strip():
        return Constraint("grammar_string", grammar_string)
    if json_schema.strip():
        return Constraint("json_schema", json_schema)
    return None


def grammar_problem(kind: str, text: str) -> str | None:
    """Why `text` cannot constrain a reply (None: it can)."""
    return compiled(kind, text).problem


def compiled(kind: str, text: str) -> Compiled:
    """The outcome for `text`, from the cache or a compile worker.  Blocks for the
    compile (up to the worker's time budget): call it off an event loop."""
    key = (kind, hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest())
    with _cache_lock:
        outcome = _cache.get(key)
        if outcome is not None:
            _cache.move_to_end(key)
            return outcome
    outcome = _checked(kind, text)
    if outcome is None:
        try:
            outcome = _pool.compile("json_schema" if kind == "json_schema" else "grammar", text)
        except WorkerFailed as exc:
            outcome = Compiled(None, str(exc))
            if not exc.lasting:
                return outcome  # not kept: a timeout may pass on a quieter machine
    _keep(key, outcome)
    return outcome


def _checked(kind: str, text: str) -> Compiled | None:
    """The refusals that need no native code (None: compile it)."""
    if kind == "json_schema":
        try:
            schema = json.loads(text)
        except RecursionError:
            return Compiled(None, f"the schema is nested more than {MAX_DEPTH} levels deep")
        except ValueError as exc:
            return Compiled(None, f"not valid JSON: {exc}")
        if not isinstance(schema, (dict, bool)):
            return Compiled(None, "a JSON schema is an object (or true/false)")
        depth = schema_depth(schema)
        if depth > MAX_DEPTH:
            return Compiled(None, f"the schema is nested (through $ref too) {depth} levels deep; at most "
                            f"{MAX_DEPTH} are allowed")
        return None
    depth = grammar_depth(text)
    if depth > MAX_DEPTH:
        return Compiled(None, f"the grammar's rules reference each other {depth} levels deep; at most "
                        f"{MAX_DEPTH} are allowed")
    return None


def _keep(key: tuple[str, str], outcome: Compiled) -> None:
    global _cache_chars
    size = len(outcome.grammar or "") + len(outcome.problem or "")
    with _cache_lock:
        if key in _cache:
            return
        _cache[key] = outcome
        _cache_chars += size
        while _cache and (len(_cache) > CACHE_ENTRIES or _cache_chars > CACHE_CHARS):
            _, dropped = _cache.popitem(last=False)
            _cache_chars -= len(dropped.grammar or "") + len(dropped.problem or "")
