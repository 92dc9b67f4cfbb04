"""Lorebooks (world info): which entries go into a chat's prompt, and where.

Golden prompts: chat mode's script is plain text, so each test spells out the whole
prompt it expects; instruct mode uses the fallback ChatML template.  The engine's rules
follow SillyTavern's world info (webui/chat/lore.py).
"""

from __future__ import annotations

import copy
import json
import time

import pytest

from webui.chat.characters import Character, Persona
from webui.chat.chat_lore import AuthorsNote
from webui.chat.lore import LoreError, LoreSettings, Timed, activate
from webui.chat.lorebooks import LorebookLibrary, parse_world
from webui.chat.prompt import FALLBACK_TEMPLATE, ChatPrompt, ChatSetup
from webui.chat.roleplay import Roleplay
from webui.generation.request import prompt_ids

ANN = Character(name="Ann", context="{{char}} keeps the lighthouse.")
BO = Persona(name="Bo")
HEAD = "Ann keeps the lighthouse."


@pytest.fixture()
def tok(tokenizer):
    return copy.deepcopy(tokenizer)


def entry(uid: int, keys=(), content="", **fields) -> dict:
    """A world-info entry as SillyTavern writes it (defaults as its editor makes them)."""
    return {"uid": uid, "key": list(keys), "keysecondary": [], "comment": f"e{uid}", "content": content,
            "constant": False, "selective": True, "selectiveLogic": 0, "order": 100, "position": 0,
            "disable": False, "probability": 100, "useProbability": True, "depth": 4, **fields}


def world(*entries: dict) -> dict:
    return {"entries": {str(e["uid"]): e for e in entries}}


def play(*entries: dict, note: AuthorsNote | None = None, timed=None, seed="s", **settings) -> Roleplay:
    return Roleplay(tuple(parse_world("World", world(*entries))), LoreSettings(**settings), timed or {}, note,
                    seed=seed)


def chat(*texts: str) -> list[dict]:
    """Turns alternating user / assistant, starting with the user."""
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)]


def script(tok, roleplay, turns, mode="chat", room=10_000):
    prompt = ChatPrompt(ChatSetup(mode=mode, character=ANN, persona=BO, template=FALLBACK_TEMPLATE,
                                  roleplay=roleplay), turns)
    return prompt(tok, room).text, prompt


def chosen(roleplay: Roleplay, turns, count=len):
    found = activate(roleplay.entries, [t["content"] for t in turns], roleplay.settings, roleplay.timed, count,
                     roleplay.seed)
    return [a.entry.uid.rpartition("/")[2] for a in found.entries], found


# -- keys ------------------------------------------------------------------------------------
def test_a_key_in_the_last_message_puts_its_entry_before_the_character(tok):
    rp = play(entry(0, ["dragon"], "Dragons breathe fire."), entry(1, ["cat"], "Cats purr."))
    text, prompt = script(tok, rp, chat("Is there a Dragon near the category?"))
    # "dragon" matches whatever its case; "cat" is not a whole word in "category".
    assert text == f"Dragons breathe fire.\n\n{HEAD}\n\nBo: Is there a Dragon near the category?\nAnn:"
    assert [(p.kind, text[p.start:p.end]) for p in prompt.info.parts] == [("lore", "Dragons breathe fire.")]
    assert prompt.info.parts[0].tokens == len(prompt_ids(tok, "Dragons breathe fire."))


def test_regex_keys_flags_and_case_sensitivity(tok):
    rp = play(entry(0, ["/drag(on|oness)\\b/i"], "A dragoness."), entry(1, ["/^Ship$/m"], "Ships sail."),
              entry(2, ["Moon"], "The moon.", caseSensitive=True), entry(3, ["sea wall"], "The sea wall."))
    text, _ = script(tok, rp, chat("A DRAGONESS!\nship\nmoon over the sea wall"))
    assert text == f"A dragoness.\nThe sea wall.\n\n{HEAD}\n\nBo: A DRAGONESS!\nship\nmoon over the sea wall\nAnn:"


@pytest.mark.parametrize(("logic", "secondary", "fires"), [
    (0, ["night", "storm"], True),  # AND ANY: one of them
    (0, ["fog"], False),
    (3, ["night", "storm"], False),  # AND ALL
    (3, ["night", "rain"], True),
    (2, ["fog", "snow"], True),  # NOT ANY
    (2, ["fog", "night"], False),
    (1, ["night", "rain"], False),  # NOT ALL
    (1, ["night", "storm"], True),
])
def test_secondary_keys_and_their_logic(tok, logic, secondary, fires):
    rp = play(entry(0, ["lamp"], "The lamp is lit.", keysecondary=secondary, selectiveLogic=logic))
    text, _ = script(tok, rp, chat("The lamp at night in the rain"))
    lore = "The lamp is lit.\n\n" if fires else ""
    assert text == f"{lore}{HEAD}\n\nBo: The lamp at night in the rain\nAnn:"


def test_constant_and_disabled_entries_and_order_within_a_position(tok):
    rp = play(entry(0, [], "Always here.", constant=True, order=50),
              entry(1, ["lamp"], "Never here.", disable=True),
              entry(2, ["lamp"], "After, late.", position=1, order=90),
              entry(3, ["lamp"], "After, early.", position=1, order=10))
    text, _ = script(tok, rp, chat("The lamp"))
    # Lowest order first: the highest ends nearest the chat.
    assert text == f"Always here.\n\n{HEAD}\n\nAfter, early.\nAfter, late.\n\nBo: The lamp\nAnn:"


# -- scan depth and budget --------------------------------------------------------------------
def test_only_the_last_scan_depth_messages_are_scanned(tok):
    turns = chat("The lamp is out", "I see", "Light it", "Done")
    assert chosen(play(entry(0, ["lamp"], "L."), scan_depth=3), turns)[0] == []
    assert chosen(play(entry(0, ["lamp"], "L."), scan_depth=4), turns)[0] == ["0"]
    # An entry's own scan depth overrides the book's.
    assert chosen(play(entry(0, ["lamp"], "L.", scanDepth=4), scan_depth=1), turns)[0] == ["0"]
    text, _ = script(tok, play(entry(0, ["lamp"], "L."), scan_depth=2), turns)
    assert text == f"{HEAD}\n\nBo: The lamp is out\nAnn: I see\nBo: Light it\nAnn: Done\nAnn:"


def test_budget_overflow_leaves_out_the_lowest_orders_but_keeps_constants(tok):
    texts = {"high": "The high tower stands tall.", "mid": "The middle road runs east.",
             "low": "The lowly cellar is damp.", "const": "It is winter."}
    cost = {k: len(prompt_ids(tok, v)) for k, v in texts.items()}
    rp = play(entry(0, ["tower"], texts["high"], order=30), entry(1, ["tower"], texts["mid"], order=20),
              entry(2, ["tower"], texts["low"], order=10),
              entry(3, [], texts["const"], constant=True, order=1),
              budget=cost["const"] + cost["high"] + cost["mid"])
    text, prompt = script(tok, rp, chat("The tower"))
    assert text == f"It is winter.\nThe middle road runs east.\nThe high tower stands tall.\n\n{HEAD}\n\n" \
                   "Bo: The tower\nAnn:"
    assert [e.uid for e in prompt.woven.activation.over_budget] == ["World/2"]


# -- recursion ---------------------------------------------------------------------------------
def test_recursion_on_and_off_and_per_entry():
    castle = entry(0, ["castle"], "The castle belongs to the king.")
    king = entry(1, ["king"], "The king is old.")
    crown = entry(2, ["old"], "His crown is heavy.")
    turns = chat("Take me to the castle")
    assert chosen(play(castle, king, crown), turns)[0] == ["0", "1", "2"]
    assert chosen(play(castle, king, crown, recursive=False), turns)[0] == ["0"]
    assert chosen(play(castle, king, crown, max_recursion=1), turns)[0] == ["0", "1"]
    assert chosen(play(castle, {**king, "excludeRecursion": True}, crown), turns)[0] == ["0"]
    assert chosen(play({**castle, "preventRecursion": True}, king, crown), turns)[0] == ["0"]
    why = {a.entry.uid: a.why for a in chosen(play(castle, king), turns)[1].entries}
    assert why == {"World/0": "key 'castle'", "World/1": "recursion: key 'king'"}


# -- sticky, cooldown, probability --------------------------------------------------------------
def test_sticky_keeps_an_entry_in_for_n_messages():
    rp = play(entry(0, ["storm"], "A storm rages.", sticky=2))
    history = chat("A storm comes", "Batten down", "Done", "And now?", "Calm", "Good")
    names, found = chosen(rp, history[:1])
    assert names == ["0"] and found.timed["World/0"] == Timed(1, 2, 0)
    timed = found.timed
    for length, inside in ((2, True), (3, True), (4, False), (5, False)):
        names, found = chosen(play(entry(0, ["storm"], "A storm rages.", sticky=2), timed=timed), history[:length])
        assert (names == ["0"]) is inside, length
        assert found.entries[0].why == "sticky" if inside else not found.entries


def test_cooldown_keeps_an_entry_out_for_n_messages_after_it_went_in():
    timed = chosen(play(entry(0, ["bell"], "The bell rings.", cooldown=2)), chat("bell"))[1].timed
    for length, inside in ((2, False), (3, False), (4, True)):
        turns = chat(*(["bell"] * length))
        assert (chosen(play(entry(0, ["bell"], "x", cooldown=2), timed=timed), turns)[0] == ["0"]) is inside, length


def test_probability_rolls_from_the_seed():
    def fired(seed: str) -> list[int]:
        rp = play(entry(0, ["fog"], "Fog rolls in.", probability=50), seed=seed)
        return [n for n in range(1, 81) if chosen(rp, chat(*(["fog"] * n)))[0]]

    first = fired("chat-1")
    assert fired("chat-1") == first  # the same chat rolls the same
    assert fired("chat-2") != first
    assert 20 < len(first) < 60  # about half of 80
    never = play(entry(0, ["fog"], "x", probability=0))
    assert chosen(never, chat("fog"))[0] == []


# -- depth and the author's note ---------------------------------------------------------------
def test_an_entry_at_depth_goes_into_the_chat_in_its_role(tok):
    rp = play(entry(0, ["anchor"], "The anchor is rusty.", position=4, depth=1, role=1))
    turns = chat("Hi", "Hello", "Drop the anchor")
    text, prompt = script(tok, rp, turns, mode="instruct")
    assert text == ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
                    "<|im_start|>user\nThe anchor is rusty.<|im_end|>\n"
                    "<|im_start|>user\nDrop the anchor<|im_end|>\n<|im_start|>assistant\n")
    text, _ = script(tok, rp, turns)
    assert text == f"{HEAD}\n\nBo: Hi\nAnn: Hello\nThe anchor is rusty.\nBo: Drop the anchor\nAnn:"


def test_a_template_that_refuses_a_mid_chat_system_message_gets_it_joined_to_the_next(tok):
    strict = ("{% for m in messages %}{% if m['role'] == 'system' and not loop.first %}"
              "{{ raise_exception('no system here') }}{% endif %}[{{ m['role'] }}] {{ m['content'] }}\n"
              "{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}")
    rp = play(entry(0, ["anchor"], "The anchor is rusty.", position=4, depth=1))
    prompt = ChatPrompt(ChatSetup(character=ANN, persona=BO, template=strict, roleplay=rp),
                        chat("Hi", "Hello", "Drop the anchor"))
    assert prompt(tok, 10_000).text == ("[user] Hi\n[assistant] Hello\n[user] The anchor is rusty.\n\n"
                                        "Drop the anchor\n[assistant] ")


def test_the_authors_note_goes_in_at_its_depth_every_nth_user_message(tok):
    note = AuthorsNote(text="Keep {{char}} gloomy.", depth=0, frequency=2)
    rp = play(entry(0, ["gloom"], "Gloom is everywhere.", position=2), note=note)
    text, _ = script(tok, rp, chat("Hi"))
    assert text == f"{HEAD}\n\nBo: Hi\nAnn:"  # the first user message: not due
    text, prompt = script(tok, rp, chat("Hi", "Hello", "Such gloom"))
    assert text == f"{HEAD}\n\nBo: Hi\nAnn: Hello\nBo: Such gloom\nGloom is everywhere.\nKeep Ann gloomy.\nAnn:"
    assert [p.kind for p in prompt.info.parts] == ["lore", "note"]


# -- files ---------------------------------------------------------------------------------------
ST_BOOK = {
    "entries": {
        "0": {"uid": 0, "key": ["lighthouse", "/beac(on|ons)/i"], "keysecondary": [], "comment": "Light",
              "content": "The lighthouse has stood for a century.", "constant": False, "vectorized": False,
              "selective": True, "selectiveLogic": 0, "addMemo": True, "order": 100, "position": 0,
              "disable": False, "excludeRecursion": False, "preventRecursion": False, "delayUntilRecursion": False,
              "probability": 100, "useProbability": True, "depth": 4, "group": "", "groupOverride": False,
              "groupWeight": 100, "scanDepth": None, "caseSensitive": None, "matchWholeWords": None,
              "useGroupScoring": None, "automationId": "", "role": None, "sticky": 0, "cooldown": 0, "delay": 0,
              "displayIndex": 0, "characterFilter": {"isExclude": False, "names": [], "tags": []}},
        "1": {"uid": 1, "key": ["keeper"], "keysecondary": ["night"], "comment": "Keeper", "content": "Ann.",
              "constant": True, "selective": True, "selectiveLogic": 3, "order": 5, "position": 4, "depth": 2,
              "role": 2, "sticky": 3, "cooldown": 1, "someFutureField": {"x": [1, 2.5, "é"]}},
    },
    "name": "Coast", "extensions": {"note": "kept"},
}


def test_a_sillytavern_lorebook_round_trips_unchanged(tmp_path):
    library = LorebookLibrary(tmp_path / "lorebooks")
    raw = json.dumps(ST_BOOK, indent=2, ensure_ascii=False).encode("utf-8")
    name = library.import_bytes(raw, "Coast.json")
    assert name == "Coast" and library.names() == ["Coast"]
    assert library.export(name) == raw  # byte for byte
    entries = library.entries(name)
    assert [(e.uid, e.position, e.role, e.logic, e.constant) for e in entries] == [
        ("Coast/0", "before", "system", "and_any", False), ("Coast/1", "depth", "assistant", "and_all", True)]
    # Editing one entry changes only what was edited; every other field, known or not, stays.
    library.save_entry(name, "0", ["lighthouse", "tower"], "It has stood for a century.")
    edited = json.loads(library.export(name))
    expected = copy.deepcopy(ST_BOOK)
    expected["entries"]["0"].update({"key": ["lighthouse", "tower"], "content": "It has stood for a century.",
                                     "constant": False, "order": 100, "comment": ""})
    assert edited == expected


@pytest.mark.parametrize(("change", "named"), [
    ({"key": ["/(a+)+$/"]}, "World entry 0: the regex '/(a+)+$/' takes too long"),
    ({"key": ["/(unclosed/"]}, "World entry 0: the regex '/(unclosed/' does not compile"),
    ({"key": ["x" * 501]}, "World entry 0: a key is longer than 500 characters"),
    ({"key": ["/x/q"]}, "World entry 0: unknown regex flag 'q'"),
    ({"order": "high"}, "World entry 0: field 'order' has the wrong type"),
    ({"position": 9}, "World entry 0: field 'position' must be from 0 to 6"),
])
def test_a_hostile_or_broken_entry_is_refused_by_name(tmp_path, change, named):
    library = LorebookLibrary(tmp_path)
    started = time.monotonic()
    with pytest.raises(LoreError) as refused:
        library.import_bytes(json.dumps(world({**entry(0, ["a"], "x"), **change})).encode(), "World.json")
    assert named in str(refused.value)
    assert time.monotonic() - started < 5
    assert library.names() == []


def test_huge_or_deep_files_are_refused_before_parsing(tmp_path):
    library = LorebookLibrary(tmp_path)
    with pytest.raises(LoreError, match="larger than 20 MB"):
        library.import_bytes(b" " * (21 << 20), "big.json")
    with pytest.raises(LoreError, match="10,001 entries is more than the 10,000"):
        library.import_bytes(json.dumps(world(*(entry(i, ["k"], "c") for i in range(10_001)))).encode(), "many.json")
    with pytest.raises(LoreError, match="nested deeper"):
        library.import_bytes(b"[" * 5000 + b"]" * 5000, "deep.json")
    with pytest.raises(LoreError, match="not a SillyTavern lorebook"):
        library.import_bytes(b'{"name": "x"}', "odd.json")
    assert library.names() == []


def test_a_slow_regex_in_a_stored_file_cannot_hold_a_reply():
    """A file written by hand past the import check: each search is cut at its time limit."""
    from webui.chat.lore import Entry

    slow = Entry(uid="W/0", content="x", keys=("/(a+)+$/",))
    started = time.monotonic()
    assert activate([slow], ["a" * 5000 + "!"] * 2).entries == []
    assert time.monotonic() - started < 2
