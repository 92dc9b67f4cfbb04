"""One error object from where it is raised to the edge: the field it blames travels as
`param`, and each surface (the API's OpenAI shape, the UI's message) maps it once."""

import gradio as gr
import pytest
from fastapi.testclient import TestClient

from webui.api.errors import error_body
from webui.api.openai_api import build_api
from webui.errors import AppError, ServerError
from webui.generation.chain import token_ids
from webui.generation.params import ParamsError, make_params
from webui.generation.request import ModelNotServed, QueueFull
from webui.model_manager import ModelBusy
from webui.paths import NameRefused
from webui.ui.guard import user_errors

from tests.conftest import API_KEY


def test_params_error_names_its_field_without_reading_the_message():
    with pytest.raises(ParamsError) as info:
        make_params({"top_p": 7.0})
    assert info.value.param == "top_p" and info.value.code == "invalid_value" and info.value.status == 400
    assert isinstance(info.value, ValueError)  # callers that catch ValueError still do


def test_a_token_id_outside_the_vocabulary_blames_its_field(tokenizer):
    with pytest.raises(ParamsError) as info:
        token_ids(make_params({"suppress_tokens": [10**6]}), tokenizer, 300, [0])
    assert info.value.param == "suppress_tokens"


@pytest.mark.parametrize("error, status, kind, code", [
    (QueueFull("busy"), 503, "server_error", "server_busy"),
    (ModelBusy("busy"), 503, "server_error", "server_busy"),
    (ModelNotServed("gone", param="model"), 404, "invalid_request_error", "model_not_found"),
    (NameRefused("no such preset"), 404, "invalid_request_error", "not_found"),
])
def test_each_error_carries_its_own_status_and_code(error, status, kind, code):
    assert error.status == status
    assert error_body(error)["error"] == {"message": str(error), "type": kind, "param": error.param, "code": code}


def test_blame_names_a_field_only_when_none_is_named():
    nameless, named = AppError("x"), AppError("y", param="top_k")
    nameless.blame("messages")
    named.blame("messages")
    assert (nameless.param, named.param) == ("messages", "top_k")


def test_the_ui_shows_an_app_errors_message_and_hides_anything_else():
    with pytest.raises(gr.Error) as shown:
        with user_errors():
            raise ServerError("the model is loading")
    assert shown.value.message == "the model is loading"
    with pytest.raises(gr.Error) as hidden:
        with user_errors():
            raise KeyError("secret internals")
    assert "secret" not in hidden.value.message and "KeyError" in hidden.value.message


def test_the_api_answers_a_params_error_with_the_field_it_names(runtime):
    api = TestClient(build_api(runtime), base_url="http://127.0.0.1")
    reply = api.post("/v1/completions", headers={"x-api-key": API_KEY},
                     json={"model": runtime.models.current.name, "prompt": "hi", "max_tokens": 2,
                           "min_p": 3.5})
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "min_p" and reply.json()["error"]["code"] == "invalid_value"


def test_each_api_reads_its_own_runtime(runtime):
    """Routes read the Runtime from the app they are mounted on, so two apps built over
    two runtimes never see each other's models."""
    import dataclasses

    from webui.model_manager import ModelManager

    # Another runtime with nothing loaded and none to load (load on demand would list the
    # folder's models as loadable: README, "Models on demand").
    empty = dataclasses.replace(runtime, models=ModelManager(runtime.models.model_dir, runtime.models.registry,
                                                             runtime.models.options),
                                settings=runtime.settings.model_copy(update={"load_on_demand": False}), resident=None)
    ours = TestClient(build_api(runtime), base_url="http://127.0.0.1")
    theirs = TestClient(build_api(empty), base_url="http://127.0.0.1")
    headers = {"x-api-key": API_KEY}
    assert [m["id"] for m in ours.get("/v1/models", headers=headers).json()["data"]] == [runtime.models.current.name]
    assert theirs.get("/v1/models", headers=headers).json()["data"] == []
