"""Building a chat prompt with a 5,000-entry lorebook and a 500-message chat, as a ratio
to the demo model's time for one token, both measured in this run.

    .venv/bin/python bench/bench_lore.py [--model demo-kjv-4m] [--rounds 7] [--entries 5000]

The lorebook is a SillyTavern file imported as a user would (webui/chat/lorebooks.py):
plain keys, one in seven a /regex/i, one in five with secondary keys, recursion on; the
chat's messages name some of them, so entries fire, recurse and meet the budget.  A
prompt is built the way a reply builds it (webui/chat/prompt.py's ChatPrompt with the
model's tokenizer and context: the scan, the template, counting and cutting the oldest
turns to fit), fresh each round so nothing is cached between rounds except the compiled
keys, as in a running server.  One token is the model's decode step: (generate 65 tokens
- generate 1) / 64, greedy, end of text banned.  Target: well under 1.
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import bench_parser, load_model
from report import figure

from webui.chat.characters import Character
from webui.chat.lore import LoreSettings, activate
from webui.chat.lorebooks import LorebookLibrary
from webui.chat.prompt import ChatPrompt, ChatSetup
from webui.chat.roleplay import Roleplay

MESSAGES = 500


def book(entries: int, rng: random.Random) -> dict:
    words = [f"{rng.choice('bcdfghklmnprstvz')}{rng.choice('aeiou')}{rng.choice('lmnrst')}{i}" for i in range(entries)]
    out = {}
    for i, word in enumerate(words):
        key = f"/{word}(s|es)?\\b/i" if i % 7 == 0 else word
        entry = {"uid": i, "key": [key, f"{word} tower"], "keysecondary": [], "comment": word,
                 "content": f"{word} is a place of the old world; it mentions {words[(i * 31) % entries]}.",
                 "constant": i % 1000 == 0, "selective": True, "selectiveLogic": 0, "order": rng.randint(0, 200),
                 "position": rng.choice([0, 1, 4]), "depth": rng.randint(0, 6), "disable": False}
        if i % 5 == 0:
            entry["keysecondary"] = [words[(i + 1) % entries]]
            entry["selectiveLogic"] = rng.choice([0, 1, 2, 3])
        out[str(i)] = entry
    return {"entries": out}


def main() -> None:
    parser = bench_parser(__doc__, rounds=7)
    parser.add_argument("--entries", type=int, default=5000)
    args = parser.parse_args()
    rng = random.Random(7)
    manager, loaded = load_model(args)
    tokenizer, model = loaded.tokenizer, loaded.model

    with tempfile.TemporaryDirectory() as folder:
        library = LorebookLibrary(Path(folder))
        data = book(args.entries, rng)
        started = time.perf_counter()
        name = library.import_bytes(json.dumps(data).encode(), "World.json")
        imported = time.perf_counter() - started
        entries = tuple(library.entries(name))
    names = [e["comment"] for e in data["entries"].values()]
    turns = [{"role": "user" if i % 2 == 0 else "assistant",
              "content": f"message {i}: we walked past {rng.choice(names)} and the evening came"}
             for i in range(MESSAGES)]
    setup = ChatSetup(mode="chat", character=Character(name="Guide", context="{{char}} knows the old world."))
    room = loaded.context_length - 64
    roleplay = Roleplay(entries, LoreSettings(), {}, None, seed="bench")

    def build(with_lore: bool) -> tuple[float, ChatPrompt]:
        prompt = ChatPrompt(setup if not with_lore else ChatSetup(**{**setup.__dict__, "roleplay": roleplay}),
                            turns)
        start = time.perf_counter()
        prompt(tokenizer, room)
        return time.perf_counter() - start, prompt

    def scan() -> float:
        start = time.perf_counter()
        activate(entries, [t["content"] for t in turns], LoreSettings(), count=lambda s: len(tokenizer.encode(s)))
        return time.perf_counter() - start

    ids = tokenizer("And God said, Let there be light", return_tensors="pt").input_ids

    def generate(tokens: int) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        return time.perf_counter() - start

    build(True), build(False), generate(8)  # warm-up
    with_lore, without, scans, per_token = [], [], [], []
    prompt = None
    for _ in range(args.rounds):
        seconds, prompt = build(True)
        with_lore.append(seconds)
        without.append(build(False)[0])
        scans.append(scan())
        per_token.append((generate(65) - generate(1)) / 64)
    token = statistics.median(per_token)
    built, plain, scanned = statistics.median(with_lore), statistics.median(without), statistics.median(scans)
    fired = len(prompt.woven.activation.entries) if prompt and prompt.woven else 0
    print(f"model: {loaded.describe()}; one token {token * 1000:.2f} ms")
    print(f"lorebook: {len(entries)} entries imported and checked in {imported:.2f} s; {fired} fired")
    print(f"prompt with lore: {built * 1000:.2f} ms; without: {plain * 1000:.2f} ms; the scan alone "
          f"{scanned * 1000:.2f} ms")
    print(f"prompt with lore ÷ one token: {built / token:.3f} (target well under 1)")
    figure(f"building a prompt, {len(entries)}-entry lorebook and {MESSAGES}-message chat ÷ one token",
           f"{built / token:.3f}", f"median of {args.rounds}: {built * 1000:.2f} ms (without lore "
           f"{plain * 1000:.2f} ms, the scan alone {scanned * 1000:.2f} ms, {fired} entries fired) ÷ "
           f"{token * 1000:.2f} ms per token of {loaded.describe()}")
    manager.unload()


if __name__ == "__main__":
    main()
