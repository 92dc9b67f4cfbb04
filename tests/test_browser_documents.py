"""A real browser attaches a PDF to a chat message and sees the reply cite it; clicking
the citation shows the passage."""

from __future__ import annotations

from tests.doc_fixtures import passage, pdf_bytes, towns
from tests.test_browser import browser, finished, open_page, steady_sampling, wait_until  # noqa: F401

TOWNS = towns()


def test_attach_a_pdf_and_read_the_cited_passage(browser, app_url, tmp_path):  # noqa: F811
    atlas = tmp_path / "atlas.pdf"
    atlas.write_bytes(pdf_bytes([passage(t) for t in TOWNS[:30]]))  # over the budget: retrieved, not whole
    town = TOWNS[11]
    page = open_page(browser, app_url)
    page.locator("#chat-new").click()
    page.locator("#chat-documents").get_by_text("Documents", exact=True).first.click()
    page.locator("#chat-attach input[type=file]").set_input_files(str(atlas))
    status = page.locator("#chat-attach-status")
    assert wait_until(lambda: "Attached to your next message: atlas.pdf" in status.inner_text(), timeout=120), (
        status.inner_text())
    box = page.locator("#chat-input textarea")
    box.fill(f"Where does {town.name} lie?")
    box.press("Enter")
    assert wait_until(lambda: finished(page), timeout=120)
    bot = page.locator("#chatbot [data-testid=bot]").last
    assert wait_until(lambda: "atlas.pdf, p. 12" in bot.inner_text(), timeout=30), bot.inner_text()
    user = page.locator("#chatbot [data-testid=user]").last
    assert "atlas.pdf" in user.inner_text() and TOWNS[20].name not in user.inner_text()
    sources = page.locator("#chat-sources")
    assert wait_until(lambda: "[1] atlas.pdf, p. 12" in sources.inner_text(), timeout=30), sources.inner_text()
    sources.get_by_text("[1] atlas.pdf, p. 12").click()
    shown = page.locator("#chat-passage textarea")
    assert wait_until(lambda: town.name in shown.input_value(), timeout=30), shown.input_value()
    page.close()
