"""Incremental decoding and stop strings, on a real SentencePiece tokenizer."""

from __future__ import annotations

from webui.generation.detok import IncrementalDecoder
from webui.generation.engine import fit_prompt
from webui.generation.stops import StopStringFilter

# Characters absent from the tokenizer's corpus are spelled as UTF-8 byte tokens, so
# one character spans several tokens: the incremental decoder must hold them back.
MIXED = "The keeper wrote: ж€ café 日本 🙂 and \u0915\u094d\u0937 at 12 o'clock.\nNew line."


def stream_decode(tokenizer, text: str) -> tuple[list[str], str]:
    """Decode `text`'s tokens one by one after a prompt; also return the true text."""
    prompt = tokenizer("Hello")["input_ids"]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    decoder = IncrementalDecoder(tokenizer, prompt_ids=prompt)
    pieces = [decoder.push(i) for i in ids]
    pieces.append(decoder.flush())
    whole = tokenizer.decode(prompt + ids, skip_special_tokens=True)
    expected = whole[len(tokenizer.decode(prompt, skip_special_tokens=True)) :]
    return pieces, expected


def test_byte_fallback_really_splits_characters(tokenizer):
    ids = tokenizer("ж", add_special_tokens=False)["input_ids"]
    assert len(ids) >= 2, "test premise: 'ж' must be spelled with byte tokens"


def test_incremental_decoding_round_trips_without_broken_characters(tokenizer):
    pieces, expected = stream_decode(tokenizer, MIXED)
    assert "".join(pieces) == expected == " " + MIXED
    assert all("\ufffd" not in piece for piece in pieces)
    assert sum(1 for p in pieces if p) > 10  # really incremental, not one blob at the end


def test_incremental_decoding_keeps_word_spaces(tokenizer):
    text = "the keeper climbed the stairs every evening"
    pieces, expected = stream_decode(tokenizer, text)
    assert "".join(pieces) == expected == " " + text


def test_decoder_windows_stay_small(tokenizer):
    """No O(n^2) re-decoding: each step decodes a short window, not the whole reply."""
    seen: list[int] = []

    class Spy:
        def __init__(self, inner):
            self.inner = inner

        def decode(self, ids, **kw):
            seen.append(len(ids))
            return self.inner.decode(ids, **kw)

    ids = tokenizer(MIXED * 20, add_special_tokens=False)["input_ids"]
    decoder = IncrementalDecoder(Spy(tokenizer))
    text = "".join(decoder.push(i) for i in ids) + decoder.flush()
    assert text == MIXED * 20
    assert max(seen) <= 12 < len(ids)


def feed_all(stops, pieces):
    out = [stops.feed(p) for p in pieces]
    out.append(stops.flush())
    return "".join(out)


def test_stop_string_split_across_pieces_is_found_and_hidden():
    stops = StopStringFilter(["STOP"])
    assert feed_all(stops, ["Hel", "lo S", "T", "OP and more", " text"]) == "Hello "
    assert stops.stopped


def test_partial_stop_is_released_when_ruled_out():
    stops = StopStringFilter(["</s>", "User:"])
    pieces = ["a <", "/x> Us", "e", "r said"]
    assert feed_all(stops, pieces) == "a </x> User said"
    assert not stops.stopped


def test_held_text_is_not_shown_early():
    stops = StopStringFilter(["\nUser:"])
    assert stops.feed("Hi there\nUs") == "Hi there"
    assert stops.feed("ually") == "\nUsually"


def test_earliest_of_several_stops_wins():
    stops = StopStringFilter(["world", "lo w"])
    assert feed_all(stops, ["hello world"]) == "hel"


def test_stop_strings_are_plain_text_never_code():
    payload = "]+__import__('os').system('id')+["
    stops = StopStringFilter([payload])
    assert feed_all(stops, ["x", payload[:5], payload[5:], "y"]) == "x"


def test_fit_prompt_drops_oldest_tokens_and_keeps_room_for_reply():
    ids = list(range(1000))
    kept, budget, dropped = fit_prompt(ids, max_new_tokens=100, context=512)
    assert kept == ids[-412:] and budget == 100 and dropped == 588
    kept, budget, dropped = fit_prompt(ids[:10], max_new_tokens=2000, context=512)
    assert kept == ids[:10] and budget == 502 and dropped == 0
