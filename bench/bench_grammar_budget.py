"""Grammar and template budgets: a normal structured chat request with them ÷ without, same run.

    .venv/bin/python bench/bench_grammar_budget.py [--rounds 5] [--tokens 16] [--calls 300]

A normal structured request is what /v1/chat/completions does for a short chat with a
JSON schema: check its values (the schema compiled), render the model's chat template,
tokenize the prompt, then decode --tokens tokens with the schema enforced (demo model).

- with the budgets (today's code): the schema's depth measured, its outcome read from
  the cache the compile worker filled on first sight (webui/generation/grammar_compile.py),
  the template rendered by the budgeted sandbox (webui/chat/template_sandbox.py);
- baseline (the code before them): the schema converted and validated by llguidance in
  this process on every request, the template rendered by transformers' renderer.

Prints the preparation alone (median µs per request over --calls, alternating blocks)
and the whole request (median of --rounds alternating rounds, wall clock and CPU
seconds of this process), as ratios; and, once,
the first sight of a new schema (the worker's round trip) against an in-process compile.
The decoding step is today's in both (the engine now takes the cached grammar too).
"""

from __future__ import annotations

import json
import statistics
import time

from bench_batching import engine_for
from common import bench_parser
from llguidance import LLMatcher
from report import figure

from webui.chat.prompt import render_chat_prompt
from webui.generation.engine import GenerationRequest
from webui.generation.grammar_compile import JSON_DEFAULTS, grammar_problem
from webui.generation.params import make_params

SCHEMA = json.dumps({
    "type": "object",
    "properties": {"book": {"enum": ["Genesis", "Exodus", "Psalms", "John"]},
                   "chapter": {"type": "integer", "minimum": 1, "maximum": 150},
                   "text": {"type": "string", "maxLength": 60}},
    "required": ["book", "chapter", "text"], "additionalProperties": False,
})
MESSAGES = [{"role": "system", "content": "Answer in JSON."},
            {"role": "user", "content": "Which verse says: Let there be light?"}]


def prepare_budgeted(tokenizer, tokens: int):
    params = make_params({"json_schema": SCHEMA, "temperature": 0.0, "max_new_tokens": tokens})
    prompt = render_chat_prompt(tokenizer, MESSAGES)
    len(tokenizer(prompt)["input_ids"])
    return prompt, params


def prepare_baseline(tokenizer, tokens: int):
    grammar = LLMatcher.grammar_from_json_schema(json.loads(SCHEMA), defaults=JSON_DEFAULTS)
    is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        raise SystemExit(f"the schema does not compile: {messages}")
    params = make_params({"temperature": 0.0, "max_new_tokens": tokens}).model_copy(update={"json_schema": SCHEMA})
    prompt = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    len(tokenizer(prompt)["input_ids"])
    return prompt, params


def per_call(function, tokenizer, tokens: int, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        function(tokenizer, tokens)
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = bench_parser(__doc__, rounds=5)
    parser.add_argument("--calls", type=int, default=300)
    parser.set_defaults(tokens=16)
    args = parser.parse_args()
    engine = engine_for(args.model_dir, args.model, max_batch=8)
    tokenizer = engine.manager.current.tokenizer
    print(f"model: {engine.manager.current.describe()}")

    fresh = json.dumps({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})
    start = time.perf_counter()
    grammar_problem("json_schema", fresh)  # starts the worker
    first_worker = time.perf_counter() - start
    other = fresh.replace('"n"', '"m"')
    start = time.perf_counter()
    grammar_problem("json_schema", other)
    warm_worker = time.perf_counter() - start
    start = time.perf_counter()
    LLMatcher.validate_grammar_with_warnings(LLMatcher.grammar_from_json_schema(json.loads(other),
                                                                                  defaults=JSON_DEFAULTS))
    in_process = time.perf_counter() - start
    print(f"  a schema seen for the first time: {warm_worker * 1e3:.2f} ms through the compile worker "
          f"(its start: {first_worker * 1e3:.0f} ms, once) vs {in_process * 1e3:.2f} ms compiled in this process")

    prepare_budgeted(tokenizer, args.tokens)  # fills the cache, as the first request does
    prepare_baseline(tokenizer, args.tokens)
    preps: dict[str, list[float]] = {"budgeted": [], "baseline": []}
    for block in range(6):
        order = ("budgeted", "baseline") if block % 2 == 0 else ("baseline", "budgeted")
        for side in order:
            function = prepare_budgeted if side == "budgeted" else prepare_baseline
            preps[side].append(per_call(function, tokenizer, args.tokens, args.calls // 6 or 1))
    prep = {side: statistics.median(values) for side, values in preps.items()}
    print(f"  preparation (check, render, tokenize): with budgets {prep['budgeted'] * 1e6:.0f} us, "
          f"baseline {prep['baseline'] * 1e6:.0f} us, ratio {prep['budgeted'] / prep['baseline']:.2f}")

    wall: dict[str, list[float]] = {"budgeted": [], "baseline": []}
    cpu: dict[str, list[float]] = {"budgeted": [], "baseline": []}
    for round_ in range(args.rounds):
        order = ("budgeted", "baseline") if round_ % 2 == 0 else ("baseline", "budgeted")
        for side in order:
            function = prepare_budgeted if side == "budgeted" else prepare_baseline
            start, start_cpu = time.perf_counter(), time.process_time()
            prompt, params = function(tokenizer, args.tokens)
            engine.generate(GenerationRequest(prompt, params)).text()
            wall[side].append(time.perf_counter() - start)
            cpu[side].append(time.process_time() - start_cpu)
    request = {side: statistics.median(values) for side, values in wall.items()}
    request_cpu = {side: statistics.median(values) for side, values in cpu.items()}
    ratio, ratio_cpu = request["budgeted"] / request["baseline"], request_cpu["budgeted"] / request_cpu["baseline"]
    # The CPU seconds of this process are the steadier figure on a shared machine.
    print(f"  whole request ({args.tokens} tokens with the schema): with budgets {request['budgeted'] * 1e3:.1f} ms, "
          f"baseline {request['baseline'] * 1e3:.1f} ms, ratio {ratio:.3f} (wall clock); CPU seconds "
          f"{request_cpu['budgeted'] * 1e3:.1f} vs {request_cpu['baseline'] * 1e3:.1f} ms, ratio {ratio_cpu:.3f}")
    engine.manager.unload()
    figure("A structured chat request with grammar/template budgets ÷ without (demo model)", f"{ratio_cpu:.3f}",
           f"CPU seconds of the process, median of {args.rounds} alternating rounds, {args.tokens} tokens; wall "
           f"clock {ratio:.3f}; preparation alone "
           f"{prep['budgeted'] / prep['baseline']:.2f} ({prep['budgeted'] * 1e6:.0f} vs {prep['baseline'] * 1e6:.0f} us)")


if __name__ == "__main__":
    main()
