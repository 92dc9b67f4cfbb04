"""Steering as a person sets it, in a real browser (Chromium): the Parameters tab's
Steering section, a saved vector picked from its list, a strength, Add."""

from __future__ import annotations

from tests.conftest import wait_for
from tests.test_browser import browser  # noqa: F401 - the module's Chromium
from tests.test_steer import app_url, demo  # noqa: F401 - the demo model with its "love" vector


def test_a_saved_vector_is_picked_and_added_to_the_steering_box(browser, app_url, demo):  # noqa: F811
    page = browser.new_page()
    page.goto(app_url)
    page.locator("#chat-input textarea").wait_for()
    page.get_by_role("tab", name="Parameters", exact=True).click()
    page.get_by_text("Steering", exact=True).click()
    page.locator("#steer-pick input").click()  # the list is read when it is opened
    page.get_by_role("option", name="love").click()
    strength = page.locator("#steer-strength input[type=number]")
    strength.fill("2")
    strength.press("Enter")
    page.locator("#steer-add").click()
    box = page.get_by_label("control_vectors")
    assert wait_for(lambda: box.input_value() == "love: 2", timeout=30), box.input_value()
    # Applied, as leaving the box would: the values in use now steer with it.
    assert wait_for(lambda: [(u.name, u.strength) for u in demo.remembered().control_vectors] == [("love", 2.0)],
                    timeout=30)
    assert "Not applied" not in page.locator("#params-status").inner_text()
    page.close()
