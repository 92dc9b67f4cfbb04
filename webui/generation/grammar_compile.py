"""A request's output constraint (grammar_string or json_schema) -> an llguidance grammar.

llguidance (github.com/guidance-ai/llguidance) compiles the grammar and, during
decoding, says which tokens may come next (webui/generation/samplers/grammar.py).
This module only turns the text a user gave into llguidance's grammar definition and
checks it; it needs no model, so SamplingParams can refuse a bad grammar or an
unsupported JSON-schema feature with the field named before anything is queued.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from llguidance import LLMatcher, grammar_from

# Compact JSON (", " and ": " separators, no free whitespace).  With flexible
# whitespace a small model can spend its whole budget on newlines and tabs between
# two keys and end cut short, as invalid JSON; a schema's own "x-guidance" key may
# still ask for flexible whitespace.
JSON_DEFAULTS = {"whitespace_flexible": False}


@dataclass(frozen=True)
class Constraint:
    """What a reply must match: `kind` is the SamplingParams field that asked for it."""

    kind: str  # "grammar_string" or "json_schema"
    text: str

    def grammar(self) -> str:
        """llguidance's grammar definition; ValueError when the text cannot be read."""
        if self.kind == "json_schema":
            try:
                schema = json.loads(self.text)
            except ValueError as exc:
                raise ValueError(f"not valid JSON: {exc}") from None
            if not isinstance(schema, (dict, bool)):
                raise ValueError("a JSON schema is an object (or true/false)")
            return LLMatcher.grammar_from_json_schema(schema, defaults=JSON_DEFAULTS)
        # GBNF (llama.cpp's and Text Generation WebUI's grammar files) or Lark, told
        # apart by llguidance's converter; a regex is written as Lark: start: /[0-9]+/
        return grammar_from("grammar", self.text)


def constraint_of(grammar_string: str, json_schema: str) -> Constraint | None:
    if grammar_string.strip():
        return Constraint("grammar_string", grammar_string)
    if json_schema.strip():
        return Constraint("json_schema", json_schema)
    return None


def grammar_problem(kind: str, text: str) -> str | None:
    """Why `text` cannot constrain a reply (None: it can)."""
    try:
        grammar = Constraint(kind, text).grammar()
    except ValueError as exc:
        return str(exc).splitlines()[0] if str(exc) else "the grammar cannot be read"
    is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        return _first_lines(messages[0] if messages else "the grammar is invalid")
    return None


def _first_lines(message: str, limit: int = 400) -> str:
    # llguidance's messages may quote the whole grammar; the start says what is wrong.
    message = " ".join(line.strip() for line in message.splitlines() if line.strip())
    return message if len(message) <= limit else message[: limit - 1] + "…"
