"""Views that must show the server as it is now, in a real browser (Chromium): a LoRA
trained after the page was opened, a finished run's progress after a reload, the
Notebook's text after a reload, the prompt viewer's last prompt on opening its tab."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import free_port, make_settings, wait_for
from tests.test_browser import browser, open_page  # noqa: F401 - the module's Chromium
from webui.settings import PROJECT_ROOT

TEXT = "Every spring a boat brought flour, oil, letters and news from the town. " * 20


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


@pytest.fixture()
def trained(runtime):
    """A dataset to train on; the LoRA and its checkpoints are removed afterwards."""
    root = runtime.settings.user_data_dir
    folder = root / "training" / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "views.txt").write_text(TEXT, encoding="utf-8")
    yield "views-run"
    (folder / "views.txt").unlink(missing_ok=True)
    for path in (root / "loras" / "views-run", root / "training" / "checkpoints" / "views-run"):
        shutil.rmtree(path, ignore_errors=True)


def test_a_lora_trained_after_the_page_opened_is_listed_and_the_run_shows_after_a_reload(
        browser, app_url, runtime, trained):  # noqa: F811 - the fixture
    from webui.training.settings import TrainingSettings

    page = open_page(browser, app_url)
    runtime.training.start(TrainingSettings(
        lora_name=trained, dataset="views.txt", rank=4, alpha=8, target_modules=["q_proj", "v_proj"],
        learning_rate=1e-3, steps=4, micro_batch_size=2, cutoff_len=32, overlap=8, save_steps=2))
    assert wait_for(lambda: runtime.training.status().state == "done", timeout=120)
    assert trained in runtime.models.loras()

    # Opening the Model tab lists it: no ↻ pressed.
    open_tab(page, "Model")
    page.get_by_text("LoRA adapters", exact=False).first.click()
    page.locator("input[aria-label='LoRA']").click()
    assert page.get_by_role("option", name=trained).is_visible()

    # After a reload the Training tab shows the run as it ended, its loss plot included.
    page.reload()
    page.locator("#chat-input textarea").wait_for()
    open_tab(page, "Training")
    assert wait_for(lambda: "4 / 4 steps" in page.locator("#training-progress").inner_text())
    assert trained in page.locator("#training-status").inner_text()
    plot = page.locator("#training-loss")
    assert wait_for(lambda: plot.locator("canvas, svg").count() > 0)
    page.close()


def test_notebook_text_survives_a_reload(browser, app_url, runtime):  # noqa: F811 - the fixture
    space = runtime.users.get(None)
    (space.root / "notebook.txt").unlink(missing_ok=True)  # what earlier tests wrote in the Notebook
    page = open_page(browser, app_url)
    open_tab(page, "Notebook")
    box = page.locator("#notebook-text textarea")
    box.click()
    page.keyboard.press("Control+A")  # whatever the box starts with goes, as a person would clear it
    page.keyboard.press("Backspace")
    page.keyboard.type("The keeper of the light wrote")

    # Saved on the server as it is typed (the page asks nothing of the user).
    saved = space.root / "notebook.txt"
    assert wait_for(lambda: saved.is_file() and saved.read_text(encoding="utf-8") == "The keeper of the light wrote")
    page.reload()
    page.locator("#chat-input textarea").wait_for()
    open_tab(page, "Notebook")
    assert wait_for(lambda: page.locator("#notebook-text textarea").input_value() == "The keeper of the light wrote")
    page.close()
    (space.root / "notebook.txt").unlink(missing_ok=True)


def test_the_prompt_viewer_shows_the_last_prompt_when_its_tab_opens(browser, models_root, tmp_path):  # noqa: F811
    from webui.runtime import build_runtime
    from webui.ui.app import launch

    runtime = build_runtime(make_settings(models_root, tmp_path, extensions=("prompt_viewer",),
                                          extensions_dir=PROJECT_ROOT / "extensions"))
    from webui.generation.params import make_params

    runtime.remember(make_params({"seed": 5, "max_new_tokens": 8}))
    app, url = launch(runtime, block=False, port=free_port())
    try:
        page = open_page(browser, url)
        box = page.locator("#chat-input textarea")
        box.click()
        page.keyboard.type("Tell me of the lighthouse")
        page.keyboard.press("Enter")
        stats = page.locator("#chat-stats")
        assert wait_for(lambda: "tokens/s" in stats.inner_text(), timeout=90), stats.inner_text()
        open_tab(page, "Prompt")
        # No Refresh pressed: opening the tab shows the prompt the model was given.
        assert wait_for(lambda: "Tell me of the lighthouse" in page.locator("#prompt-viewer-text").inner_text())
        page.close()
    finally:
        app.close()
