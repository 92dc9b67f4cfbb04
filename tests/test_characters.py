"""Characters, personas and Character Card V2/V3 import and export."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import pytest
from PIL import Image

from webui.chat.cards import CardError, png_text_chunks, read_card, write_png_card
from webui.chat.characters import (
    DEFAULT_CHARACTER,
    Character,
    CharacterError,
    CharacterLibrary,
    Persona,
    describe,
    substitute,
)
from webui.paths import NameRefused

V2_CARD = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Seraphina",
        "description": "{{char}} is a forest guardian who protects {{user}}.",
        "personality": "gentle, watchful",
        "scenario": "A glade at dusk.",
        "first_mes": "Welcome, {{user}}.",
        "mes_example": "<START>\n{{user}}: Who are you?\n{{char}}: A friend of the trees.",
        "alternate_greetings": ["Oh, {{user}}! You are awake.", "Shh, listen to the wind."],
        "creator_notes": "test card",
        "system_prompt": "",
        "post_history_instructions": "",
        "tags": ["fantasy"],
        "creator": "tests",
        "character_version": "1.0",
        "character_book": {"entries": [{"keys": ["glade"], "content": "A sacred place."}]},
        "extensions": {"depth_prompt": {"prompt": "Stay kind.", "depth": 4}, "x_unknown": [1, 2]},
    },
}
V3_CARD = {
    "spec": "chara_card_v3",
    "spec_version": "3.0",
    "x_top_level": "kept",
    "data": {
        **V2_CARD["data"],
        "name": "Seraphina V3",
        "nickname": "Sera",
        "group_only_greetings": ["Hello, everyone."],
        "assets": [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}],
        "creation_date": 1700000000,
    },
}


def png(width=32, height=48, color=(10, 20, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


def card_png(**chunks: dict) -> bytes:
    """A PNG carrying the given cards in tEXt chunks (key -> card)."""
    data = png()
    iend = data.rindex(b"IEND") - 4
    extra = b""
    for key, card in chunks.items():
        body = key.encode() + b"\0" + base64.b64encode(json.dumps(card).encode())
        extra += struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    return data[:iend] + extra + data[iend:]


@pytest.fixture()
def library(tmp_path):
    return CharacterLibrary(tmp_path / "characters")


def test_substitution_covers_the_placeholders_cards_use():
    assert substitute("{{char}} meets {{User}} and {{ CHAR }}; <BOT>/<USER>", "Ann", "Bo") == "Ann meets Bo and Ann; Ann/Bo"


def test_describe_includes_personality_scenario_and_persona():
    character = Character(name="Ann", context="{{char}} guards {{user}}.", personality="calm", scenario="A hill.")
    text = describe(character, Persona(name="Bo", description="A traveller."))
    assert text == "Ann guards Bo.\n\nAnn's personality: calm\n\nScenario: A hill.\n\nAbout Bo: A traveller."


def test_builtin_assistant_is_always_there(library):
    assert library.names() == [DEFAULT_CHARACTER]
    assert library.load(DEFAULT_CHARACTER).name == DEFAULT_CHARACTER


def test_save_load_delete(library):
    library.save(Character(name="Ann", context="A guard.", greeting="Halt!"))
    assert library.names() == [DEFAULT_CHARACTER, "Ann"]
    assert library.load("Ann").greeting == "Halt!"
    library.delete("Ann")
    assert library.names() == [DEFAULT_CHARACTER]


def test_text_generation_webui_yaml_loads_as_it_is(library):
    library.folder.mkdir(parents=True)
    (library.folder / "Tgw.yaml").write_text("name: Tgw\ngreeting: Hi there\ncontext: A helpful bot.\n")
    character = library.load("Tgw")
    assert (character.name, character.greeting, character.context) == ("Tgw", "Hi there", "A helpful bot.")


@pytest.mark.parametrize("text", [
    "- a list\n- at top level\n", "just a scalar", "name: [unclosed", "!!python/object:os.system {}",
    "a: &a [*a, *a]\nname: x\n", "name: X\nunknown_key: 1\n",
])
def test_broken_character_files_are_reported_not_fatal(library, text):
    library.folder.mkdir(parents=True)
    (library.folder / "Bad.yaml").write_text(text)
    with pytest.raises(CharacterError):
        library.load("Bad")
    assert "Bad" in library.names()  # still listed, so the user can fix or delete it


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../b", "x\0y", "", "a" * 300, ".bashrc", "x.py/.."])
def test_hostile_names_are_refused(library, name):
    with pytest.raises(NameRefused):
        library.load(name)
    with pytest.raises(NameRefused):
        library.save(Character(name="Ok"), file_name=name)
    with pytest.raises(NameRefused):
        library.delete(name)


def test_v2_json_card_round_trips_with_unknown_fields(library):
    name = library.import_card(json.dumps(V2_CARD).encode())
    character = library.load(name)
    assert character.name == "Seraphina" and character.greeting == "Welcome, {{user}}."
    assert character.alternate_greetings == V2_CARD["data"]["alternate_greetings"]
    assert character.greetings()[1:] == V2_CARD["data"]["alternate_greetings"]
    exported = json.loads(library.export_json(name))
    assert exported["spec"] == "chara_card_v2"
    for key, value in V2_CARD["data"].items():
        assert exported["data"][key] == value, key


def test_v3_png_card_round_trips_and_v3_is_preferred_over_v2(library):
    data = card_png(chara=V2_CARD, ccv3=V3_CARD)
    name = library.import_card(data)
    assert library.load(name).name == "Seraphina V3"
    assert library.picture(name) is not None
    out = library.export_png(name)
    texts = png_text_chunks(out)
    assert set(texts) >= {"chara", "ccv3"}
    v3 = json.loads(base64.b64decode(texts["ccv3"]))
    assert v3["spec"] == "chara_card_v3" and v3["x_top_level"] == "kept"
    for key, value in V3_CARD["data"].items():
        assert v3["data"][key] == value, key
    assert json.loads(base64.b64decode(texts["chara"]))["spec"] == "chara_card_v2"
    Image.open(io.BytesIO(out)).verify()  # still a valid picture
    again = library.import_card(out)  # and our export imports again
    assert again != name and library.load(again).context == library.load(name).context


def test_edits_survive_export(library):
    name = library.import_card(json.dumps(V3_CARD).encode())
    character = library.load(name).model_copy(update={"greeting": "Changed."})
    library.save(character, name)
    exported = json.loads(library.export_json(name))
    assert exported["data"]["first_mes"] == "Changed."
    assert exported["data"]["character_book"] == V3_CARD["data"]["character_book"]


def test_export_without_a_picture_makes_one(library):
    library.save(Character(name="Plain", context="x"))
    out = library.export_png("Plain")
    assert read_card(out)["data"]["name"] == "Plain"


def test_compressed_text_chunks_are_read():
    payload = base64.b64encode(json.dumps(V2_CARD).encode())
    body = b"chara\0\0" + zlib.compress(payload)
    data = png()
    iend = data.rindex(b"IEND") - 4
    chunk = struct.pack(">I", len(body)) + b"zTXt" + body + struct.pack(">I", zlib.crc32(b"zTXt" + body))
    assert read_card(data[:iend] + chunk + data[iend:])["data"]["name"] == "Seraphina"


def bomb_header(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge image (a decompression bomb's calling card)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))  # noqa: E731
    idat = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("data, message", [
    (png(), "no character card"),
    (png()[:40], "truncated"),
    (b"GIF89a....", "not valid JSON"),
    (b"[1, 2]", "not a JSON object"),
    (json.dumps({"spec": "chara_card_v2", "data": "x"}).encode(), "no 'data'"),
    (json.dumps({"spec": "chara_card_v2", "data": {"description": "no name"}}).encode(), "no name"),
    (json.dumps({"name": "x", "first_mes": 5}).encode(), "must be text"),
    (b" " * (21 << 20), "larger than"),
])
def test_bad_cards_are_refused_cleanly(library, data, message):
    with pytest.raises(CardError, match=message):
        library.import_card(data)
    assert library.names() == [DEFAULT_CHARACTER]


def test_a_decompression_bomb_picture_is_refused_before_decoding(library):
    bomb = bomb_header(60000, 60000)
    texts_body = b"chara\0" + base64.b64encode(json.dumps(V2_CARD).encode())
    iend = bomb.rindex(b"IEND") - 4
    chunk = struct.pack(">I", len(texts_body)) + b"tEXt" + texts_body + struct.pack(">I", zlib.crc32(b"tEXt" + texts_body))
    with pytest.raises(CardError, match="too large"):
        library.import_card(bomb[:iend] + chunk + bomb[iend:])
    assert library.names() == [DEFAULT_CHARACTER]


def test_png_writer_keeps_other_chunks():
    out = write_png_card(card_png(chara={"name": "old"}), {"name": "v2"}, {"name": "v3"})
    texts = png_text_chunks(out)
    assert json.loads(base64.b64decode(texts["chara"])) == {"name": "v2"}
    assert json.loads(base64.b64decode(texts["ccv3"])) == {"name": "v3"}
    assert Image.open(io.BytesIO(out)).size == (32, 48)
