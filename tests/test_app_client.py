"""The real Gradio app, driven over HTTP with gradio_client."""

from __future__ import annotations

import time

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.conftest import needs_proc, thread_activity, wait_for
from webui.generation.params import SamplingParams
from webui.ui.parameters_tab import KINDS, control_values


def reply_text(output) -> str:
    """The last reply in a chat event's output: the chat itself, or the live box while it streams."""
    chat, live = output[0], output[1]
    if isinstance(live, str) and live:
        return live
    if not isinstance(chat, list) or not chat or chat[-1]["role"] != "assistant":
        return ""
    return "".join(part.get("text", "") for part in chat[-1]["content"])



@pytest.fixture()
def client(app_url):
    return Client(app_url, verbose=False)


def test_every_event_has_a_stable_api_name(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/chat_send", "/chat_submit", "/chat_stop", "/chat_regenerate", "/chat_new", "/chat_continue",
            "/chat_impersonate", "/chat_edit_message", "/chat_fork", "/chat_open", "/chat_delete",
            "/character_save", "/character_import", "/persona_save",
            "/notebook_generate", "/notebook_stop", "/load_preset", "/set_params",
            "/model_load", "/model_unload", "/model_list", "/list_presets"} <= names


def test_stop_in_one_session_leaves_another_generating(app_url, runtime):
    before = runtime.remembered()  # the Parameters tab remembers what it is set to
    try:
        a, b = Client(app_url, verbose=False), Client(app_url, verbose=False)
        # Greedy and `deterministic`: each prompt's full reply is known, even where a
        # prefix-cache hit rounds differently (16-bit arithmetic).
        for session in (a, b):
            session.predict(*controls(temperature=0.0, deterministic=True), api_name="/set_params")
        prompt_a, prompt_b = "Hello there", "Tell me a long story"
        alone_a = a.predict(prompt_a, api_name="/chat_send")
        alone_b = b.predict(prompt_b, api_name="/chat_send")
        assert "length" in alone_a[2], "premise: A's reply runs to the token limit"
        a.predict(api_name="/chat_new")
        b.predict(api_name="/chat_new")

        job_a = a.submit(prompt_a, api_name="/chat_send")
        assert wait_for(lambda: bool(job_a.outputs()) and len(reply_text(job_a.outputs()[-1])) > 0)
        job_b = b.submit(prompt_b, api_name="/chat_send")
        a.predict(api_name="/chat_stop")
        assert wait_for(job_a.done)
        final_b = job_b.result()
        # B got exactly the reply it gets alone: A's Stop neither cut it nor mixed into it.
        assert reply_text(final_b) == reply_text(alone_b)
        # A stopped reply may end in half a character (shown as U+FFFD), whole in the full one.
        partial_a = reply_text(job_a.outputs()[-1]).rstrip("\ufffd")
        assert reply_text(alone_a).startswith(partial_a)
        assert len(partial_a) < len(reply_text(alone_a))
    finally:
        runtime.remember(before)


def test_notebook_continues_text(client):
    text, stats = client.predict("The keeper climbed", api_name="/notebook_generate")
    assert text.startswith("The keeper climbed") and len(text) > len("The keeper climbed")
    assert "tokens/s" in stats


# Gradio 6 checks dropdown values against their choices, and our handlers check names
# against the server's own listing again (the dropdown's choices can be stale).
REFUSED = "not in the list of choices|unknown"


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/hosts", "tiny-llama/../x", ""])
def test_hostile_model_name_is_refused_and_model_kept(client, runtime, name):
    with pytest.raises(AppError, match=REFUSED):
        client.predict(name, "auto", api_name="/model_load")
    assert runtime.models.current.name == "tiny-llama"


def test_hostile_preset_name_is_refused(client):
    with pytest.raises(AppError, match=REFUSED):
        client.predict("../../etc/passwd", api_name="/load_preset")


def controls(**changes):
    """All Parameters-tab control values, neutral except `changes` (as the UI shows them)."""
    values = dict(zip(KINDS, control_values(SamplingParams()), strict=True))
    values.update(changes)
    return list(values.values())


def test_invalid_sampling_values_are_refused_with_field(client):
    # Out of a slider's range: Gradio itself refuses it.
    with pytest.raises(AppError, match="minimum"):
        client.predict(*controls(temperature=-3.0), api_name="/set_params")
    # Past the controls' checks, SamplingParams refuses it and names the field.
    too_many_stops = "\n".join(f"stop{i}" for i in range(40))
    status = client.predict(*controls(stop=too_many_stops), api_name="/set_params")
    assert "Not applied" in status and "stop" in status
    status = client.predict(*controls(sampler_priority="top_k\nbogus"), api_name="/set_params")
    assert "Not applied" in status and "sampler_priority" in status
    status = client.predict(*controls(logit_bias="keeper: lots"), api_name="/set_params")
    assert "Not applied" in status and "logit_bias" in status
    assert client.predict(*controls(stop="END", temperature=0.7), api_name="/set_params") == ""


def test_grammar_fields_in_the_parameters_tab_refuse_bad_ones_and_shape_replies(client):
    status = client.predict(*controls(grammar_string="root ::= ["), api_name="/set_params")
    assert "Not applied" in status and "grammar_string" in status
    status = client.predict(*controls(json_schema='{"type": "strin"}'), api_name="/set_params")
    assert "Not applied" in status and "json_schema" in status
    assert client.predict(*controls(grammar_string='root ::= "yes" | "no"'), api_name="/set_params") == ""
    try:
        text, _ = client.predict("Is the sea blue?", api_name="/default_generate")
        assert text in ("yes", "no")
    finally:
        client.predict(*controls(), api_name="/set_params")


def test_preset_save_and_delete_through_the_ui(client, runtime):
    client.predict(*controls(temperature=0.33, dry_multiplier=0.5), api_name="/set_params")
    _, status = client.predict("ui-made", api_name="/save_preset")
    assert "saved" in status
    assert runtime.presets.load("ui-made").temperature == 0.33
    with pytest.raises(AppError, match="invalid preset name"):
        client.predict("../evil", api_name="/save_preset")
    client.predict("ui-made", api_name="/delete_preset")
    assert "ui-made" not in runtime.presets.names()
    with pytest.raises(AppError):
        client.predict("min_p", api_name="/delete_preset")


def test_neutralize_keeps_length_and_turns_samplers_off(client):
    client.predict(*controls(temperature=0.33, top_k=7, max_new_tokens=99), api_name="/set_params")
    result = client.predict(api_name="/neutralize_samplers")
    values = dict(zip(KINDS, result[1:], strict=True))
    assert values["temperature"] == 1.0 and values["top_k"] == 0 and values["max_new_tokens"] == 99


def test_parameters_tab_says_what_the_model_honours(client, runtime):
    result = client.predict(api_name="/params_support")
    note = result[0] if isinstance(result, (list, tuple)) else result
    assert f"**{runtime.models.current.name} (transformers)** honours every parameter" in note


def test_password_protected_ui(runtime):
    import dataclasses

    import httpx

    from tests.conftest import free_port
    from webui.ui.app import launch

    locked = dataclasses.replace(runtime, settings=runtime.settings.model_copy(update={"gradio_auth": "ann:s3cret-pw"}))
    app, url = launch(locked, block=False, port=free_port())
    try:
        assert httpx.get(f"{url}gradio_api/info").status_code in (401, 403)
        with pytest.raises(ValueError, match="Could not login"):
            Client(url, auth=("ann", "wrong"), verbose=False)
        ok = Client(url, auth=("ann", "s3cret-pw"), verbose=False)
        assert "/chat_send" in ok.view_api(print_info=False, return_format="dict")["named_endpoints"]
    finally:
        app.close()


def test_ui_refuses_foreign_host_headers(app_url):
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 gets nothing."""
    import httpx

    assert httpx.get(app_url).status_code == 200
    assert httpx.get(app_url, headers={"Host": "evil.example"}).status_code == 403
    assert httpx.get(f"{app_url}gradio_api/info", headers={"Host": "evil.example:7860"}).status_code == 403


@needs_proc
def test_an_idle_ui_server_sleeps_and_a_click_still_runs(ui, client, runtime):
    """The server's event loop wakes a few times a second at most while nothing
    happens: Gradio's queue polled ~70 times a second and uvicorn's loop 10
    (webui/ui/quiet_queue.py, webui/quiet_server.py)."""
    import gradio.http_server

    from webui.quiet_server import QuietTicks

    app, _ = ui
    assert isinstance(app.server, QuietTicks) and not issubclass(gradio.http_server.Server, QuietTicks)
    queue = app._queue
    assert wait_for(lambda: not any(queue.active_jobs) and not len(queue) and runtime.engine.pending == 0)
    time.sleep(0.5)
    slept, _ = thread_activity(app.server.thread)
    time.sleep(3)
    woke = thread_activity(app.server.thread)[0] - slept
    assert woke < 30, f"the idle UI server's event loop woke {woke} times in 3 s"
    # Queued events are started as they arrive: a click, then a streamed reply.
    shown = client.predict(api_name="/chat_new")
    assert shown[0] == [] and "New chat" in str(shown[2])  # an empty chat, titled as new
    text, stats = client.predict("The keeper climbed", api_name="/notebook_generate")
    assert len(text) > len("The keeper climbed") and "tokens/s" in stats
