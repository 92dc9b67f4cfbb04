"""A hostile review's file findings: YAML alias bombs, names, absurd configs, chats over their
limits, unreadable chats, stale temporaries and replies lost to a kill."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from tests.conftest import TINY, make_settings
from webui.chat.characters import CharacterError, CharacterLibrary
from webui.chat.history import MAX_MESSAGE_CHARS, MAX_MESSAGES, ChatError, Conversation, Message
from webui.chat.prompt import ChatSetup
from webui.chat.service import ReplyWriter
from webui.chat.store import ChatStore
from webui.chat.templates import TemplateLibrary
from webui.generation.params import ParamsError, SamplingParams
from webui.loaders.base import ModelRefused
from webui.loaders.hf_options import TransformersOptions
from webui.model_settings import ModelSettingsStore
from webui.paths import NameRefused, is_plain_name, new_entry
from webui.presets import PresetLibrary
from webui.safe_yaml import YAMLRefused, load_yaml
from webui.settings import PROJECT_ROOT, SettingsError, build_settings, read_yaml_mapping
from webui.storage import atomic_write_text, remove_stale_temporaries


def alias_bomb(key: str = "a") -> str:
    """~700 bytes that expand to 9**9 strings (the 'billion laughs')."""
    names = [chr(ord("b") + i) for i in range(9)]
    lines = [f'{names[0]}: &{names[0]} ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip(names, names[1:], strict=False):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    lines.append(f"{key}: *{names[-1]}")
    return "\n".join(lines) + "\n"


# -- item 1: one YAML reader with budgets --------------------------------------------------
def test_alias_bomb_is_refused_fast_without_showing_its_value():
    started = time.monotonic()
    with pytest.raises(YAMLRefused) as info:
        load_yaml(alias_bomb())
    assert time.monotonic() - started < 5  # generous; the point is "not minutes"
    assert "lol" not in str(info.value)


def test_ordinary_aliases_and_nesting_still_load():
    assert load_yaml("base: &b {temperature: 0.7}\nother: *b\nlist: [[1, [2]]]\n") == {
        "base": {"temperature": 0.7}, "other": {"temperature": 0.7}, "list": [[1, [2]]]}


@pytest.mark.parametrize("text", ["a: " + "[" * 5000 + "]" * 5000, "a: &x [*x]", "a: *nothere"])
def test_deep_recursive_or_dangling_yaml_is_refused(text):
    with pytest.raises(YAMLRefused):
        load_yaml(text)


def test_every_yaml_reader_refuses_an_alias_bomb(tmp_path, models_root):
    """Presets, characters, settings, per-model settings, templates: one reader for all."""
    bomb = alias_bomb()
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "bomb.yaml").write_text(bomb)
    with pytest.raises(ParamsError, match="aliases expand"):
        PresetLibrary(PROJECT_ROOT / "presets", presets).load("bomb")
    characters = tmp_path / "characters"
    characters.mkdir()
    (characters / "Bomb.yaml").write_text(alias_bomb("context"))
    with pytest.raises(CharacterError, match="aliases expand"):
        CharacterLibrary(characters).load("Bomb")
    (tmp_path / "settings.yaml").write_text(alias_bomb("extensions"))
    _, warnings = build_settings({"user_data_dir": str(tmp_path), "model_dir": str(models_root)})
    assert any("aliases expand" in w for w in warnings)
    (tmp_path / "model_settings.yaml").write_text(alias_bomb(TINY))
    assert ModelSettingsStore(tmp_path).get(TINY).model_dump(exclude_none=True) in ({}, {"chat_template": None})
    templates = tmp_path / "instruction-templates"
    templates.mkdir()
    (templates / "t.yaml").write_text(alias_bomb("instruction_template"))
    with pytest.raises(SettingsError, match="aliases expand"):
        TemplateLibrary(templates).load("t")
    with pytest.raises(SettingsError, match="nested deeper"):
        (tmp_path / "deep.yaml").write_text("a: " + "[" * 5000 + "]" * 5000)
        read_yaml_mapping(tmp_path / "deep.yaml")


def test_a_card_too_deep_to_read_back_is_refused_and_a_shallow_one_round_trips(tmp_path):
    from webui.chat.cards import CardError

    def card(depth: int) -> bytes:
        return ('{"spec": "chara_card_v2", "data": {"name": "Deep", "extensions": {"x": '
                + "[" * depth + "]" * depth + "}}}").encode()

    library = CharacterLibrary(tmp_path)
    for depth in (40, 400):
        with pytest.raises(CardError, match="nested deeper"):
            library.import_card(card(depth))
    assert library.load(library.import_card(card(20))).name == "Deep"  # saved, and readable again


# -- item 12: names ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["abc\n", "abc\r", "CON", "con", "NUL.txt", "com1", "LPT9.log", "aux.yaml", "trail.",
                                  "trail ", "x" * 129, "", ".hidden", "a..b", "a/b", "-dash"])
def test_unsafe_names_are_refused(tmp_path, name):
    assert not is_plain_name(name)
    with pytest.raises(NameRefused):
        new_entry(tmp_path, name, ".yaml", "preset")


@pytest.mark.parametrize("name", ["abc", "My preset 2", "min_p", "Qwen2.5-0.5B", "console", "a.b", "x" * 128, "nul-x"])
def test_plain_names_are_accepted(name):
    assert is_plain_name(name)


# -- item 2: a config that cannot fit is refused before anything is built ---------------------
def absurd_model(models_root, name: str, **config_changes) -> None:
    folder = models_root / name
    folder.mkdir(exist_ok=True)
    config = json.loads((models_root / TINY / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **config_changes}))
    (folder / "model.safetensors").write_bytes((models_root / TINY / "model.safetensors").read_bytes())


@pytest.mark.parametrize("changes", [{"num_hidden_layers": 10_000_000},
                                     {"hidden_size": 1_000_000, "intermediate_size": 4_000_000}])
def test_absurd_config_is_refused_fast_and_the_model_keeps_serving(runtime, models_root, changes):
    absurd_model(models_root, "absurd", **changes)
    try:
        started = time.monotonic()
        with pytest.raises(ModelRefused):
            runtime.load_model("absurd", save=False)
        with pytest.raises(ModelRefused):
            runtime.fit_report("absurd")  # "Will it fit?" builds nothing either
        assert time.monotonic() - started < 30  # generous; unrefused, this ran for minutes
        assert runtime.models.current.name == TINY
    finally:  # the model folder is shared with the rest of the session's tests
        shutil.rmtree(models_root / "absurd")


def test_a_config_that_fits_passes_the_preflight(models_root):
    from webui.loaders.hf_transformers import TransformersLoader

    TransformersLoader().preflight(models_root / TINY, TransformersOptions())


# -- item 4: limits hold on write; unreadable chats stay visible and recoverable ---------
def test_limits_are_checked_when_a_conversation_changes(tmp_path):
    conversation = Conversation(id="c1")
    with pytest.raises(ChatError, match="at most"):
        conversation.append("user", "x" * (MAX_MESSAGE_CHARS + 1))
    conversation.append("assistant", "ok")
    with pytest.raises(ChatError, match="at most"):
        conversation.set_content(conversation.messages[0].id, "y" * (MAX_MESSAGE_CHARS + 1))
    full = Conversation(id="c2", messages=[Message(id=i, parent=i - 1, role="user", content="m")
                                            for i in range(MAX_MESSAGES)])
    with pytest.raises(ChatError, match="most messages"):
        full.append("user", "one more")
    assert len(full.fork(MAX_MESSAGES - 1, "c3").messages) == MAX_MESSAGES  # linear, not quadratic


def test_store_refuses_to_save_what_it_could_not_read_back(tmp_path):
    store = ChatStore(tmp_path)
    conversation = Conversation(id="c1")
    conversation.messages.append(Message(id=0, parent=-1, role="user", content="ok"))
    store.save(conversation)
    conversation.messages[0] = conversation.messages[0].model_copy(update={"content": "x" * (MAX_MESSAGE_CHARS + 1)})
    with pytest.raises(ChatError, match="not saved"):
        store.save(conversation)
    assert store.load("c1").messages[0].content == "ok"  # the saved version is intact


def test_unreadable_chat_stays_listed_and_can_be_recovered(tmp_path):
    store = ChatStore(tmp_path)
    good = {"format": "webui-chat", "version": 1, "id": "bad1", "title": "Mine", "character": "Assistant",
            "messages": [{"id": 0, "parent": -1, "role": "user", "content": "keep me"},
                         {"id": 1, "parent": 0, "role": "assistant", "content": "x" * (MAX_MESSAGE_CHARS + 5)}]}
    (tmp_path / "bad1.json").write_text(json.dumps(good))
    (tmp_path / "bad2.json").write_text('{"messages": [')  # truncated
    assert store.list() == []  # both set aside...
    labels = list(store.unreadable())
    assert len(labels) == 2  # ...and still shown to their owner
    recovered = [store.recover(label) for label in labels]
    texts = {m.content[:7] for c in recovered for m in c.messages}
    assert "keep me" in texts and "xxxxxxx" in texts and '{"messa' in texts
    assert store.unreadable() == {} and len(store.list()) == 2
    with pytest.raises(NameRefused):
        store.recover("../../etc/passwd")


def test_reply_at_the_message_limit_stops_and_is_saved(runtime, tmp_path):
    store = ChatStore(tmp_path)
    conversation = Conversation(id="long1")
    conversation.append("user", "Tell me")
    store.save(conversation)
    setup = ChatSetup(mode="instruct", character=runtime.users.get(None).characters.load("Assistant"),
                      persona=runtime.users.get(None).persona())
    params = SamplingParams(max_new_tokens=50, seed=1, logit_bias={"2": -100.0})
    writer = ReplyWriter(runtime, "limit-test", store, conversation, setup, params,
                         prefix="p" * (MAX_MESSAGE_CHARS - 3))
    text = list(writer)[-1]
    assert len(text) == MAX_MESSAGE_CHARS and writer.error and "stopped" in writer.error
    assert len(store.load("long1").path()[-1].content) == MAX_MESSAGE_CHARS


# -- item 14: stale temporaries; a streaming reply is saved as it goes ---------------------
def test_stale_temporaries_are_removed_at_start(tmp_path, models_root):
    user_data = tmp_path / "ud"
    atomic_write_text(user_data / "chats" / "keep.json", "{}")
    stale = user_data / "chats" / ".abc.json.k3j4h5g6.tmp"
    stale.write_bytes(b"x" * 1000)
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    fresh = user_data / "presets" / ".p.yaml.a1b2c3d4.tmp"
    fresh.parent.mkdir(parents=True)
    fresh.write_text("in progress")
    other = user_data / "notes.tmp"
    other.write_text("not ours")
    os.utime(other, (time.time() - 3600, time.time() - 3600))
    from webui.runtime import build_runtime

    build_runtime(make_settings(models_root, user_data, model=None))
    assert not stale.exists() and fresh.exists() and other.exists()
    assert (user_data / "chats" / "keep.json").exists()
    assert remove_stale_temporaries(user_data, older_than=0) == 1  # the fresh one, once old enough


def test_streaming_reply_is_saved_while_it_streams(runtime, tmp_path):
    store = ChatStore(tmp_path)
    conversation = Conversation(id="stream1")
    conversation.append("user", "Tell me a long story")
    store.save(conversation)
    setup = ChatSetup(mode="instruct", character=runtime.users.get(None).characters.load("Assistant"),
                      persona=runtime.users.get(None).persona())
    params = SamplingParams(max_new_tokens=200, seed=3, logit_bias={"2": -100.0})
    writer = ReplyWriter(runtime, "save-test", store, conversation, setup, params, save_every=0.0)
    pieces = iter(writer)
    texts = []
    for text in pieces:  # updates may first report the queue; wait for two pieces of text
        texts += [text] if text else []
        if len(texts) == 2:
            break
    # Mid-stream, as a SIGKILL would find it: the file already holds the reply so far.
    on_disk = store.load("stream1").path()[-1]
    assert on_disk.role == "assistant" and on_disk.content == texts[0]
    pieces.close()


# -- round 2, N13/N14: GGUF metadata is hostile input -------------------------------------
def _read_info_in_a_capped_process(path, timeout: float = 120) -> str:
    """read_info in a child with 1.5 GB of address space and a bound on its run: on main a
    lying array count grew memory ~100 MB/s forever; here it must end in LoadError."""
    import subprocess
    import sys

    code = ("import resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_AS, (3 << 29, 3 << 29))\n"
            "from pathlib import Path\n"
            "from webui.loaders.base import LoadError\n"
            "from webui.loaders.gguf_files import read_info\n"
            "try:\n    read_info(Path(sys.argv[1]))\nexcept LoadError as exc:\n    print('LoadError:', exc)\n"
            "except BaseException as exc:\n    print('escaped:', type(exc).__name__)\n")
    try:
        done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                              timeout=timeout, cwd=PROJECT_ROOT)
    except subprocess.TimeoutExpired:
        return f"still running after {timeout:g} s"
    return done.stdout + done.stderr[-2000:]


def test_a_151_byte_gguf_declaring_2_62_array_items_is_refused_at_once(tmp_path):
    import struct

    from tests.gguf_hostile import gguf_string, write_raw_gguf

    bomb = write_raw_gguf(tmp_path / "g4b-bigu8.gguf",
                          kv=[gguf_string("x.y") + struct.pack("<IIQ", 9, 0, 2**62) + b"\0" * 100])
    assert bomb.stat().st_size == 151
    out = _read_info_in_a_capped_process(bomb)
    assert out.startswith("LoadError: g4b-bigu8.gguf is corrupt or truncated (array count of x.y"), out


def _lying_headers():
    import struct

    from tests.gguf_hostile import gguf_f32_tensor, gguf_string

    s = gguf_string
    arch = s("general.architecture") + struct.pack("<I", 8) + s("llama")
    return {  # name -> (kv records, tensor records, tail, counts)
        "tensor count 2^62": ([arch], [], b"", {"tensor_count": 2**62}),
        "key count 2^62": ([arch], [], b"", {"kv_count": 2**62}),
        "string length 2^62": ([s("a.b") + struct.pack("<IQ", 8, 2**62)], [], b"x" * 64, {}),
        "string array count 2^40": ([s("a.b") + struct.pack("<IIQ", 9, 8, 2**40)], [], b"\0" * 64, {}),
        "u64 array count 2^40": ([s("a.b") + struct.pack("<IIQ", 9, 10, 2**40)], [], b"\0" * 64, {}),
        "arrays nested 5000 deep": ([s("a.b") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 5000], [],
                                    b"", {}),
        "key twice": ([arch, arch], [], b"", {}),
        "unknown value type": ([s("a.b") + struct.pack("<I", 77) + b"\0" * 8], [], b"", {}),
        "tensor with 2^31 dims": ([arch], [s("t") + struct.pack("<I", 2**31) + b"\0" * 64], b"", {}),
        "tensor of 2^40 x 4 elements past the end": (
            [arch], [s("t") + struct.pack("<IQQIQ", 2, 2**40, 4, 0, 0)], b"\0" * 64, {}),
        "unknown tensor type": ([arch], [s("t") + struct.pack("<IQIQ", 1, 1, 999, 0)], b"\0" * 64, {}),
        "tensor twice": ([arch], [gguf_f32_tensor("t", 0), gguf_f32_tensor("t", 0)], b"\0" * 64, {}),
        "alignment 3": ([arch, s("general.alignment") + struct.pack("<II", 4, 3)], [], b"", {}),
        "truncated key table": ([arch, s("general.name")[:5]], [], b"", {}),
    }


@pytest.mark.parametrize("case", sorted(_lying_headers()))
def test_gguf_headers_that_lie_are_refused_naming_the_file(tmp_path, case):
    """In a capped child: on main several of these looped or grew memory without end."""
    from tests.gguf_hostile import write_raw_gguf

    kv, tensors, tail, counts = _lying_headers()[case]
    path = write_raw_gguf(tmp_path / "lies.gguf", kv, tensors, tail, **counts)
    out = _read_info_in_a_capped_process(path, timeout=60)
    assert out.startswith(("LoadError: lies.gguf is corrupt", "LoadError: lies.gguf is truncated")), out


@pytest.mark.parametrize("shape", ["200k tensors", "1M-token vocabulary"])
def test_big_gguf_headers_are_read_with_bounded_memory_and_once_per_file_version(tmp_path, shape):
    """On main, gguf's reader took 1.05 GB (200k tensors) and 1.37 GB (1M tokens) and 15-24 s
    per Model-tab pick; the header walk keeps sums only, and a second pick is a cache hit."""
    import struct
    import tracemalloc

    from tests.gguf_hostile import gguf_f32_tensor, gguf_key_string_array, gguf_string, write_raw_gguf
    from webui.loaders.gguf_files import read_info

    arch = gguf_string("general.architecture") + struct.pack("<I", 8) + gguf_string("llama")
    path = tmp_path / "big.gguf"
    if shape == "200k tensors":
        count = 200_000
        write_raw_gguf(path, [arch], [gguf_f32_tensor(f"blk.{i}.w", 4 * i) for i in range(count)],
                       tail=b"\0" * (32 + 4 * count))
    else:
        count = 0
        write_raw_gguf(path, [arch, gguf_key_string_array("tokenizer.ggml.tokens", 1_000_000)])
    tracemalloc.start()
    try:
        info = read_info(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.architecture == "llama" and info.parameters == count
    assert len(info.block_bytes) == count and set(info.block_bytes) <= {4}
    assert peak < 200 << 20, f"{peak >> 20} MiB to read the header"
    assert read_info(path) is info  # the next pick, "Will it fit?" and the load reuse it
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new version of the file
    assert read_info(path) is not info


def test_picking_a_hostile_gguf_in_the_model_tab_is_refused_and_the_model_keeps_serving(runtime, models_root):
    """N13's reach: any signed-in user's Model-tab pick runs "Will it fit?" on the file."""
    import struct

    from tests.gguf_hostile import gguf_string, write_raw_gguf
    from webui.loaders.base import LoadError

    bomb = write_raw_gguf(models_root / "g4b-bigu8.gguf",
                          kv=[gguf_string("x.y") + struct.pack("<IIQ", 9, 0, 2**62) + b"\0" * 100])
    try:  # first where a runaway read cannot take the test run with it (main never returned)
        assert _read_info_in_a_capped_process(bomb).startswith("LoadError"), "read_info does not refuse it"
        with pytest.raises((LoadError, ModelRefused), match="g4b-bigu8.gguf is corrupt or truncated"):
            runtime.fit_report("g4b-bigu8.gguf")
        with pytest.raises((LoadError, ModelRefused), match="g4b-bigu8.gguf is corrupt or truncated"):
            runtime.load_model("g4b-bigu8.gguf", save=False)
        assert runtime.models.current.name == TINY
    finally:
        bomb.unlink()


# -- round 2, N29: values that parse but cannot be built ----------------------------------
UNBUILDABLE_YAML = {
    "sexagesimal float past float's range": "temperature: 1" + ":0" * 2000 + ".5\n",
    "impossible date": "temperature: 9999-99-99\n",
    "5,000-digit int": "temperature: " + "9" * 5000 + "\n",
}


@pytest.mark.parametrize("case", sorted(UNBUILDABLE_YAML))
def test_yaml_values_that_cannot_be_built_are_refused_naming_the_file(tmp_path, models_root, case):
    text = UNBUILDABLE_YAML[case]
    with pytest.raises(YAMLRefused, match="cannot be read"):
        load_yaml(text)
    # settings.yaml: reported and ignored; the app starts (on main: a traceback, exit 1)
    (tmp_path / "settings.yaml").write_text("sampling:\n  " + text)
    settings, warnings = build_settings({"user_data_dir": str(tmp_path), "model_dir": str(models_root)})
    assert any("settings.yaml: holds a value that cannot be read" in w for w in warnings), warnings
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "odd.yaml").write_text(text)
    with pytest.raises(ParamsError, match="odd.yaml: holds a value that cannot be read"):
        PresetLibrary(PROJECT_ROOT / "presets", presets).load("odd")
    characters = tmp_path / "characters"
    characters.mkdir()
    (characters / "Odd.yaml").write_text("name: Odd\ncontext: hi\n" + text)
    with pytest.raises(CharacterError, match="Odd.yaml: holds a value that cannot be read"):
        CharacterLibrary(characters).load("Odd")


# -- round 2, N31: NaN and Infinity in a model ---------------------------------------------
@pytest.mark.parametrize("changes, named", [({"rms_norm_eps": float("nan")}, "NaN"),
                                            ({"rope_theta": float("inf")}, "Infinity"),
                                            ({"max_position_embeddings": 1e12}, "max_position_embeddings")])
def test_a_config_with_nan_infinity_or_absurd_positions_is_refused_at_preflight(runtime, models_root, changes, named):
    absurd_model(models_root, "cfg-odd", **changes)  # json.dumps writes NaN / Infinity as Python reads them
    try:
        with pytest.raises(ModelRefused, match=f"cfg-odd: config.json.*{named}"):
            runtime.load_model("cfg-odd", save=False)
        with pytest.raises(ModelRefused, match=f"cfg-odd: config.json.*{named}"):
            runtime.fit_report("cfg-odd")
        assert runtime.models.current.name == TINY
    finally:
        shutil.rmtree(models_root / "cfg-odd")


def test_nan_embeddings_are_an_error_in_the_apis_shape_not_plain_text(models_root, tmp_path):
    """Weights that compute NaN (a config that does is refused above): on main the vectors
    reached the JSON encoder and every embeddings route answered a plain-text 500."""
    import httpx
    from safetensors.torch import load_file, save_file

    from tests.conftest import free_port
    from webui.api.openai_api import APIServer
    from webui.runtime import build_runtime

    root = tmp_path / "models"
    shutil.copytree(models_root / TINY, root / "nan-weights")
    weights = root / "nan-weights" / "model.safetensors"
    tensors = load_file(weights)
    tensors["model.norm.weight"] = tensors["model.norm.weight"] * float("nan")
    save_file(tensors, weights, metadata={"format": "pt"})
    server = APIServer(build_runtime(make_settings(root, tmp_path / "ud", model="nan-weights")), port=free_port())
    url = server.start()
    try:
        for path, body, shape in (("v1/embeddings", {"model": "nan-weights", "input": "ships"}, "openai"),
                                  ("api/embed", {"model": "nan-weights", "input": "ships"}, "ollama"),
                                  ("api/embeddings", {"model": "nan-weights", "prompt": "ships"}, "ollama")):
            answer = httpx.post(f"{url.removesuffix('/v1')}/{path}", json=body, timeout=120)
            assert answer.status_code == 500 and answer.headers["content-type"].startswith("application/json"), \
                (path, answer.status_code, answer.text[:200])
            error = answer.json()["error"]
            message = error["message"] if shape == "openai" else error
            assert "not finite numbers" in message, (path, answer.text[:300])
        assert httpx.get(f"{url}/models", timeout=60).status_code == 200  # still serving
    finally:
        server.stop()
