"""The Inspect tab in a real browser (headless Chromium via Playwright): a person types a
text, presses Run, sees the logit-lens heatmap, and clicks a cell for its top tokens."""

from __future__ import annotations

import re

from tests.test_browser import browser, open_page, wait_until  # noqa: F401  (the browser fixture)

TEXT = "The keeper climbed the stairs"


def cell_at(table, row: int, column: int):
    return table.locator(f'[role=gridcell][data-row="{row}"][data-col="{column}"]')


def test_type_run_see_the_heatmap_and_click_a_cell(browser, app_url, runtime):  # noqa: F811
    layers = runtime.models.current.model.config.num_hidden_layers
    tokens = len(runtime.models.current.tokenizer(TEXT)["input_ids"])
    page = open_page(browser, app_url)
    page.get_by_role("tab", name="Inspect").click()
    note = page.locator("#inspect-note")
    assert wait_until(lambda: "press Run" in note.inner_text(), timeout=30)
    page.locator("#inspect-text textarea").click()
    page.keyboard.type(TEXT)
    page.locator("#inspect-run").click()

    status = page.locator("#inspect-status")
    assert wait_until(lambda: f"{tokens} tokens, {layers} layers" in status.inner_text(), timeout=90), \
        status.inner_text()
    table = page.locator("#inspect-lens")
    # Gradio's table draws its body rows as [role=row] boxes of [role=gridcell] cells.
    rows = table.locator(".virtual-row[role=row]")
    assert wait_until(lambda: rows.count() == layers + 1, timeout=30)
    assert cell_at(table, 0, 0).inner_text().strip() == "embeddings"
    assert cell_at(table, layers, 0).inner_text().strip() == f"layer {layers}"
    # A cell: the token and its probability, on a background coloured by it.
    cell = cell_at(table, layers, 3)
    assert re.search(r"\d+(\.\d)?%$", cell.inner_text().strip()), cell.inner_text()
    background = cell.evaluate("e => getComputedStyle(e).backgroundColor")
    assert background not in ("rgba(0, 0, 0, 0)", "transparent"), background

    cell.click()  # the last layer, after position 2
    label = page.locator("#inspect-cell")
    assert wait_until(lambda: f"layer {layers}, after position 2" in label.inner_text(), timeout=30), \
        label.inner_text()
    top = page.locator("#inspect-top")
    assert wait_until(lambda: top.locator(".virtual-row[role=row]").count() == 10, timeout=30)
    shown = [cell_at(top, row, 1).inner_text().strip() for row in range(10)]
    values = [float(v.rstrip("%")) for v in shown if v != "<0.1%"]
    assert values and values == sorted(values, reverse=True)
    # The best of the ten is the cell's own token and probability.
    best = f"{cell_at(top, 0, 0).inner_text().strip()} {shown[0]}"
    assert cell.inner_text().strip() == best, (cell.inner_text(), best)
    page.close()
