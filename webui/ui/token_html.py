"""Token probabilities as HTML: each token coloured by its probability, its likeliest
alternatives shown on hover or when it is clicked (or reached with Tab).

Pure functions of the engine's records (webui/generation/request.py, TokenLogprob with
token_detail), so they are tested without a browser.  Every piece of text, the model's
and anyone else's, goes through html.escape: the only markup here is our own spans with
fixed class names, and a token that reads `<img onerror=...>` stays text
(docs/SECURITY.md).  The popups are plain CSS (webui/ui/static/page.css): no script.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from webui.generation.request import Alternative, TokenLogprob

AFTER, RAW = "after samplers", "model (raw)"
KINDS = (AFTER, RAW)
# Lower bounds of the colour bands, likeliest first; page.css colours tok-p4 .. tok-p0.
BANDS = (0.8, 0.5, 0.2, 0.05, 0.0)
# Alternatives shown per token at most (a reply of 2,000 tokens stays a few hundred kB).
MAX_ROWS = 12


def band(probability: float) -> int:
    """4 for the likeliest band, 0 for the least likely."""
    for index, bound in enumerate(BANDS):
        if probability >= bound:
            return len(BANDS) - 1 - index
    return 0


def percent(probability: float) -> str:
    if probability <= 0.0:
        return "0%"
    if probability < 0.001:
        return "<0.1%"
    return f"{100 * probability:.1f}%"


def visible(text: str) -> str:
    """A token's text with its whitespace made visible, for the alternatives list."""
    return text.replace(" ", "\u2423").replace("\n", "\u21b5").replace("\t", "\u21e5") or "\u2205"


def probability(logprob: float | None) -> float:
    return 0.0 if logprob is None or logprob == -math.inf else math.exp(logprob)


def chosen_probability(entry: TokenLogprob, kind: str) -> float:
    return probability(entry.raw_logprob if kind == RAW else entry.logprob)


def ordered(alternatives: Sequence[Alternative], kind: str) -> list[Alternative]:
    """Likeliest first in the chosen distribution (ties: the other one)."""
    if kind == RAW:
        return sorted(alternatives, key=lambda a: (a.raw_logprob, a.logprob), reverse=True)
    return sorted(alternatives, key=lambda a: (a.logprob, a.raw_logprob), reverse=True)


def alternatives_html(entry: TokenLogprob, kind: str) -> str:
    rows = ['<span class="tok-row tok-head"><span>token</span><span>after samplers</span>'
            '<span>model</span></span>']
    for alt in ordered(entry.alternatives, kind)[:MAX_ROWS]:
        after = escape(percent(probability(alt.logprob))) if alt.logprob > -math.inf else "cut"
        mark = " tok-chosen" if alt.token_id == entry.token_id else ""
        rows.append(f'<span class="tok-row{mark}"><code>{escape(visible(alt.text))}</code>'
                    f'<span>{after}</span><span>{escape(percent(probability(alt.raw_logprob)))}</span></span>')
    return f'<span class="tok-alts" role="tooltip">{"".join(rows)}</span>'


def legend(kind: str) -> str:
    swatches = []
    for index, bound in enumerate(BANDS):
        upper = BANDS[index - 1] if index else 1.0
        label = f"≥ {bound:.0%}" if index == 0 else f"{bound:.0%}–{upper:.0%}"
        swatches.append(f'<span class="tok-swatch tok-p{len(BANDS) - 1 - index}">{escape(label)}</span>')
    which = "the model's own distribution" if kind == RAW else "the distribution each token was drawn from (after the samplers)"
    return (f'<div class="tok-legend">Probability under {escape(which)}: {" ".join(swatches)} '
            '— hover or click a token for its alternatives.</div>')


def tokens_html(entries: Sequence[TokenLogprob], kind: str = AFTER) -> str:
    """A reply's tokens, coloured by probability, each with its alternatives."""
    if not entries:
        return '<div class="tokview"><p>No tokens were generated.</p></div>'
    spans = []
    for position, entry in enumerate(entries):
        p = chosen_probability(entry, kind)
        text, named = entry.text, ""
        if not text:  # a special token or one byte of a character: its vocabulary name
            text = next((a.text for a in entry.alternatives if a.token_id == entry.token_id), "")
            named = " tok-named"
        spans.append(
            f'<span class="tok tok-p{band(p)}{named}" tabindex="0" data-index="{position}" '
            f'data-p="{p:.6f}">{escape(text)}{alternatives_html(entry, kind)}</span>')
    return f'<div class="tokview">{legend(kind)}<div class="tok-text">{"".join(spans)}</div></div>'


def next_html(entry: TokenLogprob, kind: str = AFTER) -> str:
    """The likeliest next tokens as a table, in both distributions."""
    rows = []
    for alt in ordered(entry.alternatives, kind):
        after = probability(alt.logprob)
        shown = escape(percent(after)) if alt.logprob > -math.inf else "cut by the samplers"
        raw = probability(alt.raw_logprob)
        rows.append(f'<tr><td><code>{escape(visible(alt.text))}</code></td>'
                    f'<td class="tok-p{band(after)}">{shown}</td>'
                    f'<td class="tok-p{band(raw)}">{escape(percent(raw))}</td></tr>')
    return ('<div class="tokview"><table class="tok-next"><thead><tr><th>next token</th><th>after samplers</th>'
            f'<th>model (raw)</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


def note_html(text: str) -> str:
    return f'<div class="tokview"><p>{escape(text)}</p></div>'
