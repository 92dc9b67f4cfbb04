#!/usr/bin/env python
"""Train the tiny built-in demo model ``models/demo-kjv-4m``.

The web UI ships with this ~4M-parameter Llama-architecture model so that it
works out of the box, offline, with no model download. It is NOT a useful
assistant: it has only ever read the King James Version of the Bible, so in a
chat it answers in KJV-flavoured English and (the important part for a demo)
ends its turn by itself with the end-of-turn token instead of rambling until
``max_new_tokens``.

Corpus
------
The KJV text (public domain) comes from Debian's ``bible-kjv-text`` package.
Its data file (/usr/lib/bible.data) is in a custom compressed format, so we
read it through the ``bible`` command-line reader from the ``bible-kjv``
package (which depends on ``bible-kjv-text``)::

    sudo apt-get install bible-kjv          # pulls in bible-kjv-text
    bible -l0 Gen1:1-Rev22:21               # what this script runs

Any other plain-text corpus can be used instead with ``--corpus FILE``: one
verse / sentence per line, blank lines between chapters (a line matching
``Book N`` right after a blank line is taken as a chapter title).

Rebuild (about 10 minutes on 2 CPU cores)::

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/train_demo_model.py \
        --minutes 10 --outdir models/demo-kjv-4m

The script trains the tokenizer, trains the model for a wall-clock budget,
saves everything in Hugging Face format (bf16 safetensors), writes the model
card README.md with the measured numbers, and finally reloads the folder with
the Auto* classes and chats with it once as a smoke test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The demo must build without network access; never let transformers try the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sentencepiece as spm
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTDIR = REPO_ROOT / "models" / "demo-kjv-4m"
DEFAULT_BIBLE_DATA = "/usr/lib/bible.data"  # installed by bible-kjv-text

# Special pieces. Ids are fixed so the config files stay stable across rebuilds:
# 0 <unk>, 1 <s>, 2 </s>, 3 <pad>, 4.. the chat markers (user_defined_symbols
# come right after the control symbols in a SentencePiece vocab).
UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"
USER, ASSISTANT, SYSTEM, END = "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"
CHAT_MARKERS = [USER, ASSISTANT, SYSTEM, END]

# The chat format: every turn is "<|role|>\n{content}<|end|>\n". <|end|> is the
# tokenizer's eos token *and* generation_config.eos_token_id, so generation stops
# exactly where an assistant turn ends. No BOS is emitted anywhere (the template
# does not add one and add_bos_token is False), so the token ids are identical
# whether a caller uses apply_chat_template(tokenize=True) or renders to text
# and then calls tokenizer(text) -- no accidental double-BOS.
# Content may be a plain string or a list of {"type": "text", "text": ...}
# parts (the newer multimodal message shape); non-text parts are ignored.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{- raise_exception('Unsupported role: ' + message['role']) -}}"
    "{%- endif -%}"
    "{%- if message['content'] is string -%}"
    "{%- set content = message['content'] -%}"
    "{%- else -%}"
    "{%- set content = message['content'] | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join('\\n') -%}"
    "{%- endif -%}"
    "{{- '<|' + message['role'] + '|>\\n' + content | trim + '<|end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}"
)

SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are a helpful assistant. Answer briefly.",
    "You are a tiny demo model that has read only the King James Bible.",
    "Answer in the language of the King James Bible.",
    "You are a wise old scribe.",
    "Be concise.",
]

# Question shapes for the "ask about a word" chat examples. {w} is a word taken
# from the verse that becomes the answer, so the reply is at least on-topic.
QUESTION_TEMPLATES = [
    "Who is {w}?",
    "What is {w}?",
    "Tell me about {w}.",
    "What does the scripture say about {w}?",
    "What is written of {w}?",
    "Speak to me of {w}.",
    "What of {w}?",
    "Give me a verse about {w}.",
    "Who made {w}?",
    "Where is {w}?",
]

OPENERS = ["", "", "", "Continue: ", "What comes after this? ", "And then? "]

# Words too common to make a question about (see topic_word).
# fmt: off
STOPWORDS = {
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "had", "hath",
    "have", "he", "her", "him", "his", "i", "in", "into", "is", "it", "its", "let", "me", "my",
    "not", "of", "on", "or", "our", "shall", "she", "so", "that", "the", "thee", "their",
    "them", "then", "there", "these", "they", "thou", "thy", "to", "unto", "up", "upon", "us",
    "was", "we", "were", "which", "who", "whom", "will", "with", "ye", "you", "your", "all",
    "also", "did", "do", "doth", "even", "every", "if", "no", "nor", "now", "one", "out",
    "said", "saith", "say", "shalt", "this", "those", "thus", "when", "what", "why", "how",
    "before", "after", "again", "against", "among", "because", "been", "being", "over", "under",
    "came", "come", "went", "go", "made", "make", "more", "than", "things", "thing",
}
# fmt: on


# --------------------------------------------------------------------------- corpus


def parse_chapters(text: str) -> list[tuple[str, list[str]]]:
    """Split text into (title, [verse, ...]) chapters.

    Understands the output of ``bible -l0`` ("Genesis 1" title lines, verses as
    "  1 In the beginning ...") and plain text (one verse per line, blank line
    between chapters; a leading verse number is stripped).
    """
    chapters: list[tuple[str, list[str]]] = []
    title, verses = "", []
    title_re = re.compile(r"^(?:[1-3] )?[A-Z][A-Za-z ]+ \d+$")
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            if verses:
                chapters.append((title, verses))
                title, verses = "", []
            continue
        if not verses and title_re.match(line):
            title = line
            continue
        line = re.sub(r"^\d+\s+", "", line)  # drop verse numbers
        line = re.sub(r"\s+", " ", line)
        if line:
            verses.append(line)
    if verses:
        chapters.append((title, verses))
    return chapters


def load_corpus(args) -> str:
    if args.corpus:
        return Path(args.corpus).read_text(encoding="utf-8")
    data = Path(args.bible_data)
    bible = shutil.which("bible")
    if not data.exists() or bible is None:
        sys.exit(
            f"KJV corpus not found ({data} / `bible` reader). Install it with\n"
            "    sudo apt-get install bible-kjv     # pulls in bible-kjv-text\n"
            "or pass --corpus FILE with plain text."
        )
    # -l0: one verse per line (no wrapping); -p/-d: read exactly the packaged file.
    out = subprocess.run(
        [bible, "-l0", "-p", str(data.parent), "-d", data.name, "Gen1:1-Rev22:21"],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout


def chapter_text(title: str, verses: list[str]) -> str:
    """Running text for the language-modelling part of the data."""
    head = f"{title}\n\n" if title else ""
    return head + " ".join(verses) + "\n\n"


# --------------------------------------------------------------------------- tokenizer


def train_tokenizer(chapters, outdir: Path, vocab_size: int) -> None:
    """Train a SentencePiece BPE model and write outdir/tokenizer.model."""
    with tempfile.TemporaryDirectory() as tmp:
        lines = Path(tmp) / "lines.txt"
        with open(lines, "w", encoding="utf-8") as f:
            for title, verses in chapters:
                if title:
                    f.write(title + "\n")
                f.writelines(v + "\n" for v in verses)
        spm.SentencePieceTrainer.train(
            input=str(lines),
            model_prefix=str(Path(tmp) / "tokenizer"),
            vocab_size=vocab_size,
            model_type="bpe",  # same family as Llama's tokenizer; converts cleanly
            # byte_fallback: anything not in the vocab (accents, CJK, emoji) is
            # spelled as <0xNN> byte pieces, so every UTF-8 string encodes and
            # decodes losslessly and <unk> never appears.
            byte_fallback=True,
            character_coverage=1.0,
            # identity normalization + keep whitespace: otherwise SentencePiece
            # NFKC-normalizes and folds "\n" into spaces, which would break the
            # newline-delimited chat format and lossless round trips.
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            split_digits=True,
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=3,
            # Chat markers as single, never-split pieces (ids 4..7).
            user_defined_symbols=CHAT_MARKERS,
            num_threads=2,
            minloglevel=2,
        )
        shutil.copy(Path(tmp) / "tokenizer.model", outdir / "tokenizer.model")


def load_hf_tokenizer(outdir: Path):
    """Load tokenizer.model through transformers.

    transformers 5 needs protobuf to read tokenizer.model and converts it to a
    fast (tokenizers) tokenizer. Constructing LlamaTokenizer(vocab_file=...)
    directly silently gives a 3-token vocab, so we write a tokenizer_config.json
    next to tokenizer.model and go through AutoTokenizer.from_pretrained(dir).
    """
    cfg = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": BOS,
        "eos_token": END,  # end of an assistant turn == end of generation
        "unk_token": UNK,
        "pad_token": PAD,
        "add_bos_token": False,  # see CHAT_TEMPLATE comment
        "add_eos_token": False,
        # Registered as special so they are never split and are dropped by
        # decode(skip_special_tokens=True) in the UI.
        "extra_special_tokens": [USER, ASSISTANT, SYSTEM],
        "model_max_length": 512,
    }
    (outdir / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    tok = AutoTokenizer.from_pretrained(outdir)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def check_tokenizer(tok, vocab_size: int) -> None:
    assert len(tok) == vocab_size, f"tokenizer vocab {len(tok)} != {vocab_size}"
    for s in ["héllo 日本 🙂", "In the beginning God created the heaven and the earth.\nx"]:
        ids = tok.encode(s, add_special_tokens=False)
        assert tok.decode(ids) == s, f"round trip failed: {s!r} -> {tok.decode(ids)!r}"
        assert tok.unk_token_id not in ids
    for m in CHAT_MARKERS:
        assert len(tok.encode(m, add_special_tokens=False)) == 1, m
    assert tok.convert_tokens_to_ids(END) == tok.eos_token_id
    print(
        f"tokenizer: {type(tok).__name__} fast={tok.is_fast} vocab={len(tok)} "
        f"bos={tok.bos_token_id} eos={tok.eos_token}/{tok.eos_token_id} "
        f"pad={tok.pad_token_id} unk={tok.unk_token_id}"
    )


# --------------------------------------------------------------------------- data


def topic_word(verse: str, rng: random.Random) -> str | None:
    words = [w.strip(".,;:!?()'\"") for w in verse.split()[1:]]  # skip sentence start
    names = [w for w in words if w[:1].isupper() and w.lower() not in STOPWORDS and len(w) > 2]
    if names and rng.random() < 0.7:
        return rng.choice(names)
    content = [w for w in words if w.islower() and w not in STOPWORDS and len(w) >= 5]
    if not content:
        return None
    w = rng.choice(content)
    return w if rng.random() < 0.5 else "the " + w


def make_chat_examples(chapters, n: int, rng: random.Random) -> list[list[dict]]:
    """Chat conversations whose assistant turns are KJV verses.

    Two kinds: (a) the user gives a verse and the assistant continues with the
    following verse(s); (b) the user asks a short question about a word and the
    assistant answers with a verse containing it (plus maybe the next one).
    Some get a system prompt and some have an earlier exchange, so the model
    sees the same shapes the UI sends. Every assistant turn ends in <|end|>,
    which is what teaches the model to stop on its own.
    """
    flat = [(ci, vi) for ci, (_, vs) in enumerate(chapters) for vi in range(len(vs))]

    def exchange() -> tuple[str, str] | None:
        ci, vi = rng.choice(flat)
        verses = chapters[ci][1]
        k = rng.choice([1, 1, 1, 2, 2, 3])
        if rng.random() < 0.55:
            if vi + 1 >= len(verses):
                return None
            user = rng.choice(OPENERS) + verses[vi]
            reply = " ".join(verses[vi + 1 : vi + 1 + k])
        else:
            w = topic_word(verses[vi], rng)
            if w is None:
                return None
            q = rng.choice(QUESTION_TEMPLATES).format(w=w)
            user = q if rng.random() < 0.8 else q.lower()
            reply = " ".join(verses[vi : vi + k])
        return user, reply

    out: list[list[dict]] = []
    while len(out) < n:
        msgs: list[dict] = []
        if rng.random() < 0.3:
            msgs.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
        turns = 2 if rng.random() < 0.2 else 1
        ok = True
        for _ in range(turns):
            ex = exchange()
            if ex is None:
                ok = False
                break
            msgs += [{"role": "user", "content": ex[0]}, {"role": "assistant", "content": ex[1]}]
        if ok:
            out.append(msgs)
    return out


def encode_stream(tok, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate tokenized texts; also return each text's start offset."""
    ids, starts = [], []
    for enc in tok(texts, add_special_tokens=False)["input_ids"]:
        starts.append(len(ids))
        ids.extend(enc)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(starts, dtype=torch.long)


def sample_windows(stream, starts, n, seq_len, gen: torch.Generator) -> torch.Tensor:
    """n windows of seq_len tokens; chat windows begin at a conversation start."""
    hi = len(stream) - seq_len
    if starts is None:
        offs = torch.randint(0, hi, (n,), generator=gen)
    else:
        valid = starts[starts < hi]
        offs = valid[torch.randint(0, len(valid), (n,), generator=gen)]
    return torch.stack([stream[o : o + seq_len] for o in offs.tolist()])


def fixed_windows(stream, seq_len, limit) -> torch.Tensor:
    n = min(len(stream) // seq_len, limit)
    return stream[: n * seq_len].view(n, seq_len)


@torch.no_grad()
def perplexity(model, windows: torch.Tensor, batch: int) -> float:
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(windows), batch):
        x = windows[i : i + batch]
        loss = model(input_ids=x, labels=x).loss  # mean over the shifted tokens
        n = x.numel() - x.shape[0]
        total += loss.item() * n
        count += n
    model.train()
    return math.exp(total / count)


# --------------------------------------------------------------------------- model


def build_model(vocab_size: int, tok) -> LlamaForCausalLM:
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=256,
        # ~2.7x hidden like Llama, rounded to a multiple of 32 (704 = 22*32) so
        # every Linear out_features is a multiple of 32 (friendly to kernels and
        # to quantizers that work in groups of 32).
        intermediate_size=704,
        num_hidden_layers=4,
        num_attention_heads=4,  # head_dim 64
        num_key_value_heads=4,
        max_position_embeddings=512,
        tie_word_embeddings=True,  # the 4096x256 embedding is ~1M params; don't pay twice
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return LlamaForCausalLM(cfg)


def pick_autocast(model, mode: str, seq_len: int) -> bool:
    """Decide whether to train under bf16 autocast.

    bf16 autocast is only a win on CPUs with native bf16 (AVX512-BF16 / AMX).
    On plain AVX2 machines it is emulated and ~20x slower than fp32, which
    would waste the wall-clock budget, so "auto" times one small step of each.
    """
    if mode != "auto":
        return mode == "bf16"
    x = torch.randint(0, model.config.vocab_size, (2, min(seq_len, 64)))
    times = {}
    for use in (False, True):
        best = float("inf")
        for _ in range(2):
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use):
                model(input_ids=x, labels=x).loss.backward()
            best = min(best, time.perf_counter() - t)
        times[use] = best
    model.zero_grad(set_to_none=True)
    use = times[True] < times[False]
    print(
        f"autocast probe: fp32 {times[False] * 1e3:.0f} ms, bf16 {times[True] * 1e3:.0f} ms "
        f"-> {'bf16 autocast' if use else 'fp32'}"
    )
    return use


def lr_at(frac: float, step: int, args) -> float:
    """Linear warmup (in steps), then cosine decay over the *time* budget.

    The budget is wall-clock, not steps, so the schedule follows elapsed time;
    that way it ends at min_lr exactly when time runs out, however fast the
    machine is.
    """
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    frac = min(max(frac, 0.0), 1.0)
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * frac))


# --------------------------------------------------------------------------- outputs


def dir_files(outdir: Path) -> list[tuple[str, int]]:
    return sorted((p.name, p.stat().st_size) for p in outdir.iterdir() if p.is_file())


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_model_card(outdir: Path, info: dict) -> None:
    def mb(n):
        return f"{n / 1e6:.2f} MB"

    example = info["template_example"]
    for _ in range(2):  # second pass so the total includes the card itself
        files = [(n, s) for n, s in dir_files(outdir) if n != "README.md"]
        readme = outdir / "README.md"
        card_size = readme.stat().st_size if readme.exists() else 0
        total = sum(s for _, s in files) + card_size
        table = "\n".join(f"| `{n}` | {s:,} bytes |" for n, s in files)
        card = f"""---
language: en
library_name: transformers
pipeline_tag: text-generation
tags: [demo, tiny, llama, kjv]
---

# demo-kjv-4m

A **tiny (~{info["params"] / 1e6:.1f}M parameter) demo model** that ships inside the web UI so the
app works out of the box, offline, with no model download. It is **not a useful
assistant**: it has only ever read the King James Bible. In a chat it replies with
KJV-flavoured English (often loosely related to the question) and then ends its turn
with `<|end|>` on its own. Use it to check that the UI, streaming, stop tokens and
sampling settings work — then load a real model.

## Training data

* **Corpus:** the King James Version of the Bible (1611 text), from the Debian package
  `bible-kjv-text` ({info["corpus_source"]}), read with the `bible` reader of package
  `bible-kjv`. {info["n_verses"]:,} verses in {info["n_chapters"]:,} chapters.
* **Licence:** the KJV text is in the **public domain** (outside the UK, where it is under
  Crown letters patent). The model files are distributed with this project under its licence.
* **Split:** every {info["val_every"]}th chapter ({info["n_val_chapters"]} chapters,
  {info["val_frac"] * 100:.1f}% of verses) is held out for validation; the tokenizer and the
  model never see it.
* **Mixture:** {(1 - info["chat_fraction"]) * 100:.0f}% of each batch is running text (whole
  chapters, verses joined by spaces), {info["chat_fraction"] * 100:.0f}% is
  {info["n_chat"]:,} synthetic chats rendered with the chat template below: the user gives a
  verse (the assistant continues with the next 1–3 verses) or asks a short question about a
  word of a verse (the assistant answers with that verse). 30% have a system prompt, 20% have
  two exchanges. Every assistant turn ends with `<|end|>`, which is what makes the model stop.

## Tokenizer

SentencePiece BPE, {info["vocab"]:,} pieces, trained on the training split, with
`byte_fallback` (any UTF-8 text round-trips via `<0xNN>` byte pieces; `<unk>` never occurs),
identity normalization (newlines and spaces kept), split digits. Loaded by
`AutoTokenizer.from_pretrained` as `{info["tok_class"]}` (fast={info["tok_fast"]}).

| token | id | role |
|---|---|---|
| `<unk>` | {info["unk_id"]} | unknown (unused thanks to byte fallback) |
| `<s>` | {info["bos_id"]} | bos (not added: `add_bos_token` is false) |
| `</s>` | 2 | unused |
| `<pad>` | {info["pad_id"]} | padding |
| `<\\|user\\|>`, `<\\|assistant\\|>`, `<\\|system\\|>` | 4, 5, 6 | role markers |
| `<\\|end\\|>` | {info["eos_id"]} | **eos**: ends every turn (`eos_token_id` everywhere) |

## Chat template

Each turn is `<|role|>\\n{{content}}<|end|>\\n`; `add_generation_prompt=True` appends
`<|assistant|>\\n`. No BOS is added, so `apply_chat_template(..., tokenize=True)` and
`tokenizer(apply_chat_template(..., tokenize=False))` give the same ids. Example:

```
{example}```

## Architecture

`LlamaForCausalLM`: hidden 256, 4 layers, 4 heads (head dim 64, no GQA), MLP 704 (SwiGLU),
RMSNorm, RoPE, max {info["max_pos"]} positions, tied input/output embeddings.
**{info["params"]:,} parameters.** Stored as bf16 safetensors
({mb(info["weights_size"])}); whole folder {mb(total)}.

| file | size |
|---|---|
{table}

## Training

* Hardware: {info["hardware"]}, `torch.set_num_threads({info["threads"]})`, no GPU.
* {info["steps"]:,} steps in {info["train_minutes"]:.1f} minutes (wall-clock budget
  {info["budget_minutes"]:g} min), batch {info["batch"]} × {info["seq_len"]} tokens
  ({info["tokens_seen"] / 1e6:.2f}M tokens seen, {info["tok_per_s"]:,.0f} tokens/s).
* AdamW (β 0.9/0.95, weight decay 0.1), peak LR {info["lr"]:g}, {info["warmup"]} warmup steps,
  cosine decay over the time budget to {info["min_lr"]:g}, grad clip 1.0.
* Precision: {info["precision"]}. Saved weights are bf16.
* torch {info["torch"]}, transformers {info["transformers"]}, sentencepiece {info["spm"]}.

## Evaluation

Measured on the held-out chapters with the saved (bf16-rounded) weights:

* validation perplexity, running text: **{info["val_ppl"]:.2f}**
  (loss {math.log(info["val_ppl"]):.3f}, {info["val_tokens"]:,} tokens)
* validation perplexity, held-out chats: **{info["chat_val_ppl"]:.2f}**
* chat smoke test: {info["eos_hits"]}/{info["eos_tries"]} sampled replies (≤60 new tokens)
  ended with `<|end|>`.

Sample (sampled, temperature 0.8, top-p 0.95):

> **User:** {info["sample_q"]}
>
> **Assistant:** {info["sample_a"]}

## Rebuild

```
sudo apt-get install bible-kjv        # pulls in bible-kjv-text (the corpus)
HF_HUB_OFFLINE=1 .venv/bin/python scripts/train_demo_model.py {info["cmdline"]}
```

Results vary slightly between machines because training runs for a fixed wall-clock time.
"""
        readme.write_text(card, encoding="utf-8")


# --------------------------------------------------------------------------- main


def smoke_test(outdir: Path, seed: int) -> tuple[list[tuple[str, str, bool]], str]:
    """Reload the saved folder exactly like an app would and chat with it."""
    tok = AutoTokenizer.from_pretrained(outdir)
    model = AutoModelForCausalLM.from_pretrained(outdir)
    model.eval()
    print(
        f"reloaded: {type(model).__name__} dtype={model.dtype}, tokenizer "
        f"{type(tok).__name__} fast={tok.is_fast} vocab={len(tok)} eos={tok.eos_token_id}"
    )
    torch.manual_seed(seed)
    convs = [
        [{"role": "user", "content": "Who made the heaven and the earth?"}],
        [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Tell me about love."},
        ],
        [{"role": "user", "content": "Hello! What is your name?"}],
        [{"role": "user", "content": "What does the scripture say about the sea?"}],
    ]
    results = []
    for msgs in convs * 2:
        prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        ids = tok(prompt, return_tensors="pt")  # add_bos_token is False: same ids as tokenize=True
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=60, do_sample=True)
        new = out[0, ids["input_ids"].shape[1] :]
        ended = bool(len(new)) and new[-1].item() == tok.eos_token_id
        reply = tok.decode(new, skip_special_tokens=True).strip()
        results.append((msgs[-1]["content"], reply, ended))
        print(f"  user: {msgs[-1]['content']}\n  assistant: {reply}\n  ended with EOS: {ended}")
    return results, type(tok).__name__


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--outdir", type=Path, default=DEFAULT_OUTDIR)
    ap.add_argument("--corpus", help="plain-text corpus instead of the Debian KJV package")
    ap.add_argument("--bible-data", default=DEFAULT_BIBLE_DATA, help="bible-kjv-text data file")
    ap.add_argument("--minutes", type=float, default=10.0, help="wall-clock training budget")
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr", type=float, default=2e-4)
    ap.add_argument("--warmup-steps", type=int, default=30)
    ap.add_argument("--chat-fraction", type=float, default=0.5, help="share of chat rows per batch")
    ap.add_argument("--chat-examples", type=int, default=30000)
    ap.add_argument("--val-every", type=int, default=50, help="hold out every Nth chapter (~2%%)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--autocast",
        choices=["auto", "bf16", "off"],
        default="auto",
        help="bf16 autocast; 'auto' uses it only if it is faster on this CPU",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=20)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    outdir = args.outdir.resolve()
    if outdir.exists():
        shutil.rmtree(outdir)  # a stale file from an older build must not linger
    outdir.mkdir(parents=True)
    t_start = time.time()

    # ---- corpus and split (by chapter, so validation text is truly unseen)
    chapters = parse_chapters(load_corpus(args))
    if len(chapters) < 2 * args.val_every:
        sys.exit(f"corpus too small: {len(chapters)} chapters")
    val_ch = [c for i, c in enumerate(chapters) if i % args.val_every == args.val_every // 2]
    train_ch = [c for i, c in enumerate(chapters) if i % args.val_every != args.val_every // 2]
    n_verses = sum(len(v) for _, v in chapters)
    val_frac = sum(len(v) for _, v in val_ch) / n_verses
    print(
        f"corpus: {len(chapters)} chapters, {n_verses} verses; held out {len(val_ch)} "
        f"chapters ({val_frac:.1%} of verses)"
    )

    # ---- tokenizer
    train_tokenizer(train_ch, outdir, args.vocab_size)
    tok = load_hf_tokenizer(outdir)
    check_tokenizer(tok, args.vocab_size)

    # ---- data: running text + chats rendered with the model's own template
    # (model_max_length is lifted while encoding whole chapters into one token
    # stream; only windows of --seq-len tokens ever reach the model)
    tok.model_max_length = 10**9
    plain, _ = encode_stream(tok, [chapter_text(t, v) for t, v in train_ch])
    val_plain, _ = encode_stream(tok, [chapter_text(t, v) for t, v in val_ch])
    def render(convs):
        return [tok.apply_chat_template(c, tokenize=False) for c in convs]
    chat, chat_starts = encode_stream(
        tok, render(make_chat_examples(train_ch, args.chat_examples, rng))
    )
    val_chat, _ = encode_stream(tok, render(make_chat_examples(val_ch, 400, random.Random(1))))
    val_windows = fixed_windows(val_plain, args.seq_len, 10_000)
    val_chat_windows = fixed_windows(val_chat, args.seq_len, 64)
    tok.model_max_length = 512
    print(
        f"tokens: train text {len(plain):,}, train chat {len(chat):,} "
        f"({args.chat_examples:,} convs), val text {len(val_plain):,}, val chat {len(val_chat):,}"
    )

    # ---- model
    model = build_model(args.vocab_size, tok)
    n_params = sum(p.numel() for p in model.parameters())  # tied weights counted once
    print(f"model: {n_params:,} parameters")
    use_bf16 = pick_autocast(model, args.autocast, args.seq_len)
    # Weight decay only on matrices, not on norms (standard practice).
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
    )

    # ---- train for a wall-clock budget
    n_chat = round(args.batch_size * args.chat_fraction)
    budget = args.minutes * 60
    model.train()
    t0 = time.time()
    step, loss_avg = 0, None
    while True:
        elapsed = time.time() - t0
        if elapsed >= budget:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(elapsed / budget, step, args)
        x = torch.cat(
            [
                sample_windows(plain, None, args.batch_size - n_chat, args.seq_len, gen),
                sample_windows(chat, chat_starts, n_chat, args.seq_len, gen),
            ]
        )
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        loss_avg = loss.item() if loss_avg is None else 0.95 * loss_avg + 0.05 * loss.item()
        if step == 10:
            sps = step / (time.time() - t0)
            print(
                f"speed: {sps:.2f} steps/s, {sps * x.numel():,.0f} tokens/s "
                f"-> about {int(sps * budget):,} steps in {args.minutes:g} min"
            )
        if step % args.log_every == 0:
            el = time.time() - t0
            print(
                f"step {step:5d}  {el / 60:5.1f}/{args.minutes:g} min  loss {loss_avg:.3f}  "
                f"lr {opt.param_groups[0]['lr']:.2e}",
                flush=True,
            )
    train_s = time.time() - t0

    # ---- evaluate with exactly the weights we ship (bf16-rounded), computed in fp32
    model.to(torch.bfloat16).to(torch.float32)
    val_ppl = perplexity(model, val_windows, 16)
    chat_val_ppl = perplexity(model, val_chat_windows, 16)
    print(
        f"validation perplexity: text {val_ppl:.2f} ({val_windows.numel():,} tokens), "
        f"chat {chat_val_ppl:.2f}"
    )

    # ---- save
    model.to(torch.bfloat16)
    model.save_pretrained(outdir, safe_serialization=True)
    # save_pretrained on a transformers-5 tokenizer writes tokenizer.json,
    # tokenizer_config.json and chat_template.jinja; tokenizer.model (the
    # SentencePiece original) is already in the folder and is kept.
    tok.save_pretrained(outdir)
    # transformers 5 also writes load-time kwargs ("is_local", "local_files_only")
    # into tokenizer_config.json; they describe this build machine, not the model.
    tc_path = outdir / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text())
    for k in ("is_local", "local_files_only"):
        tc.pop(k, None)
    tc_path.write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n")
    GenerationConfig(
        do_sample=True,
        temperature=0.8,
        top_p=0.95,
        max_new_tokens=200,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    ).save_pretrained(outdir)

    # ---- reload and chat, then write the card with the measured numbers
    results, tok_class = smoke_test(outdir, args.seed)
    eos_hits = sum(e for _, _, e in results)
    first = results[0]
    cmd = [f"--minutes {args.minutes:g}"]
    if args.outdir.resolve() != DEFAULT_OUTDIR:
        cmd.append(f"--outdir {args.outdir}")
    if args.corpus:
        cmd.append(f"--corpus {args.corpus}")
    info = {
        "params": n_params,
        "vocab": len(tok),
        "n_verses": n_verses,
        "n_chapters": len(chapters),
        "corpus_source": args.corpus or args.bible_data,
        "val_every": args.val_every,
        "n_val_chapters": len(val_ch),
        "val_frac": val_frac,
        "chat_fraction": n_chat / args.batch_size,
        "n_chat": args.chat_examples,
        "tok_class": tok_class,
        "tok_fast": tok.is_fast,
        "unk_id": tok.unk_token_id,
        "bos_id": tok.bos_token_id,
        "pad_id": tok.pad_token_id,
        "eos_id": tok.eos_token_id,
        "max_pos": model.config.max_position_embeddings,
        "weights_size": (outdir / "model.safetensors").stat().st_size,
        "hardware": f"{cpu_name()}, {os.cpu_count()} cores",
        "threads": args.threads,
        "steps": step,
        "train_minutes": train_s / 60,
        "budget_minutes": args.minutes,
        "batch": args.batch_size,
        "seq_len": args.seq_len,
        "tokens_seen": step * args.batch_size * args.seq_len,
        "tok_per_s": step * args.batch_size * args.seq_len / train_s,
        "lr": args.lr,
        "warmup": args.warmup_steps,
        "min_lr": args.min_lr,
        "precision": "bf16 autocast"
        if use_bf16
        else "fp32 (bf16 autocast was measured slower on this CPU, which lacks native bf16)",
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "spm": spm.__version__,
        "val_ppl": val_ppl,
        "chat_val_ppl": chat_val_ppl,
        "val_tokens": val_windows.numel(),
        "eos_hits": eos_hits,
        "eos_tries": len(results),
        "sample_q": first[0],
        "sample_a": first[1] + (" `<|end|>`" if first[2] else " …"),
        "cmdline": " ".join(cmd),
        "template_example": tok.apply_chat_template(
            [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Who made the heaven and the earth?"},
                {
                    "role": "assistant",
                    "content": "In the beginning God created the heaven and the earth.",
                },
                {"role": "user", "content": "And then?"},
            ],
            tokenize=False,
            add_generation_prompt=True,
        ),
    }
    write_model_card(outdir, info)

    print(f"\nsaved to {outdir} (total {time.time() - t_start:.0f} s):")
    for name, size in dir_files(outdir):
        print(f"  {name:28s} {size:>12,d}")
    print(
        f"parameters {n_params:,}; val ppl {val_ppl:.2f}; replies ending in EOS "
        f"{eos_hits}/{len(results)}"
    )


if __name__ == "__main__":
    main()
