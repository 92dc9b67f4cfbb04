"""The token views through the real Gradio app (gradio_client), and their HTML."""

from __future__ import annotations

import math
import re

import pytest
from gradio_client import Client

from tests.conftest import free_port
from tests.test_app_client import controls
from tests.test_remote import gateway, upstream  # noqa: F401  (fixtures: a real remote engine)
from webui.generation.request import Alternative, TokenLogprob
from webui.ui.token_html import AFTER, RAW, band, next_html, tokens_html

TOKEN = re.compile(r'<span class="tok tok-p(\d)[^"]*" tabindex="0" data-index="\d+" data-p="([0-9.]+)">')


@pytest.fixture()
def client(app_url):
    client = Client(app_url, verbose=False)
    # Sampled, two tokens kept per step: probabilities after the samplers are far from
    # the tiny random model's own (about 1/512 each).
    client.predict(*controls(max_new_tokens=10, ban_eos_token=True, seed=4, temperature=1.0, top_k=2),
                   api_name="/set_params")
    return client


def test_notebook_reply_tokens_coloured_by_probability_with_alternatives(client):
    text, stats = client.predict("The keeper climbed", True, api_name="/notebook_generate")
    assert "tokens/s" in stats
    html = client.predict(AFTER, api_name="/notebook_probs_show")
    tokens = TOKEN.findall(html)
    assert len(tokens) == 10
    for colour, p in tokens:
        assert 0.3 < float(p) <= 1.0  # one of two kept tokens, renormalised
        assert int(colour) == band(float(p))
    assert html.count('class="tok-alts"') == 10
    # The raw view: the same tokens, each at the model's own (tiny) probability.
    raw = client.predict(RAW, api_name="/notebook_probs_view")
    raw_tokens = TOKEN.findall(raw)
    assert len(raw_tokens) == 10 and all(float(p) < 0.05 and colour == "0" for colour, p in raw_tokens)
    assert "the model&#x27;s own distribution" in raw


def test_notebook_without_the_switch_records_nothing(client):
    text, _ = client.predict("The keeper climbed", False, api_name="/notebook_generate")
    assert text.startswith("The keeper climbed")
    assert client.predict(AFTER, api_name="/notebook_probs_show") == ""


def test_next_token_view_lists_both_distributions(client):
    html = client.predict("The keeper climbed the", 6, AFTER, api_name="/notebook_next_token")
    rows = re.findall(r"<tr><td><code>(.*?)</code></td><td[^>]*>(.*?)</td><td[^>]*>(.*?)</td></tr>", html)
    assert len(rows) >= 6
    kept = [after for _, after, _ in rows if after.endswith("%")]
    assert len(kept) == 2  # top_k=2
    assert sum(float(p.rstrip("%")) for p in kept) == pytest.approx(100.0, abs=0.2)
    assert sum(after == "cut by the samplers" for _, after, _ in rows) == len(rows) - 2
    # The Default tab has the same view, on its prompt.
    html = client.predict("The keeper climbed the", 6, RAW, api_name="/default_next_token")
    assert html.count("<tr><td>") >= 6


def test_next_token_count_is_checked(client):
    with pytest.raises(Exception, match="maximum value 100|from 1 to 100"):
        client.predict("The keeper", 1000, AFTER, api_name="/notebook_next_token")


def test_model_text_in_the_views_is_escaped(client, tokenizer):
    angle = tokenizer.convert_tokens_to_ids("<0x3C>")  # "<" (SentencePiece's byte fallback)
    client.predict(*controls(max_new_tokens=4, seed=4, temperature=0.0, logit_bias=f"{angle}: 100"),
                   api_name="/set_params")
    html = client.predict("The keeper", 3, AFTER, api_name="/notebook_next_token")
    assert "<code>&lt;</code>" in html
    client.predict("The keeper", True, api_name="/notebook_generate")
    tokens = client.predict(AFTER, api_name="/notebook_probs_show")
    assert "&lt;" in tokens
    assert re.sub(r"</?(div|span|code|p)\b[^>]*>", "", tokens).count("<") == 0  # no markup but ours


def test_chat_reply_token_view_after_the_reply_ends(client):
    client.predict(api_name="/chat_new")
    out = client.predict("Hello there", api_name="/chat_send", show_tokens=True)
    assert "tokens/s" in out[2]
    html = client.predict(AFTER, api_name="/chat_probs_show")
    assert len(TOKEN.findall(html)) == 10
    # Off again: the next reply shows none.
    client.predict("Again", api_name="/chat_send", show_tokens=False)
    assert client.predict(AFTER, api_name="/chat_probs_show") == ""


def entry(text: str, token_id: int = 7) -> TokenLogprob:
    alternatives = (Alternative(token_id, text, math.log(0.6), math.log(0.1)),
                    Alternative(8, '<img src=x onerror="alert(1)">', math.log(0.4), math.log(0.2)),
                    Alternative(9, "</span><script>alert(2)</script>", -math.inf, math.log(0.3)))
    return TokenLogprob(token_id, math.log(0.6), (), raw_logprob=math.log(0.1), text=text,
                        alternatives=alternatives)


@pytest.mark.parametrize("text", ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "a & b"])
def test_hostile_token_text_stays_text(text):
    for html in (tokens_html([entry(text)], AFTER), tokens_html([entry(text)], RAW), next_html(entry(text))):
        assert "<script" not in html and "<img" not in html and "onerror=\"" not in html
        assert "&lt;" in html


def test_alternatives_order_follows_the_chosen_distribution():
    html_after = tokens_html([entry("x")], AFTER)
    html_raw = tokens_html([entry("x")], RAW)
    codes = lambda html: re.findall(r"<code>(.*?)</code>", html)  # noqa: E731
    assert codes(html_after)[0] == "x"  # 60% after the samplers
    assert codes(html_raw)[0].startswith("&lt;/span&gt;")  # 30% under the model, cut by the samplers
    assert "<span>cut</span>" in html_after


def test_a_remote_model_gets_a_clear_message(gateway):  # noqa: F811
    from tests.conftest import TINY
    from webui.ui.app import launch

    runtime = gateway[0]
    app, url = launch(runtime, block=False, port=free_port())
    try:
        tab = Client(url, verbose=False)
        tab.predict(TINY, api_name="/model_talk_to")
        html = tab.predict("In the beginning", 5, AFTER, api_name="/notebook_next_token")
        assert "not available" in html and "remote engine" in html
        text, stats = tab.predict("In the beginning", True, api_name="/notebook_generate")
        assert "tokens/s" in stats  # the reply itself is written as usual
        assert "remote engine" in tab.predict(AFTER, api_name="/notebook_probs_show")
    finally:
        app.close()
