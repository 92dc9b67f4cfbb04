"""What telling thinking from the answer costs per streamed token: a reply streamed with a
thinking model's split on against off, one run.

    .venv/bin/python bench/bench_thinking.py [--model demo-kjv-4m] [--tokens 100] [--rounds 21]

With the split on, the engine follows the reply token by token (webui/generation/reasoning.py
ThinkingGate: it counts thinking tokens for the budget) and the reader splits each piece
into thinking and answer (ReasoningParser), as the chat and the API do.  The prompt ends
inside an open `<think>` block, so every token of the reply is thinking: the parser's
busiest case (it holds back each piece's trailing whitespace and any start of `</think>`).
Off, the same prompt streams as plain text.  Rounds alternate between the two so that the
machine's noise hits both alike; the printed ratio is tokens/s on over tokens/s off.

Then the gate and the parser alone, fed the pieces one reply streamed, against the time of
one decoding step: their share of a step, free of the noise in end-to-end rates.
"""

from __future__ import annotations

import statistics
import time

import torch
from common import PROMPT, bench_parser, load_model
from report import figure

from webui.generation.engine import GenerationEngine, GenerationRequest
from webui.generation.params import make_params
from webui.generation.reasoning import ReasoningParser, ThinkingFormat, ThinkingGate
from webui.generation.request import RenderedPrompt

FORMAT = ThinkingFormat()  # <think> ... </think>, as Qwen3, QwQ and the DeepSeek-R1 distills
OPENED = PROMPT + "\n<think>\n"  # the reply starts inside the thinking


def split(pieces: list[str]) -> tuple[str, str]:
    parser = ReasoningParser(FORMAT.opened(True))
    thinking, answer = [], []
    for piece in pieces:
        for part in parser.feed(piece):
            (thinking if part.part == "thinking" else answer).append(part.text)
    for part in parser.finish():
        (thinking if part.part == "thinking" else answer).append(part.text)
    return "".join(thinking), "".join(answer)


def main() -> None:
    args = bench_parser(__doc__, rounds=21).parse_args()
    manager, loaded = load_model(args)
    engine = GenerationEngine(manager)
    params = make_params({"temperature": 0.0, "max_new_tokens": args.tokens, "ban_eos_token": True})

    def run(on: bool) -> tuple[float, list[str]]:
        prompt = RenderedPrompt(OPENED, (), FORMAT if on else None)
        start = time.perf_counter()
        stream = engine.generate(GenerationRequest(prompt, params))
        pieces = []
        if on:
            parser = None  # the stream's markers are known once its first piece comes
            for piece in stream:
                if parser is None:
                    parser = ReasoningParser(stream.thinking)
                parser.feed(piece)
                pieces.append(piece)
            if parser is not None:
                parser.finish()
        else:
            for piece in stream:
                pieces.append(piece)
        return stream.stats.new_tokens / (time.perf_counter() - start), pieces

    run(False), run(True)  # warm-up
    off, on = [], []
    pieces: list[str] = []
    for round_ in range(args.rounds):
        for side in ((False, True) if round_ % 2 == 0 else (True, False)):
            rate, got = run(side)
            (on if side else off).append(rate)
            pieces = got if side else pieces
    ratios = [a / b for a, b in zip(on, off, strict=True)]
    thinking, answer = split(pieces)
    print(f"model: {loaded.describe()}  threads: {torch.get_num_threads()}")
    print(f"a reply of {len(pieces)} pieces: {len(thinking)} characters of thinking, {len(answer)} of answer")
    print(f"split off: {statistics.median(off):.1f} tokens/s (median of {args.rounds})")
    print(f"split on:  {statistics.median(on):.1f} tokens/s")
    print(f"ratio (on / off): {statistics.median(ratios):.3f}")

    # The gate and the parser alone, on the pieces of one reply, against one decoding step.
    calls = 200
    start = time.perf_counter()
    for _ in range(calls):
        gate = ThinkingGate(FORMAT.opened(True))
        for piece in pieces:
            gate.push(piece)
        split(pieces)
    per_token = (time.perf_counter() - start) / calls / max(len(pieces), 1)
    step = 1 / statistics.median(off)
    print(f"the gate and the parser alone: {per_token * 1e6:.2f} us per token; one decoding step "
          f"{step * 1e3:.2f} ms; share {per_token / step:.5f}")
    figure("a thinking reply streamed with the split into thinking and answer ÷ without, end to end tokens/s",
           f"{statistics.median(ratios):.3f}", f"{args.tokens} tokens, all thinking; median of {args.rounds} "
           "paired rounds")
    figure("the thinking gate and parser alone, per streamed token", f"{per_token * 1e6:.2f} µs",
           f"{per_token / step:.5f} of one decoding step of {loaded.describe()}")


if __name__ == "__main__":
    main()
