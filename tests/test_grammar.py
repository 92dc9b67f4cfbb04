"""Constrained decoding: grammar_string and json_schema enforced by the engine's chain,
on the tiny random-weight model (which on its own would never write JSON)."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from tests.schema_check import violations
from webui.generation.chain import build_chain
from webui.generation.engine import GenerationRequest
from webui.generation.grammar_compile import Constraint
from webui.generation.params import ParamsError, make_params
from webui.generation.samplers.grammar import GrammarState, GrammarTokenizers
from webui.remote.capabilities import ignored

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "user", "guest"]},
        "address": {"type": "object", "properties": {
            "city": {"type": "string", "maxLength": 16},
            "zip": {"type": "string", "maxLength": 6},
        }, "required": ["city", "zip"], "additionalProperties": False},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
        "active": {"type": "boolean"},
    },
    "required": ["name", "age", "role", "address", "tags", "active"],
    "additionalProperties": False,
}


def run(engine, prompt="Tell me about someone.", **values):
    stream = engine.generate(GenerationRequest(prompt, make_params({"max_new_tokens": 300, **values})))
    return stream.text(), stream.stats


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_json_schema_replies_parse_and_validate_whatever_the_seed(engine, seed):
    text, stats = run(engine, json_schema=json.dumps(PERSON), seed=seed, temperature=1.0)
    assert stats.finish_reason == "stop", text
    assert violations(json.loads(text), PERSON) == []


def test_unconstrained_reply_from_the_same_model_is_not_json(engine):
    # The check above is meaningful: the random-weight model does not write JSON by itself.
    text, _ = run(engine, seed=0, temperature=1.0, max_new_tokens=40)
    with pytest.raises(ValueError):
        json.loads(text)


def test_json_object_mode_gives_an_object(engine):
    text, stats = run(engine, json_schema='{"type": "object"}', temperature=0.0, max_new_tokens=200)
    if stats.finish_reason == "stop":
        assert isinstance(json.loads(text), dict)
    else:  # greedy may ramble inside one string: still a JSON object's beginning
        assert text.startswith("{")


@pytest.mark.parametrize(("grammar", "allowed"), [
    ('root ::= "yes" | "no"', {"yes", "no"}),  # GBNF, as Text Generation WebUI's grammar files
    ('start: "red" | "green" | "blue"', {"red", "green", "blue"}),  # Lark
])
def test_grammar_string_in_gbnf_or_lark_limits_the_reply(engine, grammar, allowed):
    for seed in range(3):
        text, stats = run(engine, grammar_string=grammar, seed=seed)
        assert text in allowed and stats.finish_reason == "stop"


def test_a_regex_written_as_lark(engine):
    text, _ = run(engine, grammar_string="start: /[0-9]{3}-[a-z]{2}/", seed=5)
    assert len(text) == 6 and text[:3].isdigit() and text[3] == "-" and text[4:].isalpha()


def test_stop_strings_do_not_cut_a_json_reply_short(engine):
    schema = {"type": "object", "properties": {"a": {"type": "string", "maxLength": 10},
                                               "b": {"type": "integer", "minimum": 0, "maximum": 9}},
              "required": ["a", "b"], "additionalProperties": False}
    text, _ = run(engine, json_schema=json.dumps(schema), stop=['"', "}", ","], seed=1)
    assert violations(json.loads(text), schema) == []


def test_samplers_that_cut_hard_or_ban_the_end_still_give_valid_json(engine):
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 50}},
              "required": ["n"], "additionalProperties": False}
    # ban_eos_token would leave no token once the object is complete; no_repeat_ngram and
    # top_k=1 cut the allowed set from other sides: the grammar wins every time.
    for values in ({"ban_eos_token": True}, {"top_k": 1, "min_p": 0.9}, {"no_repeat_ngram_size": 1},
                   {"temperature": 3.0, "top_p": 0.1}, {"mirostat_mode": 2, "mirostat_tau": 1.0}):
        text, stats = run(engine, json_schema=json.dumps(schema), seed=3, max_new_tokens=40, **values)
        assert stats.finish_reason == "stop", (values, text)
        assert violations(json.loads(text), schema) == [], values


def test_the_grammar_step_runs_before_the_samplers(runtime):
    loaded = runtime.models.current
    backend = loaded.backend
    params = make_params({"json_schema": '{"type": "object"}', "top_k": 5, "repetition_penalty": 1.2})
    tokenizer = GrammarTokenizers().get(loaded.tokenizer, backend.vocab_size(), backend.eos_ids())
    state = GrammarState(Constraint("json_schema", params.json_schema), tokenizer, backend.vocab_size())
    chain = build_chain(params, loaded.tokenizer, backend, backend.vocab_size(), backend.eos_ids(), grammar=state)
    assert type(chain[0]).__name__ == "GrammarLogitsProcessor"
    scores = chain[0](None, torch.zeros(1, backend.vocab_size()))
    allowed = torch.isfinite(scores[0]).nonzero().flatten().tolist()
    assert allowed and all(loaded.tokenizer.decode([t]).strip().startswith("{") for t in allowed)


def test_end_of_text_is_allowed_only_when_the_grammar_accepts(runtime):
    loaded = runtime.models.current
    backend, tok = loaded.backend, loaded.tokenizer
    eos = tok.eos_token_id
    tokenizer = GrammarTokenizers().get(tok, backend.vocab_size(), backend.eos_ids())
    state = GrammarState(Constraint("grammar_string", 'start: "ab" | "abab"'), tokenizer, backend.vocab_size())
    assert not state.allowed()[eos]
    for token in tokenizer.tokenize_str("ab"):
        state.advance(token)
    assert state.accepting and state.allowed()[eos]  # "ab" is complete; "abab" may follow
    with pytest.raises(ValueError):
        state.advance(tok.encode("z", add_special_tokens=False)[-1])


@pytest.mark.parametrize(("values", "field"), [
    ({"json_schema": '{"type": "strin"}'}, "json_schema"),
    ({"json_schema": "[1, 2]"}, "json_schema"),
    ({"json_schema": "{not json"}, "json_schema"),
    ({"json_schema": '{"type": "string", "pattern": "(?<=a)b"}'}, "json_schema"),
    ({"json_schema": '{"type": "string", "format": "no-such-format"}'}, "json_schema"),
    ({"json_schema": '{"$ref": "#/definitions/missing"}'}, "json_schema"),
    ({"grammar_string": "root ::= ["}, "grammar_string"),
    ({"grammar_string": "start: undefined_rule"}, "grammar_string"),
    ({"grammar_string": 'start: "a"', "json_schema": '{"type": "object"}'}, "json_schema"),
])
def test_a_bad_grammar_or_unsupported_schema_is_refused_with_its_field(values, field):
    with pytest.raises(ParamsError) as caught:
        make_params(values)
    assert str(caught.value).startswith(f"{field}:")


def test_a_bad_grammar_never_reaches_the_queue(engine):
    before = engine.pending
    with pytest.raises(ParamsError):
        engine.generate(GenerationRequest("x", make_params({"grammar_string": "root ::= ["})))
    assert engine.pending == before


def test_constrained_and_free_requests_batched_together_each_get_their_own(engine):
    free = {"temperature": 0.0, "max_new_tokens": 24, "ban_eos_token": True}
    solo = run(engine, "Once upon a time", **free)[0]
    schema = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "maxItems": 4}
    results: dict[str, str] = {}

    def worker(name, prompt, values):
        results[name] = run(engine, prompt, **values)[0]

    threads = [threading.Thread(target=worker, args=("free", "Once upon a time", free))]
    threads += [threading.Thread(target=worker, args=(f"json{i}", "Numbers:", {"json_schema": json.dumps(schema),
                                                                                "seed": i}))
                for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results["free"] == solo
    for i in range(3):
        assert violations(json.loads(results[f"json{i}"]), schema) == []


def test_remote_engines_refuse_grammars_by_name_unless_they_are_another_webui():
    params = make_params({"json_schema": '{"type": "object"}'})
    assert ignored("openai", params) == ["json_schema"]
    assert ignored("llama.cpp", make_params({"grammar_string": 'start: "a"'})) == ["grammar_string"]
    assert ignored("webui", params) == []
