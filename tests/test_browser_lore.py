"""Lorebooks and the prompt inspector in a real browser (Chromium): import a SillyTavern
lorebook beside the character settings, use it in all chats, chat with one of its keys,
and see the entry marked in the prompt the reply was written from."""

from __future__ import annotations

import json

from tests.conftest import wait_for
from tests.test_browser import browser, finished, open_page  # noqa: F401 - the module's Chromium

BOOK = {"entries": {"0": {"uid": 0, "key": ["albatross"], "keysecondary": [], "comment": "Bird",
                          "content": "The albatross follows the ship for luck.", "constant": False,
                          "selective": True, "order": 100, "position": 0, "disable": False,
                          "extensions": {"kept": True}}}}


def test_an_imported_lorebook_entry_is_marked_in_the_prompt_inspector(browser, app_url, runtime,  # noqa: F811
                                                                       tmp_path):
    space = runtime.users.get(None)
    before = {c.id for c in space.chats.list()}
    path = tmp_path / "Seabirds.json"
    path.write_text(json.dumps(BOOK))
    page = open_page(browser, app_url)
    try:
        page.locator("#chat-new").click()
        page.get_by_text("Lorebooks", exact=True).click()
        with page.expect_file_chooser() as chooser:
            page.locator("#lore-import").click()
        chooser.value.set_files(str(path))
        status = page.locator("#lore-status")
        assert wait_for(lambda: "Imported Seabirds (1 entries)" in status.inner_text()), status.inner_text()
        page.locator("#lore-scope").get_by_label("all chats").check()
        assert wait_for(lambda: "is used in: all chats" in status.inner_text())

        box = page.locator("#chat-input textarea")
        box.click()
        page.keyboard.type("Look, an albatross!")
        page.keyboard.press("Enter")
        assert wait_for(lambda: finished(page), timeout=90), page.locator("#chat-stats").inner_text()

        page.get_by_text("Prompt inspector", exact=True).click()
        mark = page.locator("#prompt-inspector mark.pi-lore")
        assert wait_for(lambda: mark.count() == 1)
        assert mark.inner_text() == "The albatross follows the ship for luck."
        assert "Lore entry: 1" in page.locator("#prompt-inspector .pi-legend").inner_text()
        # Its label and token count are on the mark, and listed under the legend.
        assert "Bird (key 'albatross')" in mark.get_attribute("title")
        assert "Bird (key 'albatross')" in page.locator("#prompt-inspector .pi-parts").inner_text()
        assert "Look, an albatross!" in page.locator("#prompt-inspector .pi-text").inner_text()
    finally:
        page.close()
        if "Seabirds" in space.lorebooks.names():
            space.lorebooks.delete("Seabirds")
        for chat in space.chats.list():
            if chat.id not in before:
                space.chats.delete(chat.id)
