"""Word bias: ban words, or make them likelier, in every reply.

One rule per line, "word: bias".  A bias of -100 or less bans the word; a positive
bias makes it likelier.  Both the word and the word after a space are covered, in
the case written.  A word of several tokens is banned by forbidding its last token
whenever the tokens before it have just been generated; a boost works best on words
that are a single token.

settings.yaml:  word_bias-rules: "dragon: -100\\ncastle: 5"
"""

import gradio as gr
from transformers import SequenceBiasLogitsProcessor

from webui.extensions import hookimpl

params = {
    "display_name": "Word bias",
    "is_tab": True,
    "rules": "",
}

BAN = -100.0


def parse_rules(text):
    """'word: bias' lines -> [(word, bias)]; raises ValueError naming a bad line."""
    rules = []
    for number, line in enumerate(str(text).splitlines(), 1):
        if not line.strip():
            continue
        word, sep, value = line.rpartition(":")
        try:
            bias = float(value) if sep else None
        except ValueError:
            bias = None
        if not word.strip() or bias is None or bias != bias or abs(bias) == float("inf"):
            raise ValueError(f"line {number}: expected 'word: bias', got {line.strip()!r}")
        rules.append((word.strip(), max(BAN, min(100.0, bias))))
    return rules


def sequence_bias(tokenizer, rules):
    biases = {}
    for word, bias in rules:
        for variant in (word, " " + word):
            ids = tuple(tokenizer.encode(variant, add_special_tokens=False))
            if ids:
                biases[ids] = float("-inf") if bias <= BAN else bias
    return [[list(ids), bias] for ids, bias in biases.items()]


@hookimpl
def logits_processor_modifier(processor_list, tokenizer):
    rules = parse_rules(params["rules"])
    if rules:
        processor_list.append(SequenceBiasLogitsProcessor(sequence_bias(tokenizer, rules)))


def ui():
    gr.Markdown("One rule per line, `word: bias`. -100 bans the word; a positive number makes it likelier. "
                "Applies to every request: Chat, Notebook and the API.")
    rules = gr.Textbox(value=params["rules"], lines=8, label="Rules", placeholder="dragon: -100\ncastle: 5")
    status = gr.Markdown()

    def set_rules(text):
        try:
            parsed = parse_rules(text)
        except ValueError as exc:
            return f"**Not applied:** {exc}"
        params["rules"] = text
        return f"{len(parsed)} rule(s) in effect."

    rules.change(set_rules, rules, status, api_name="word_bias_rules")
