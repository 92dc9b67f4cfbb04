"""Per-token decoding cost with a control vector applied vs none, in one run.

    .venv/bin/python bench/bench_steer.py [--model demo-kjv-4m] [--tokens 100] [--rounds 7] [--no-gguf]

A vector is trained on the model from a few contrast pairs (webui/steer/train.py), then
the same greedy request decodes with it at strength 1 and without, rounds alternating;
the figure is steered tokens/s ÷ plain (goal: within noise).  The same file then steers
the demo's GGUF copy (llama.cpp's llama_set_adapter_cvec), measured the same way.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from common import PROMPT, bench_parser, load_model
from report import figure

from webui.generation.engine import GenerationEngine, GenerationRequest
from webui.generation.params import make_params
from webui.steer import cvec_file
from webui.steer.library import VectorLibrary
from webui.steer.train import Pairs, train_vector

PAIRS = Pairs("I love thee, and my heart is full of love.", "I hate thee, and my heart is full of hatred.",
              ("And he said unto them,", "Then the people went", "And it came to pass that", "Behold, the king"))
GGUF_MODEL = "demo-kjv-4m-gguf"


def measure(engine: GenerationEngine, tokens: int, rounds: int) -> tuple[float, float, float]:
    base = {"max_new_tokens": tokens, "do_sample": False, "ban_eos_token": True}
    plain = make_params(base)
    steered = make_params({**base, "control_vectors": [{"name": "love", "strength": 1.0}]})

    def rate(params) -> float:
        start = time.perf_counter()
        stream = engine.generate(GenerationRequest(PROMPT, params))
        stream.text()
        return stream.stats.new_tokens / (time.perf_counter() - start)

    rate(plain), rate(steered)  # warm-up
    ratios, plains = [], []
    for _ in range(rounds):
        plains.append(rate(plain))
        ratios.append(rate(steered) / plains[-1])
    return statistics.median(ratios), min(ratios), statistics.median(plains)


def step_times(backend, ids: list[int], steer, steps: int) -> list[float]:
    """Seconds of each backend.step of one sequence (greedy), with `steer` or none."""
    slot = backend.start(ids, reuse=False, **({"steer": steer} if steer is not None else {}))
    token = int(slot.logits.argmax())
    times = []
    try:
        for _ in range(steps):
            start = time.perf_counter()
            logits = backend.step([slot], [token])
            times.append(time.perf_counter() - start)
            token = int(logits[0].argmax())
    finally:
        backend.finish(slot, keep=False)
    return times


def per_step(loaded, folder: Path, steps: int, rounds: int) -> tuple[float, float]:
    """The fastest step with a vector ÷ without, and the median ratio of rounds' medians:
    the least disturbed steps, for a machine that others share."""
    library = VectorLibrary(folder)
    steer = library.resolve(make_params({"control_vectors": [{"name": "love"}]}).control_vectors,
                            loaded.backend.capabilities.steering)
    ids = loaded.tokenizer.encode(PROMPT)
    fastest = {True: float("inf"), False: float("inf")}
    ratios = []
    for _ in range(rounds):
        medians = {}
        for steered in (False, True):
            times = step_times(loaded.backend, ids, steer if steered else None, steps)
            fastest[steered] = min(fastest[steered], min(times))
            medians[steered] = statistics.median(times)
        ratios.append(medians[True] / medians[False])
    return fastest[True] / fastest[False], statistics.median(ratios)


def main() -> None:
    parser = bench_parser(__doc__, rounds=7)
    parser.add_argument("--no-gguf", action="store_true", help="skip the GGUF copy")
    args = parser.parse_args()
    manager, loaded = load_model(args)
    folder = Path(tempfile.mkdtemp(prefix="bench-steer-"))
    start = time.perf_counter()
    vector = train_vector(loaded.model, loaded.tokenizer, PAIRS, model_hint="llama")
    trained = time.perf_counter() - start
    cvec_file.write(folder / "love.gguf", vector)
    engine = GenerationEngine(manager, vectors=VectorLibrary(folder))
    ratio, low, plain = measure(engine, args.tokens, args.rounds)
    rounds = f"median of {args.rounds} rounds of {args.tokens} tokens (lowest {low:.3f}); plain {plain:.0f} tokens/s"
    print(f"model: {loaded.describe()}; trained in {trained:.2f} s from {len(PAIRS.prompts)} prompt pairs")
    print(f"Transformers: steered ÷ plain tokens/s = {ratio:.3f} ({rounds})")
    figure("control vector at strength 1 ÷ none, decode tokens/s (Transformers, demo model)", f"{ratio:.3f}", rounds)
    figure("training a control vector from 4 prompt pairs (demo model)", f"{trained:.2f} s")
    engine.close()
    fast, median = per_step(loaded, folder, args.tokens, args.rounds)
    print(f"Transformers, backend.step alone: step time, fastest steered ÷ fastest plain = {fast:.3f}; median ratio {median:.3f}")
    figure("time of one decode step with a control vector ÷ without, fastest of each (Transformers, demo model)", f"{fast:.3f}",
           f"{args.rounds} rounds of {args.tokens} steps; median of the rounds' median ratios {median:.3f}")
    if args.no_gguf or args.model != parser.get_default("model"):
        return
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("llama-cpp-python is not installed: the GGUF side is skipped")
        return
    manager.unload()
    gguf = manager.load(GGUF_MODEL)
    engine = GenerationEngine(manager, vectors=VectorLibrary(folder))
    ratio, low, plain = measure(engine, args.tokens, args.rounds)
    engine.close()
    fast, median = per_step(gguf, folder, args.tokens, args.rounds)
    print(f"llama.cpp, backend.step alone: step time, fastest steered ÷ fastest plain = {fast:.3f}; median ratio {median:.3f}")
    figure("time of one decode step with a control vector ÷ without, fastest of each (llama.cpp, demo Q8_0)", f"{fast:.3f}",
           f"{args.rounds} rounds of {args.tokens} steps; median of the rounds' median ratios {median:.3f}")
    rounds = f"median of {args.rounds} rounds of {args.tokens} tokens (lowest {low:.3f}); plain {plain:.0f} tokens/s"
    print(f"llama.cpp ({gguf.describe()}): steered ÷ plain tokens/s = {ratio:.3f} ({rounds})")
    figure("control vector at strength 1 ÷ none, decode tokens/s (llama.cpp, demo Q8_0)", f"{ratio:.3f}", rounds)
    manager.unload()


if __name__ == "__main__":
    main()
