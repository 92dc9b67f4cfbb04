"""The token views in a real browser (headless Chromium via Playwright): what a person
sees in the Notebook when they switch token probabilities on."""

from __future__ import annotations

import re

import pytest

from tests.test_browser import browser, open_page, wait_until  # noqa: F401  (the browser fixture)

TOKENS = 12


@pytest.fixture(autouse=True)
def two_kept_tokens(runtime):
    """Sampled with top_k=2: after the samplers each token holds about half the
    probability (coloured in the middle bands), under the tiny random model about 1/512."""
    from webui.generation.params import make_params

    runtime.remember(make_params({"seed": 5, "ban_eos_token": True, "max_new_tokens": TOKENS,
                                  "temperature": 1.0, "top_k": 2}))


def rgb(css: str) -> tuple[float, ...]:
    return tuple(float(v) for v in re.findall(r"[\d.]+", css)[:3])


def contrast(a: str, b: str) -> float:
    """WCAG contrast ratio of two CSS colours."""
    def luminance(colour: str) -> float:
        channels = [c / 255 for c in rgb(colour)]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def styles(token) -> tuple[str, str]:
    return token.evaluate("e => [getComputedStyle(e).backgroundColor, getComputedStyle(e).color]")


def generate_with_token_view(page) -> None:
    page.get_by_role("tab", name="Notebook").click()
    page.locator("#notebook-text textarea").click()
    page.keyboard.type("The keeper climbed")
    page.locator("#notebook-probs-on").get_by_label("Show token probabilities").check()
    page.locator("#notebook-generate").click()


def test_notebook_shows_coloured_tokens_and_their_alternatives(browser, app_url):  # noqa: F811
    page = open_page(browser, app_url)
    generate_with_token_view(page)
    tokens = page.locator("#notebook-probs .tok")
    assert wait_until(lambda: tokens.count() == TOKENS, timeout=90)
    text = page.locator("#notebook-text textarea").input_value()
    assert text.startswith("The keeper climbed") and len(text) > len("The keeper climbed")
    # Each token shows its own text (a lone byte of a character, its vocabulary name).
    shown = page.locator("#notebook-probs .tok:not(.tok-named)").all_inner_texts()
    assert shown and all(piece in text for piece in shown)

    # Each token is coloured: a solid background that keeps its text readable.
    for token in tokens.all():
        background, colour = styles(token)
        assert background not in ("rgba(0, 0, 0, 0)", "transparent"), background
        assert contrast(background, colour) >= 4.5
    legend = page.locator("#notebook-probs .tok-legend")
    assert legend.is_visible() and "after the samplers" in legend.inner_text()

    # Alternatives are hidden until a person hovers over a token...
    first = tokens.first
    alternatives = first.locator(".tok-alts")
    assert not alternatives.is_visible()
    first.hover()
    assert wait_until(alternatives.is_visible)
    rows = alternatives.locator(".tok-row:not(.tok-head)")
    assert rows.count() >= 2
    assert re.search(r"\d+\.\d%", rows.first.inner_text())
    # ... or clicks one, or moves to the next with Tab.
    page.mouse.move(0, 0)
    assert wait_until(lambda: not alternatives.is_visible())
    first.click()
    page.mouse.move(0, 0)  # the click keeps them open, not the pointer
    assert wait_until(alternatives.is_visible)
    page.keyboard.press("Tab")
    assert wait_until(lambda: tokens.nth(1).locator(".tok-alts").is_visible())
    assert not alternatives.is_visible()

    # The model's own distribution instead: every token is far less likely there.
    page.locator("#notebook-probs-kind").get_by_label("model (raw)").check()
    assert wait_until(lambda: "model's own" in legend.inner_text())
    assert wait_until(lambda: page.locator("#notebook-probs .tok.tok-p0").count() == TOKENS)
    page.close()


def test_next_token_view_lists_the_likeliest_tokens(browser, app_url):  # noqa: F811
    page = open_page(browser, app_url)
    page.get_by_role("tab", name="Notebook").click()
    page.locator("#notebook-text textarea").fill("The keeper climbed the")
    page.locator("#notebook-next").click()
    rows = page.locator("#notebook-next-view tbody tr")
    assert wait_until(lambda: rows.count() >= 10, timeout=60)
    cut = page.locator("#notebook-next-view tbody tr", has_text="cut by the samplers")
    assert rows.count() - cut.count() == 2  # top_k=2 keeps two
    page.close()


def test_token_colours_stay_readable_in_the_dark_theme(browser, app_url):  # noqa: F811
    context = browser.new_context(color_scheme="dark")
    page = context.new_page()
    page.goto(app_url)
    page.locator("#chat-input textarea").wait_for()
    assert wait_until(lambda: page.evaluate("document.body.classList.contains('dark')"))
    generate_with_token_view(page)
    tokens = page.locator("#notebook-probs .tok")
    assert wait_until(lambda: tokens.count() == TOKENS, timeout=90)
    for token in tokens.all():
        background, colour = styles(token)
        assert contrast(background, colour) >= 4.5, (background, colour)
        assert sum(rgb(background)) < 3 * 128  # a deep colour, not the light theme's pale one
    context.close()
