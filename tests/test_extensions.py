"""Extensions: every hook's call and order, isolation of faulty ones, discovery.

Extensions are written into a temporary user_data/extensions/ folder as real
script.py files and loaded the way the app loads them; generation runs on the tiny
real model.  Every hook has a test named test_hook_<hook> (test_extension_docs.py
checks that).
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.conftest import make_settings
from webui.extensions import discover, load_extensions, make_state
from webui.extensions.host import ExtensionHost
from webui.generation.params import make_params
from webui.settings import PROJECT_ROOT

GREEDY = {"temperature": 0.0, "max_new_tokens": 8}


def write_extension(user_data: Path, name: str, code: str) -> Path:
    folder = user_data / "extensions" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "script.py").write_text(textwrap.dedent(code), encoding="utf-8")
    return folder


def host_with(tmp_path: Path, extensions: dict[str, str], order: list[str] | None = None,
              overrides: dict | None = None) -> ExtensionHost:
    for name, code in extensions.items():
        write_extension(tmp_path, name, code)
    available, notes = discover(tmp_path / "no-bundled", tmp_path / "extensions")
    return load_extensions(order or list(extensions), available, overrides, notes)


def appender(tag: str) -> str:
    """An extension that marks every modifier it runs with `tag`."""
    return f"""
    def input_modifier(string, state, is_chat=False):
        return string + "[{tag}]"

    def output_modifier(string, state, is_chat=False):
        return string + "<{tag}>"

    def chat_input_modifier(text, visible_text, state):
        return text + "{tag}", visible_text + "{tag}"

    def bot_prefix_modifier(string, state):
        return string + "{tag}"

    def history_modifier(history):
        history["internal"].append("{tag}")
        return history

    def state_modifier(state):
        state["seen"] = state.get("seen", "") + "{tag}"
        return state
    """


@pytest.fixture()
def state():
    return make_state(make_params(GREEDY))


def build(models_root, user_data, names, **overrides):
    from webui.runtime import build_runtime

    return build_runtime(make_settings(models_root, user_data, extensions=tuple(names), **overrides))


# -- each hook, and the order ----------------------------------------------------------------


def test_hook_input_modifier_chains_in_the_configured_order(tmp_path, state):
    host = host_with(tmp_path, {"a": appender("a"), "b": appender("b")}, ["b", "a"])
    assert host.names() == ["b", "a"]
    assert host.input("x", state, False) == "x[b][a]"


def test_hook_output_modifier(tmp_path, state):
    host = host_with(tmp_path, {"a": appender("a"), "b": appender("b")})
    assert host.output("reply", state, True) == "reply<a><b>"


def test_hook_chat_input_modifier(tmp_path, state):
    host = host_with(tmp_path, {"a": appender("a"), "b": appender("b")})
    assert host.chat_input("hi", "shown", state) == ("hiab", "shownab")


def test_hook_bot_prefix_modifier(tmp_path, state):
    host = host_with(tmp_path, {"a": appender("a"), "b": appender("b")}, ["b", "a"])
    assert host.bot_prefix("Assistant:", state) == "Assistant:ba"


def test_hook_state_modifier_changes_sampling_through_validation(models_root, tmp_path):
    write_extension(tmp_path, "longer", """
        def state_modifier(state):
            state["max_new_tokens"] = 3
            state["mode"] = "changed"
            return state
    """)
    runtime = build(models_root, tmp_path, ["longer"])
    reply = runtime.generate("owner", "The keeper", make_params(GREEDY))
    list(reply)
    assert reply.stats.new_tokens == 3
    assert reply.state["mode"] == "changed"


def test_hook_history_modifier_gets_a_copy(tmp_path):
    host = host_with(tmp_path, {"a": appender("a"), "b": appender("b")})
    history = {"internal": [], "visible": []}
    assert host.history(history) == {"internal": ["a", "b"], "visible": []}
    assert history == {"internal": [], "visible": []}


def test_hook_custom_generate_chat_prompt_first_wins_and_none_declines(tmp_path, state):
    host = host_with(tmp_path, {
        "decline": "def custom_generate_chat_prompt(user_input, state, **kwargs):\n    return None\n",
        "first": "def custom_generate_chat_prompt(user_input, state, **kwargs):\n"
                 "    return 'P1:' + user_input + str(kwargs.get('impersonate'))\n",
        "second": "def custom_generate_chat_prompt(user_input, state):\n    return 'P2:' + user_input\n",
    }, ["decline", "first", "second"])
    assert host.chat_prompt("hi", state, impersonate=True) == "P1:hiTrue"
    named = host_with(tmp_path / "named", {"named": (
        "def custom_generate_chat_prompt(user_input, state, impersonate=False, *, _continue=False):\n"
        "    return f'{user_input}:{impersonate}:{_continue}'\n")})
    assert named.chat_prompt("u", state, impersonate=True, _continue=True, history=[]) == "u:True:True"
    assert any("custom_generate_chat_prompt" in w and "decline" in w for w in host.warnings)
    assert host_with(tmp_path / "none", {}).chat_prompt("hi", state) is None


def test_hook_custom_tokenized_length(models_root, tmp_path):
    write_extension(tmp_path, "counter", "def custom_tokenized_length(prompt):\n    return 1000 + len(prompt)\n")
    assert build(models_root, tmp_path, ["counter"]).token_count("abc") == 1003
    plain = build(models_root, tmp_path / "plain", [])
    assert 0 < plain.token_count("The keeper climbed") < 20


def test_hook_custom_generate_reply_replaces_the_model_and_output_modifier_runs(models_root, tmp_path):
    write_extension(tmp_path, "canned", """
        def custom_generate_reply(question, original_question, seed, state, stopping_strings, is_chat=False):
            for reply in ("Hello", "Hello from", "Hello from " + original_question):
                yield reply

        def output_modifier(string, state, is_chat=False):
            return string.upper()
    """)
    runtime = build(models_root, tmp_path, ["canned"])
    reply = runtime.generate("owner", "the notebook", make_params(GREEDY))
    assert "".join(reply) == "Hello from the notebook"
    assert reply.text == "HELLO FROM THE NOTEBOOK"
    assert reply.generated_by == "canned" and reply.stats is None


def test_hook_custom_generate_reply_that_yields_nothing_lets_the_model_answer(models_root, tmp_path):
    write_extension(tmp_path, "shy", """
        def custom_generate_reply(question, original_question, seed, state, stopping_strings, is_chat=False):
            return iter(())
    """)
    runtime = build(models_root, tmp_path, ["shy"])
    reply = runtime.generate("owner", "The keeper", make_params(GREEDY))
    assert "".join(reply) and reply.stats.new_tokens == 8 and reply.generated_by is None


def test_hook_tokenizer_modifier_changes_the_ids_the_model_gets(models_root, tmp_path):
    write_extension(tmp_path, "shorten", """
        def tokenizer_modifier(state, prompt, input_ids, input_embeds):
            return prompt, input_ids[:, :2], input_embeds
    """)
    runtime = build(models_root, tmp_path, ["shorten"])
    reply = runtime.generate("owner", "The keeper climbed the stairs", make_params(GREEDY))
    list(reply)
    assert reply.stats.prompt_tokens == 2


def test_hook_tokenizer_modifier_may_supply_embeddings(models_root, tmp_path, runtime):
    write_extension(tmp_path, "embed", """
        params = {"embed": None}

        def tokenizer_modifier(state, prompt, input_ids, input_embeds):
            return prompt, input_ids, params["embed"](input_ids)
    """)
    runtime_e = build(models_root, tmp_path, ["embed"])
    runtime_e.extensions.get("embed").params["embed"] = runtime_e.models.current.model.get_input_embeddings()
    with_embeds = runtime_e.generate("o", "The keeper climbed", make_params(GREEDY))
    plain = runtime.generate("o", "The keeper climbed", make_params(GREEDY))
    assert "".join(with_embeds) == "".join(plain)  # the same embeddings give the same greedy reply
    assert runtime_e.extensions.faults() == []


def test_hook_logits_processor_modifier_bans_a_token(models_root, tmp_path, runtime):
    plain = runtime.generate("o", "The keeper", make_params(GREEDY))
    list(plain)
    tokenizer = runtime.models.current.tokenizer
    first = tokenizer("The keeper" + plain.raw, add_special_tokens=False)["input_ids"][
        len(tokenizer("The keeper", add_special_tokens=False)["input_ids"])]
    write_extension(tmp_path, "ban", f"""
        class Ban:
            def __call__(self, input_ids, scores):
                scores[:, {first}] = -float("inf")
                return scores

        def logits_processor_modifier(processor_list, input_ids):
            processor_list.append(Ban())
    """)
    banned = build(models_root, tmp_path, ["ban"]).generate("o", "The keeper", make_params(GREEDY))
    list(banned)
    assert banned.raw != plain.raw
    assert first not in tokenizer(banned.raw, add_special_tokens=False)["input_ids"][:1]


def test_hook_setup_runs_once_before_other_hooks(tmp_path):
    host = host_with(tmp_path, {"s": """
        params = {"calls": []}

        def setup():
            params["calls"].append("setup")

        def custom_css():
            params["calls"].append("css")
            return "a {}"
    """})
    host.css()
    assert host.get("s").params["calls"] == ["setup", "css"]


def test_hook_custom_css_and_custom_js_are_collected_in_order(tmp_path):
    host = host_with(tmp_path, {
        "a": "def custom_css():\n    return '.a {}'\n\ndef custom_js():\n    return 'window.a = 1;'\n",
        "b": "def custom_css():\n    return '.b {}'\n\ndef custom_js():\n    return 'throw new Error(1);'\n",
    })
    css = host.css()
    assert css.index(".a {}") < css.index(".b {}")
    js = host.js()
    assert js.startswith("() => {") and js.count("try {") == 2 and js.index("window.a") < js.index("throw")


def test_hook_custom_js(tmp_path):
    assert host_with(tmp_path, {"none": "params = {}\n"}).js() == ""


def test_hook_ui_blocks_and_tabs_are_rendered(models_root, tmp_path):
    import gradio as gr

    from webui.ui.app import build_app

    write_extension(tmp_path, "block", """
        import gradio as gr
        params = {"display_name": "Block", "is_tab": False}
        def ui():
            gr.Textbox(label="block-ext-box")
    """)
    write_extension(tmp_path, "tabbed", """
        import gradio as gr
        params = {"display_name": "Tabbed one", "is_tab": True}
        def ui():
            gr.Textbox(label="tab-ext-box")
    """)
    app = build_app(build(models_root, tmp_path, ["block", "tabbed"]))
    labels = {c.label for c in app.blocks.values() if isinstance(c, gr.Textbox)}
    tabs = {c.label for c in app.blocks.values() if isinstance(c, gr.Tab)}
    assert {"block-ext-box", "tab-ext-box"} <= labels
    assert {"Tabbed one", "Session"} <= tabs


def test_hook_register_tabs(models_root, tmp_path):
    import gradio as gr

    from webui.ui.app import build_app

    write_extension(tmp_path, "tabs", """
        import gradio as gr
        def register_tabs(register):
            register("Registered", lambda runtime: gr.Markdown("model: " + runtime.models.current.name))
            register("Registered", lambda runtime: gr.Markdown("duplicate"))
    """)
    runtime = build(models_root, tmp_path, ["tabs"])
    app = build_app(runtime)
    tabs = [c.label for c in app.blocks.values() if isinstance(c, gr.Tab)]
    assert tabs.count("Registered") == 1
    assert any("already exists" in w for w in runtime.extensions.warnings)


def test_hook_register_api_routes(models_root, tmp_path):
    from fastapi.testclient import TestClient

    from webui.api.openai_api import build_api

    write_extension(tmp_path, "routes", """
        def register_api_routes(register):
            register("/ping", lambda: {"pong": True})

            async def echo(word: str):
                if word == "boom":
                    raise RuntimeError("route failed")
                return {"word": word}

            register("/echo", echo)
    """)
    runtime = build(models_root, tmp_path, ["routes"], api_key="a-long-test-key")
    client = TestClient(build_api(runtime), base_url="http://127.0.0.1")
    assert client.get("/v1/extensions/routes/ping").status_code == 401  # behind the API key
    answer = client.get("/v1/extensions/routes/ping", headers={"Authorization": "Bearer a-long-test-key"})
    assert answer.json() == {"pong": True}
    key = {"Authorization": "Bearer a-long-test-key"}
    assert client.get("/v1/extensions/routes/echo?word=hi", headers=key).json() == {"word": "hi"}
    assert client.get("/v1/extensions/routes/echo", headers=key).status_code == 400  # FastAPI read the signature
    failed = client.get("/v1/extensions/routes/echo?word=boom", headers=key)
    assert failed.status_code == 500 and "routes" in failed.text
    assert runtime.extensions.get("routes").fault.hook == "register_api_routes"
    assert client.get("/v1/extensions/routes/ping", headers=key).status_code == 503


def test_hook_register_loaders(models_root, tmp_path):
    write_extension(tmp_path, "loaders", """
        from webui.loaders.hf_transformers import TransformersLoader

        class Renamed(TransformersLoader):
            name = "renamed-transformers"

        def register_loaders(register):
            register(Renamed())
            register(TransformersLoader())  # same name as the built-in: refused, first wins
    """)
    runtime = build(models_root, tmp_path, ["loaders"])
    assert runtime.models.registry.names()[-1] == "renamed-transformers"
    assert any("loader not added" in w for w in runtime.extensions.warnings)


def test_older_one_argument_forms_and_other_argument_names_work(tmp_path, state):
    host = host_with(tmp_path, {"old": """
        def input_modifier(string):
            return string + "!"

        def output_modifier(text, st):
            return text + "?" + st["mode"]

        def bot_prefix_modifier(s):
            return s + "#"
    """})
    assert host.input("a", state, False) == "a!"
    assert host.output("b", state, False) == "b?notebook"
    assert host.bot_prefix("c", state) == "c#"


def test_a_package_may_import_its_hooks_from_a_submodule(tmp_path, state, monkeypatch):
    package = tmp_path / "site" / "split_ext"
    package.mkdir(parents=True)
    (package / "hooks.py").write_text("def input_modifier(string):\n    return string + '+'\n")
    (package / "__init__.py").write_text("from split_ext.hooks import input_modifier\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    import split_ext

    host = ExtensionHost()
    host.add("split", split_ext)
    assert host.input("a", state, False) == "a+"
    sys.modules.pop("split_ext", None)
    sys.modules.pop("split_ext.hooks", None)


def test_keyword_style_hookimpl_takes_arguments_by_name(tmp_path, state):
    host = host_with(tmp_path, {"kw": """
        from webui.extensions import hookimpl

        @hookimpl
        def input_modifier(is_chat, string):
            return f"{string}:{is_chat}"
    """})
    assert host.input("a", state, True) == "a:True"


# -- isolation -----------------------------------------------------------------------------


FAULTY = """
def input_modifier(string, state, is_chat=False):
    raise RuntimeError("boom in input")

def output_modifier(string, state, is_chat=False):
    return 42

def bot_prefix_modifier(string, state):
    return string + "never"
"""


def test_a_raising_hook_is_named_marked_faulty_and_the_value_passes_on(tmp_path, state):
    host = host_with(tmp_path, {"bad": FAULTY, "good": appender("g")}, ["bad", "good"])
    assert host.input("x", state, False) == "x[g]"  # unmodified by bad, still modified by good
    fault = host.get("bad").fault
    assert fault.extension == "bad" and fault.hook == "input_modifier"
    assert "boom in input" in fault.message and "RuntimeError" in fault.traceback
    # Marked faulty: its other hooks are skipped from now on; the others keep running.
    assert host.bot_prefix("p", state) == "pg"
    assert host.get("good").active


def test_a_wrong_return_type_marks_the_extension_faulty(tmp_path, state):
    host = host_with(tmp_path, {"bad": FAULTY.replace("raise RuntimeError", "return None  #"), "good": appender("g")})
    assert host.output("r", state, False) == "r<g>"
    assert "must return a str" in host.get("bad").fault.message


def test_a_failing_state_modifier_changes_nothing(models_root, tmp_path):
    write_extension(tmp_path, "halfway", """
        def state_modifier(state):
            state["max_new_tokens"] = 2
            state["temperature"] = "hot"
            return state
    """)
    runtime = build(models_root, tmp_path, ["halfway"])
    reply = runtime.generate("o", "The keeper", make_params(GREEDY))
    list(reply)
    assert reply.stats.new_tokens == 8  # the request completes with its own values
    assert "temperature" in runtime.extensions.get("halfway").fault.message


def test_a_logits_processor_that_raises_mid_generation_does_not_fail_the_request(models_root, tmp_path, runtime):
    write_extension(tmp_path, "crash", """
        def logits_processor_modifier(processor_list, input_ids):
            processor_list.append(lambda ids, scores: 1 / 0)
    """)
    crashing = build(models_root, tmp_path, ["crash"])
    reply = crashing.generate("o", "The keeper", make_params(GREEDY))
    plain = runtime.generate("o", "The keeper", make_params(GREEDY))
    assert "".join(reply) == "".join(plain)
    assert crashing.extensions.get("crash").fault.hook == "logits_processor_modifier"


def test_custom_generate_reply_failing_before_any_text_falls_back_to_the_model(models_root, tmp_path):
    write_extension(tmp_path, "broken", """
        def custom_generate_reply(question, original_question, seed, state, stopping_strings, is_chat=False):
            raise ValueError("no backend")
            yield ""
    """)
    runtime = build(models_root, tmp_path, ["broken"])
    reply = runtime.generate("o", "The keeper", make_params(GREEDY))
    assert "".join(reply) and reply.stats.new_tokens == 8
    assert runtime.extensions.get("broken").fault.hook == "custom_generate_reply"


@pytest.mark.parametrize(("code", "expected"), [
    ("def input_modifier(string, state\n", "SyntaxError"),
    ("import a_module_that_does_not_exist\n", "ModuleNotFoundError"),
    ("def output_modifer(string, state):\n    return string\n", "did you mean output_modifier"),
    ("def input_modifier(a, b, c, d):\n    return a\n", "takes 4 required arguments"),
    ("from webui.extensions import hookimpl\n\n@hookimpl\ndef input_modifier(text):\n    return text\n",
     "text"),
    ("from webui.extensions import hookimpl\n\n@hookimpl\ndef input_modifer(string):\n    return string\n",
     "input_modifer"),
    ("params = ['not', 'a', 'dict']\n", "params must be a dict"),
    ("def setup():\n    raise OSError('no device')\n", "no device"),
])
def test_broken_extensions_are_reported_at_start_and_the_app_starts_without_them(
        models_root, tmp_path, code, expected):
    write_extension(tmp_path, "broken", code)
    write_extension(tmp_path, "fine", appender("f"))
    runtime = build(models_root, tmp_path, ["broken", "fine"])
    assert runtime.extensions.names() == ["fine"]
    [fault] = runtime.extensions.startup_faults
    assert fault.extension == "broken" and expected in fault.message + fault.traceback
    assert any(w.startswith("extension broken:") for w in runtime.warnings)
    assert runtime.generate("o", "The keeper", make_params(GREEDY)).prompt == "The keeper[f]"


# -- discovery, settings, names ------------------------------------------------------------------


def test_entry_point_discovery_with_a_tiny_installed_package(models_root, tmp_path, monkeypatch):
    import importlib

    site = tmp_path / "site"
    (site / "tiny_webui_ext").mkdir(parents=True)
    (site / "tiny_webui_ext" / "__init__.py").write_text(
        "def output_modifier(string, state, is_chat=False):\n    return string + ' (via package)'\n")
    info = site / "tiny_webui_ext-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-webui-ext\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[webui.extensions]\ntiny = tiny_webui_ext\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    try:
        available, _ = discover(tmp_path / "none", tmp_path / "none")
        assert available["tiny"].kind == "package" and available["tiny"].where == "tiny_webui_ext"
        runtime = build(models_root, tmp_path, ["tiny"])
        assert runtime.extensions.output("x", {}, False) == "x (via package)"
    finally:
        sys.modules.pop("tiny_webui_ext", None)


def test_user_folder_replaces_bundled_one_and_odd_folders_are_ignored(tmp_path):
    write_extension(tmp_path / "bundled", "same", "params = {'from': 'bundled'}\n")
    write_extension(tmp_path, "same", "params = {'from': 'user'}\n")
    write_extension(tmp_path, ".hidden", "params = {}\n")
    (tmp_path / "extensions" / "no_script").mkdir()
    available, notes = discover(tmp_path / "bundled" / "extensions", tmp_path / "extensions")
    assert set(available) == {"same"} and available["same"].kind == "user"
    assert any("replaces the bundled one" in n for n in notes)


@pytest.mark.parametrize("name", ["../x", "/etc", "a/../../b", "", "x\x00y", "nope"])
def test_unknown_or_hostile_names_are_never_imported(tmp_path, name):
    host = host_with(tmp_path, {"real": appender("r")}, [name, "real"])
    assert host.names() == ["real"]
    assert any("unknown extension" in w for w in host.warnings)


def test_params_overridden_from_settings_yaml_and_flag_order(tmp_path):
    from webui.cli import parse_flags
    from webui.settings import build_settings

    (tmp_path / "settings.yaml").write_text(
        "extensions: [example]\nexample-prefix: 'P:'\nexample-unknown: 1\nlisten_port: 8001\n")
    settings, warnings = build_settings({"user_data_dir": tmp_path})
    assert warnings == [] and settings.extensions == ("example",) and settings.listen_port == 8001
    assert settings.extension_params == {"example-prefix": "P:", "example-unknown": 1}
    flags, _ = parse_flags(["--extensions", "b", "a"])
    assert flags["extensions"] == ("b", "a")
    assert build_settings({**flags, "user_data_dir": tmp_path})[0].extensions == ("b", "a")
    available, _ = discover(PROJECT_ROOT / "extensions", tmp_path / "none")
    host = load_extensions(settings.extensions, available, settings.extension_params)
    assert host.get("example").params["prefix"] == "P:" and "unknown" not in host.get("example").params


def test_the_example_extension_exercises_every_hook(models_root, tmp_path):
    from webui.api.openai_api import build_api
    from webui.extensions.host import HOOK_NAMES
    from webui.ui.app import build_app

    runtime = build(models_root, tmp_path, ["example"], extensions_dir=PROJECT_ROOT / "extensions")
    example = runtime.extensions.get("example")
    assert set(example.impls) == set(HOOK_NAMES)
    example.params.update(prefix="P ", suffix=" S")
    build_app(runtime)
    calls = example.params["calls"]
    before = len(calls)
    reply = runtime.generate("o", "The keeper", make_params(GREEDY))
    list(reply)
    assert reply.prompt == "P The keeper" and reply.text.endswith(" S")
    # The order of the hooks within one Notebook request.
    assert calls[before:] == ["state_modifier", "input_modifier", "custom_generate_reply",
                              "tokenizer_modifier", "logits_processor_modifier", "output_modifier"]
    state = runtime.extension_state(make_params(GREEDY), "chat")
    runtime.extensions.chat_input("t", "v", state)
    runtime.extensions.bot_prefix("b", state)
    runtime.extensions.history({"internal": [], "visible": []})
    runtime.extensions.chat_prompt("u", state)
    runtime.token_count("some text")
    runtime.extensions.css(), runtime.extensions.js()
    build_api(runtime)
    example.params["canned_reply"] = "canned words here"
    canned = runtime.generate("o", "x", make_params(GREEDY))
    assert "".join(canned) == "canned words here"
    assert calls[0] == "setup" and set(calls) == set(HOOK_NAMES)
    assert runtime.extensions.faults() == []


def test_tgw_style_state_has_the_expected_keys(runtime):
    state = runtime.extension_state(make_params(GREEDY), "chat", name2="Bot")
    for key in ("max_new_tokens", "temperature", "top_p", "mode", "name1", "name2", "context",
                "truncation_length", "history", "seed"):
        assert key in state
    assert state["truncation_length"] == runtime.models.current.context_length and state["name2"] == "Bot"


def test_tensor_type_checks_in_tokenizer_modifier(tmp_path, state):
    host = host_with(tmp_path, {"floaty": """
        def tokenizer_modifier(state, prompt, input_ids, input_embeds):
            return prompt, input_ids.float(), input_embeds
    """})
    ids = torch.tensor([[1, 2, 3]])
    assert host.tokenizer(state, "p", ids, None)[1] is ids
    assert "integer tensor" in host.get("floaty").fault.message


def test_token_ids_outside_the_vocabulary_from_tokenizer_modifier_are_refused(models_root, tmp_path):
    write_extension(tmp_path, "wild", """
        import torch

        def tokenizer_modifier(state, prompt, input_ids, input_embeds):
            return prompt, torch.cat([input_ids, torch.tensor([[10**7]])], dim=1), None
    """)
    runtime = build(models_root, tmp_path, ["wild"])
    reply = runtime.generate("o", "The keeper", make_params(GREEDY))
    assert "".join(reply) and reply.stats.new_tokens == 8
    assert "vocabulary" in runtime.extensions.get("wild").fault.message


def test_a_ui_that_raises_is_hidden_and_the_page_still_builds(models_root, tmp_path):
    import gradio as gr

    from webui.ui.app import build_app

    write_extension(tmp_path, "badui", """
        import gradio as gr
        params = {"is_tab": True, "display_name": "Bad UI"}
        def ui():
            gr.Textbox(label="half-built")
            raise RuntimeError("ui broke")
    """)
    write_extension(tmp_path, "badtab", """
        def register_tabs(register):
            def render(runtime):
                raise ValueError("tab broke")
            register("Broken tab", render)
    """)
    runtime = build(models_root, tmp_path, ["badui", "badtab"])
    app = build_app(runtime)
    tabs = {c.label: c for c in app.blocks.values() if isinstance(c, gr.Tab)}
    assert tabs["Bad UI"].visible is False and tabs["Broken tab"].visible is False
    assert tabs["Session"].visible is not False
    assert runtime.extensions.get("badui").fault.hook == "ui"
    assert runtime.extensions.get("badtab").fault.hook == "register_tabs"
