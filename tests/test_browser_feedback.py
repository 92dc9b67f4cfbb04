"""Feedback on what a user types, in a real browser (Chromium) and in the terminal: a
value out of a parameter's range is refused naming the field and leaves the box, the
preset shows "(modified)" once a value differs from it, and a user's error is one line
in the server's output, not a traceback."""

from __future__ import annotations

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.conftest import wait_for
from tests.test_browser import browser, open_page  # noqa: F401 - the module's Chromium


@pytest.fixture()
def preset_values(runtime):
    """The page starts from the Deterministic preset's values; put back afterwards."""
    before = runtime.remembered()
    runtime.remember(runtime.presets.load("Deterministic"))
    yield
    runtime.remember(before)


def test_an_out_of_range_value_is_refused_by_name_and_leaves_the_box(browser, app_url, preset_values):  # noqa: F811
    page = open_page(browser, app_url)
    page.get_by_role("tab", name="Parameters", exact=True).click()
    page.locator("#preset input").click()
    page.get_by_role("option", name="Deterministic", exact=True).click()
    box = page.get_by_label("number input for temperature")
    assert wait_for(lambda: float(box.input_value() or -1) == 0.0)  # Deterministic's
    box.fill("9")
    box.press("Enter")
    toast = page.locator(".toast-body")
    assert wait_for(lambda: toast.count() > 0 and "temperature" in toast.first.inner_text())
    assert "9" in toast.first.inner_text()
    # The value in use again: not the refused one, nor the slider's end.
    assert wait_for(lambda: float(box.input_value()) == 0.0)
    page.close()


def test_the_preset_is_marked_modified_when_a_value_differs(browser, app_url, preset_values):  # noqa: F811
    page = open_page(browser, app_url)
    page.get_by_role("tab", name="Parameters", exact=True).click()
    page.locator("#preset input").click()
    page.get_by_role("option", name="Deterministic", exact=True).click()
    label = page.locator("#preset")
    assert wait_for(lambda: "Preset" in label.inner_text() and "modified" not in label.inner_text())
    seed = page.get_by_label("seed", exact=True)
    seed.fill(str(int(seed.input_value() or 0) + 7))
    seed.press("Enter")
    assert wait_for(lambda: "(modified)" in label.inner_text())
    page.locator("#preset input").click()
    page.get_by_role("option", name="Deterministic", exact=True).click()
    assert wait_for(lambda: "(modified)" not in label.inner_text())
    page.close()


def test_a_users_error_is_one_line_in_the_terminal(app_url, capfd):
    client = Client(app_url, verbose=False)
    capfd.readouterr()
    with pytest.raises(AppError, match="not a conversation|unknown|invalid"):
        client.predict("no-such-chat-xyz", "", api_name="/chat_open")
    err = capfd.readouterr().err
    assert "Traceback" not in err
