"""Extensions in the running app: a Text Generation WebUI-style extension, the
Session tab, and the bundled extensions, driven over HTTP with gradio_client."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.conftest import TINY, free_port, make_settings
from tests.test_extensions import write_extension
from webui.chat.history import Conversation
from webui.chat.prompt import ChatPrompt, ChatSetup
from webui.chat.service import ReplyWriter
from webui.chat.store import ChatStore
from webui.generation.params import make_params
from webui.settings import PROJECT_ROOT

# Written exactly as for Text Generation WebUI: only params, input_modifier,
# output_modifier and ui, no import from this app.
TGW_STYLE = '''
import gradio as gr

params = {
    "display_name": "Shouter",
    "is_tab": False,
    "suffix": "!",
}


def input_modifier(string, state, is_chat=False):
    return string + " And"


def output_modifier(string, state, is_chat=False):
    return string.upper() + params["suffix"]


def ui():
    suffix = gr.Textbox(value=params["suffix"], label="Shouter suffix")

    def set_suffix(value):
        params["suffix"] = value

    suffix.change(set_suffix, suffix, None)
'''

FAULTY = '''
def output_modifier(string, state, is_chat=False):
    raise KeyError("missing-thing")
'''


@pytest.fixture(scope="module")
def ext_app(models_root, tmp_path_factory):
    from webui.runtime import build_runtime
    from webui.ui.app import launch

    user_data = tmp_path_factory.mktemp("ext_user_data")
    write_extension(user_data, "shouter", TGW_STYLE)
    write_extension(user_data, "faulty", FAULTY)
    settings = make_settings(models_root, user_data, extensions=("faulty", "shouter", "example"))
    runtime = build_runtime(settings)
    app, url = launch(runtime, block=False, port=free_port())
    yield runtime, Client(url, verbose=False)
    app.close()


@pytest.fixture(autouse=True)
def fresh_suffixes(request):
    """The extensions' suffixes as they start, whatever an earlier test set them to."""
    if "ext_app" in request.fixturenames:
        runtime, _ = request.getfixturevalue("ext_app")
        runtime.extensions.get("shouter").params["suffix"] = "!"
        runtime.extensions.get("example").params["suffix"] = ""


def test_tgw_style_extension_loads_and_acts_unmodified(ext_app):
    runtime, client = ext_app
    assert runtime.extensions.names() == ["faulty", "shouter", "example"]
    text, stats = client.predict("The keeper", api_name="/notebook_generate")
    # input_modifier changed what the model saw (the box keeps what you wrote) ...
    assert text.startswith("The keeper") and "tokens/s" in stats
    # ... and output_modifier the reply; the faulty extension before it did not stop it.
    reply = text[len("The keeper"):]
    assert reply == reply.upper() and reply.endswith("!")
    client.predict("?!", api_name="/set_suffix")
    text, _ = client.predict("The keeper", api_name="/notebook_generate")
    assert text.endswith("?!")


def test_the_api_runs_input_and_output_modifiers_on_whole_replies(ext_app):
    import httpx

    from webui.api.openai_api import APIServer

    runtime, _ = ext_app
    server = APIServer(runtime, port=free_port())
    url = server.start()
    try:
        body = {"model": TINY, "prompt": "The keeper", "max_tokens": 8, "temperature": 0}
        answer = httpx.post(f"{url}/completions", json=body, timeout=60).json()
        text = answer["choices"][0]["text"]
        assert text == text.upper() and text.endswith("!")  # output_modifier, as in the Notebook
        tokenizer = runtime.models.current.tokenizer
        assert answer["usage"]["prompt_tokens"] == len(tokenizer("The keeper And")["input_ids"])  # input_modifier
        chat = {"model": TINY, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}
        reply = httpx.post(f"{url}/chat/completions", json=chat, timeout=60).json()["choices"][0]["message"]
        assert reply["content"] == reply["content"].upper() and reply["content"].endswith("!")
        streamed = httpx.post(f"{url}/completions", json={**body, "stream": True}, timeout=60).text
        assert "data: [DONE]" in streamed  # streamed replies pass through unmodified, piece by piece
        # Ollama's routes run the same hooks.
        root = url.removesuffix("/v1")
        ollama = {"model": TINY, "prompt": "The keeper", "raw": True, "stream": False,
                  "options": {"num_predict": 8, "temperature": 0}}
        answer = httpx.post(f"{root}/api/generate", json=ollama, timeout=60).json()
        assert answer["response"] == answer["response"].upper() and answer["response"].endswith("!")
        assert answer["prompt_eval_count"] == len(tokenizer("The keeper And")["input_ids"])
        ollama_chat = {"model": TINY, "messages": chat["messages"], "stream": False, "options": {"num_predict": 8}}
        content = httpx.post(f"{root}/api/chat", json=ollama_chat, timeout=60).json()["message"]["content"]
        assert content == content.upper() and content.endswith("!")
    finally:
        server.stop()


def test_session_tab_shows_the_faulty_extension_with_its_traceback(ext_app):
    runtime, client = ext_app
    client.predict("The keeper", api_name="/notebook_generate")
    table, faults = client.predict(api_name="/session_refresh")
    assert "faulty" in table and "output_modifier" in table and "KeyError" in table
    assert "missing-thing" in faults and "Traceback" in faults
    assert "shouter" in table and "loaded" in table


@pytest.mark.parametrize("names", [["../../etc/passwd"], ["not_installed"], ["example", "/etc/hosts"]])
def test_session_tab_refuses_names_it_did_not_discover(ext_app, names):
    runtime, client = ext_app
    with pytest.raises(AppError):
        client.predict(names, api_name="/session_save_extensions")
    assert not runtime.settings.settings_file.exists() or "etc" not in runtime.settings.settings_file.read_text()


def test_session_tab_saves_the_order_for_the_next_start(ext_app):
    from webui.settings import build_settings

    runtime, client = ext_app
    note = client.predict(["shouter", "example"], api_name="/session_save_extensions")
    assert "next start" in note
    saved = yaml.safe_load(runtime.settings.settings_file.read_text())
    assert saved["extensions"] == ["shouter", "example"]
    settings, _ = build_settings({"user_data_dir": runtime.settings.user_data_dir})
    assert settings.extensions == ("shouter", "example")


def test_example_extension_ui_route_and_tab_in_the_live_app(ext_app):
    runtime, client = ext_app
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/example_suffix", "/session_save_extensions", "/session_refresh", "/notebook_count_tokens"} <= names
    client.predict(" [done]", api_name="/example_suffix")
    assert runtime.extensions.get("example").params["suffix"] == " [done]"
    assert client.predict("The keeper", api_name="/notebook_count_tokens").endswith("tokens")


# -- bundled extensions ------------------------------------------------------------------------


def bundled(models_root, tmp_path, *names):
    from webui.runtime import build_runtime

    return build_runtime(make_settings(models_root, tmp_path, extensions=names,
                                       extensions_dir=PROJECT_ROOT / "extensions"))


def test_prompt_viewer_shows_the_exact_prompt_the_model_got(models_root, tmp_path):
    runtime = bundled(models_root, tmp_path, "prompt_viewer")
    viewer = runtime.extensions.get("prompt_viewer").module
    assert viewer.describe()[0].startswith("Nothing")
    prompt = ChatPrompt(ChatSetup(system="Be brief."), [{"role": "user", "content": "Hello keeper"}])
    stream = runtime.stream("o", prompt, make_params({"temperature": 0.0, "max_new_tokens": 4}))
    "".join(stream)
    summary, prompt = viewer.describe()
    assert "<|user|>" in prompt and "Hello keeper" in prompt and "Be brief." in prompt
    assert prompt.startswith("<s>")  # special tokens are shown
    assert f"{stream.stats.prompt_tokens} tokens" in summary
    # A signed-in user's chat is recorded for that user only.
    conversation = Conversation(id="c")
    conversation.append("user", "Ann's secret")
    writer = ReplyWriter(runtime, "o", ChatStore(tmp_path / "chats"), conversation, ChatSetup(),
                         make_params({"max_new_tokens": 2}), user="ann")
    list(writer)
    assert "Ann's secret" in viewer.describe("ann")[1]
    assert viewer.describe("bob")[0].startswith("Nothing")
    assert "Ann's secret" not in viewer.describe()[1]
    # A message given document passages (webui/ui/documents_panel.py): the chat shows the
    # question, the prompt shows the passages the model was given with it.
    asked = conversation.append("user", "Where is the key?")
    conversation.set_content(asked.id, "[1] notes.txt: The key is under the blue pot.\n\nWhere is the key?",
                             visible="Where is the key?\n\n📎 `notes.txt`")
    list(ReplyWriter(runtime, "o", ChatStore(tmp_path / "chats"), conversation, ChatSetup(),
                     make_params({"max_new_tokens": 2}), user="ann"))
    assert "The key is under the blue pot." in viewer.describe("ann")[1]


def test_character_bias_extends_the_bot_prefix(models_root, tmp_path):
    runtime = bundled(models_root, tmp_path, "character_bias")
    state = runtime.extension_state(make_params({}), "chat")
    assert runtime.extensions.bot_prefix("<|assistant|>\n", state) == "<|assistant|>\n *I am so happy*"
    runtime.extensions.get("character_bias").params["activate"] = False
    assert runtime.extensions.bot_prefix("<|assistant|>\n", state) == "<|assistant|>\n"


def test_character_bias_params_from_settings(models_root, tmp_path):
    (tmp_path / "settings.yaml").write_text("character_bias-bias_string: ' *grumbles*'\n")
    from webui.runtime import build_runtime
    from webui.settings import build_settings

    settings, _ = build_settings({"user_data_dir": tmp_path, "model_dir": models_root, "model": "tiny-llama",
                                  "extensions": ("character_bias",)})
    runtime = build_runtime(settings)
    assert runtime.extensions.bot_prefix("X", runtime.extension_state(make_params({}))) == "X *grumbles*"


def test_word_bias_bans_a_word_the_model_would_write(models_root, tmp_path, runtime):
    greedy = make_params({"temperature": 0.0, "max_new_tokens": 30})
    tokenizer = runtime.models.current.tokenizer

    def generated_ids(rt):
        stream = rt.stream("o", "The keeper", greedy, logprobs=0)
        list(stream)
        return [entry.token_id for entry in stream.logprobs]

    def single_token(text):
        ids = tokenizer.encode(text, add_special_tokens=False)
        return ids[0] if len(ids) == 1 else None

    plain = generated_ids(runtime)
    # The tiny model writes random strings: pick a generated token that is a word on its own.
    words = [tokenizer.decode([i]).strip() for i in plain]
    target = next(w for w in words if w.isascii() and w.isalpha() and single_token(w) is not None)
    runtime_b = bundled(models_root, tmp_path, "word_bias")
    word_bias = runtime_b.extensions.get("word_bias")
    word_bias.params["rules"] = f"{target}: -100"
    banned = generated_ids(runtime_b)
    assert banned != plain
    forbidden = {single_token(target), single_token(" " + target)} - {None}
    assert forbidden & set(plain) and not forbidden & set(banned)
    assert word_bias.active


def test_word_bias_rules_are_checked(models_root, tmp_path):
    runtime = bundled(models_root, tmp_path, "word_bias")
    module = runtime.extensions.get("word_bias").module
    assert module.parse_rules("dragon: -100\n\n castle : 5 ") == [("dragon", -100.0), ("castle", 5.0)]
    for bad in ("dragon", "dragon: lots", ": 3", "x: nan"):
        with pytest.raises(ValueError):
            module.parse_rules(bad)
    # Bad rules at generation time: the extension is marked faulty, the request completes.
    runtime.extensions.get("word_bias").params["rules"] = "no colon here"
    reply = runtime.generate("o", "The keeper", make_params({"temperature": 0.0, "max_new_tokens": 3}))
    assert "".join(reply) and not runtime.extensions.get("word_bias").active


def test_apply_now_restarts_the_ui_with_the_chosen_extensions(models_root, tmp_path):
    from webui.runtime import build_runtime
    from webui.ui.app import launch, restart_ui

    write_extension(tmp_path, "shouter", TGW_STYLE)
    runtime = build_runtime(make_settings(models_root, tmp_path, extensions=("example",),
                                          extensions_dir=PROJECT_ROOT / "extensions"))
    port = free_port()
    app, url = launch(runtime, block=False, port=port)
    try:
        client = Client(url, verbose=False)
        with pytest.raises(AppError):
            client.predict(["shouter", "../shouter"], api_name="/session_apply_extensions")
        assert runtime.ui_restart.take(timeout=0) is None  # a refused request restarts nothing
        note = client.predict(["shouter"], api_name="/session_apply_extensions")
        assert "Restarting the UI" in note
        names = runtime.ui_restart.take(timeout=0)  # what the serving loop (app.serve) picks up
        assert names == ("shouter",)
        app, new_url = restart_ui(runtime, app, port, names)
        assert new_url == url
        assert runtime.extensions.names() == ["shouter"] and runtime.engine.extensions is runtime.extensions
        assert yaml.safe_load(runtime.settings.settings_file.read_text())["extensions"] == ["shouter"]
        client = Client(url, verbose=False)
        endpoints = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
        assert "/set_suffix" in endpoints and "/example_suffix" not in endpoints
        text, _ = client.predict("The keeper", api_name="/notebook_generate")
        assert text.endswith("!") and text[len("The keeper"):] == text[len("The keeper"):].upper()
    finally:
        app.close()


def test_markdown_export_gives_each_user_their_own_conversations(models_root, tmp_path):
    from webui.runtime import build_runtime
    from webui.ui.app import launch

    settings = make_settings(models_root, tmp_path, extensions=("markdown_export",),
                             extensions_dir=PROJECT_ROOT / "extensions", gradio_auth="ann:ann-pw-1,bob:bob-pw-2")
    runtime = build_runtime(settings)
    ann = runtime.users.get("ann").chats
    chat = ann.new("Assistant", "Ann's chat")
    chat.append("user", "Hello *there*")
    chat.append("assistant", "Hi.")
    ann.save(chat)
    module = runtime.extensions.get("markdown_export").module
    assert module.to_markdown(chat) == "# Ann's chat\n\n## You\n\nHello *there*\n\n## Assistant\n\nHi.\n"
    app, url = launch(runtime, block=False, port=free_port())
    try:
        as_ann = Client(url, auth=("ann", "ann-pw-1"), verbose=False)
        assert as_ann.predict(api_name="/markdown_export_list")["value"] == chat.id
        text, path = as_ann.predict(chat.id, api_name="/markdown_export")
        assert "## You\n\nHello *there*" in text and Path(path).read_text(encoding="utf-8").strip() == text.strip()
        as_bob = Client(url, auth=("bob", "bob-pw-2"), verbose=False)
        assert as_bob.predict(api_name="/markdown_export_list")["choices"] == []
        with pytest.raises(AppError, match="unknown chat"):  # Ann's id means nothing to Bob
            as_bob.predict(chat.id, api_name="/markdown_export")
    finally:
        app.close()

