"""DRY and XTC samplers: hand-worked cases, properties, batches, RNG reproducibility."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from webui.generation.samplers.dry import MAX_MATCH, DRYLogitsProcessor, repeat_lengths
from webui.generation.samplers.xtc import XTCLogitsProcessor

FAST = settings(max_examples=60, deadline=None)
NEG_INF = float("-inf")


def ids(*rows: list[int]) -> torch.LongTensor:
    return torch.tensor(rows, dtype=torch.long)


def penalties(dry: DRYLogitsProcessor, context: list[int], vocab: int = 12) -> list[float]:
    """The amount DRY takes off each token's logit for one row (zero logits in)."""
    out = dry(ids(context), torch.zeros(1, vocab))
    return (-out[0]).tolist()


# ---------------------------------------------------------------- DRY: hand-worked cases


def test_dry_penalises_the_token_that_continues_a_repeat():
    # Context 1 2 3 4 1 2 3: the tail [1, 2, 3] (L = 3) occurred before, followed by 4.
    # L - allowed_length = 1, so token 4 loses 0.8 * 1.75 ** 1 = 1.4; nothing else changes.
    dry = DRYLogitsProcessor(0.8, base=1.75, allowed_length=2)
    expected = [0.0] * 12
    expected[4] = 1.4
    assert penalties(dry, [1, 2, 3, 4, 1, 2, 3]) == pytest.approx(expected)


@pytest.mark.parametrize(("allowed", "penalty"), [(1, 0.8 * 1.75**2), (2, 0.8 * 1.75), (3, 0.8), (4, 0.0)])
def test_dry_allowed_length_sets_the_exponent(allowed, penalty):
    # The same L = 3 repeat: exponent 3 - allowed, and no penalty once L < allowed.
    dry = DRYLogitsProcessor(0.8, 1.75, allowed)
    assert penalties(dry, [1, 2, 3, 4, 1, 2, 3])[4] == pytest.approx(penalty)


def test_dry_breaker_in_the_middle_stops_the_match():
    # With 2 as a breaker, the tail can only match [3] (L = 1): below allowed_length 2 ...
    assert penalties(DRYLogitsProcessor(0.8, 1.75, 2, {2}), [1, 2, 3, 4, 1, 2, 3]) == [0.0] * 12
    # ... and with allowed_length 1 the penalty is 0.8 * 1.75 ** (1 - 1) = 0.8, not 0.8 * 1.75 ** 2.
    assert penalties(DRYLogitsProcessor(0.8, 1.75, 1, {2}), [1, 2, 3, 4, 1, 2, 3])[4] == pytest.approx(0.8)


def test_dry_breakers_are_never_penalised_and_never_end_a_match():
    # 1 2 was followed by breaker 9: repeating "1 2" may go on to 9 freely.
    assert penalties(DRYLogitsProcessor(1.0, 2.0, 1, {9}), [1, 2, 9, 1, 2]) == [0.0] * 12
    # A context that ends in a breaker starts afresh: no penalty at all.
    assert penalties(DRYLogitsProcessor(1.0, 2.0, 1, {9}), [1, 9, 5, 1, 9]) == [0.0] * 12


def test_dry_breaker_lists_use_their_last_token():
    # [[7, 2]] is one tokenised breaker string; its last token (2) is the breaker.
    dry = DRYLogitsProcessor(0.8, 1.75, 1, [[7, 2]])
    assert dry.sequence_breakers == frozenset({2})
    assert penalties(dry, [1, 2, 3, 4, 1, 2, 3])[4] == pytest.approx(0.8)


def test_dry_each_token_gets_its_longest_match():
    # Context 5 1 2 7 3 2 8 1 2, tail ends in 2:
    #   2 at index 2 (then 7): preceded by 1 = tail's 1, then 5 != 8  -> L = 2
    #   2 at index 5 (then 8): preceded by 3 != 1                     -> L = 1
    # base 2, allowed 1: token 7 loses 2 ** (2 - 1) = 2, token 8 loses 2 ** 0 = 1.
    got = penalties(DRYLogitsProcessor(1.0, 2.0, 1), [5, 1, 2, 7, 3, 2, 8, 1, 2])
    assert got[7] == pytest.approx(2.0) and got[8] == pytest.approx(1.0)
    assert sum(got) == pytest.approx(3.0)
    # Context 1 2 7 9 2 7 1 2: token 7 follows 2 twice, with L = 2 and L = 1; the longer counts.
    assert penalties(DRYLogitsProcessor(1.0, 2.0, 1), [1, 2, 7, 9, 2, 7, 1, 2])[7] == pytest.approx(2.0)


def test_dry_matches_may_overlap_the_tail():
    # 4 4 4 4: the 4 at index 2 is preceded by 4 4, matching the tail's 4 4 4 (L = 3).
    assert penalties(DRYLogitsProcessor(1.0, 3.0, 2), [4, 4, 4, 4])[4] == pytest.approx(3.0)


def test_dry_range_limits_the_context():
    context = [1, 2, 3, 4, 1, 2, 3]
    # Last 4 tokens (4 1 2 3): 3 never occurred before -> nothing.
    assert penalties(DRYLogitsProcessor(0.8, 1.75, 2, range_=4), context) == [0.0] * 12
    # Last 6 tokens (2 3 4 1 2 3): tail [2, 3] (L = 2) then 4 -> 0.8 * 1.75 ** 0.
    assert penalties(DRYLogitsProcessor(0.8, 1.75, 2, range_=6), context)[4] == pytest.approx(0.8)


def test_dry_match_length_is_capped():
    # 0..99 then 0..59: the tail 0..59 (60 tokens) matched, followed by 60; counted as 50.
    context = list(range(100)) + list(range(60))
    assert repeat_lengths(np.array(context), frozenset()) == {60: MAX_MATCH}
    got = penalties(DRYLogitsProcessor(1.0, 1.1, 2), context, vocab=100)
    assert got[60] == pytest.approx(1.1 ** (MAX_MATCH - 2))


def test_dry_neutral_batch_and_no_mutation():
    scores = torch.randn(2, 12)
    before = scores.clone()
    context = ids([1, 2, 3, 4, 1, 2, 3], [5, 6, 5, 6, 5, 6, 5])
    assert torch.equal(DRYLogitsProcessor(0.0)(context, scores), scores)
    out = DRYLogitsProcessor(0.8, 1.75, 2)(context, scores)
    assert torch.equal(scores, before)
    # Row by row alike: each row penalised only by its own context.
    for row in range(2):
        alone = DRYLogitsProcessor(0.8, 1.75, 2)(context[row:row + 1], scores[row:row + 1])
        assert torch.equal(out[row], alone[0])
    assert (out[0] != scores[0]).nonzero().flatten().tolist() == [4]
    assert (out[1] != scores[1]).nonzero().flatten().tolist() == [6]  # 5 6 5 6 5: L = 5 -> 6


def test_dry_keeps_logits_finite_even_with_huge_penalties():
    # 62 ones: token 1 continues a 50-token repeat, 60000 * 4 ** 49 is far beyond float16.
    dry = DRYLogitsProcessor(60000.0, 4.0, 1)
    scores = torch.zeros(2, 8, dtype=torch.float16)
    scores[1, 1] = NEG_INF
    out = dry(ids([1] * 62, [1] * 62), scores)
    assert torch.isfinite(out[0, 1]) and out[0, 1] < -60000  # penalised hard, still possible
    assert out[1, 1] == NEG_INF  # a banned token stays banned


@pytest.mark.parametrize("kwargs", [
    dict(multiplier=-0.1), dict(multiplier=float("nan")), dict(multiplier=True),
    dict(multiplier=1.0, base=0.5), dict(multiplier=1.0, base=float("inf")),
    dict(multiplier=1.0, allowed_length=0), dict(multiplier=1.0, allowed_length=2.5),
    dict(multiplier=1.0, sequence_breakers=["\n"]), dict(multiplier=1.0, sequence_breakers=[-1]),
    dict(multiplier=1.0, range_=-1),
])
def test_dry_rejects_bad_arguments(kwargs):
    name = next(key for key in reversed(kwargs) if key != "multiplier" or len(kwargs) == 1)
    with pytest.raises(ValueError, match=name):
        DRYLogitsProcessor(**kwargs)


# ---------------------------------------------------------------- DRY: properties


def brute_force_lengths(context: list[int], breakers: set[int]) -> dict[int, int]:
    """The definition, checked one earlier position and one length at a time."""
    n = len(context)
    best: dict[int, int] = {}
    if n < 2 or context[-1] in breakers:
        return best
    for end in range(n - 1):
        follower = context[end + 1]
        if follower in breakers:
            continue
        length = 0
        while (length < MAX_MATCH and end - length >= 0 and context[n - 1 - length] not in breakers
               and context[end - length] == context[n - 1 - length]):
            length += 1
        if length:
            best[follower] = max(best.get(follower, 0), length)
    return best


@FAST
@given(st.lists(st.integers(0, 4), min_size=1, max_size=80), st.sets(st.integers(0, 4), max_size=2))
def test_dry_matching_agrees_with_brute_force(context, breakers):
    assert repeat_lengths(np.array(context), frozenset(breakers)) == brute_force_lengths(context, breakers)


@FAST
@given(
    st.integers(3, 12), st.integers(1, 4),
    st.floats(0.05, 5.0), st.floats(1.0, 3.0),
)
def test_dry_penalty_grows_with_the_repeated_run(phrase_length, allowed, multiplier, base):
    # Phrase P = 10, 11, ...; context P, 99, P[:k]: the token that would continue the repeat
    # is P[k], and the repeat so far has length k.
    phrase = list(range(10, 10 + phrase_length))
    dry = DRYLogitsProcessor(multiplier, base, allowed)
    got = [penalties(dry, phrase + [99] + phrase[:k], vocab=100)[phrase[k]] for k in range(1, phrase_length)]
    for k, penalty in enumerate(got, start=1):
        expected = multiplier * base ** (k - allowed) if k >= allowed else 0.0
        assert penalty == pytest.approx(expected, rel=1e-5)
    assert all(a <= b for a, b in zip(got, got[1:], strict=False))


@FAST
@given(
    st.lists(st.integers(0, 5), min_size=1, max_size=60),
    st.lists(st.one_of(st.floats(-20, 20), st.just(NEG_INF)), min_size=6, max_size=6),
    st.floats(0.0, 10.0), st.integers(1, 3),
)
def test_dry_only_lowers_finite_logits_and_bans_nothing(context, logits, multiplier, allowed):
    scores = torch.tensor([logits])
    out = DRYLogitsProcessor(multiplier, 1.75, allowed)(ids(context), scores)
    assert torch.equal(torch.isfinite(out), torch.isfinite(scores))
    assert bool((out <= scores).all())


# ---------------------------------------------------------------- XTC


def logits_of(*probs: list[float]) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float64).log().float()


def test_xtc_removes_all_top_choices_but_the_least_likely():
    # p >= 0.1: 0.5, 0.3, 0.15 -> 0.5 and 0.3 go, 0.15 stays; 0.05 is below the threshold, stays.
    scores = logits_of([0.5, 0.3, 0.15, 0.05])
    out = XTCLogitsProcessor(threshold=0.1, probability=1.0)(ids([0]), scores)
    assert out[0, :2].tolist() == [NEG_INF, NEG_INF]
    assert torch.equal(out[0, 2:], scores[0, 2:])


def test_xtc_needs_two_top_choices():
    # Only 0.7 is >= 0.2: nothing to exclude.
    scores = logits_of([0.7, 0.15, 0.1, 0.05])
    assert torch.equal(XTCLogitsProcessor(0.2, 1.0)(ids([0]), scores), scores)


def test_xtc_keeps_tied_least_likely_top_choices():
    # 0.4 goes; the two tied 0.25s are both "the least likely top choice" and both stay.
    scores = logits_of([0.4, 0.25, 0.25, 0.1])
    out = XTCLogitsProcessor(0.2, 1.0)(ids([0]), scores)
    assert out[0, 0] == NEG_INF and torch.equal(out[0, 1:], scores[0, 1:])


def test_xtc_neutral_values_change_nothing_and_draw_nothing():
    scores = logits_of([0.5, 0.3, 0.15, 0.05], [0.4, 0.4, 0.1, 0.1])
    generator = torch.Generator().manual_seed(1)
    state = generator.get_state()
    for xtc in (XTCLogitsProcessor(0.1, 0.0, generator), XTCLogitsProcessor(0.51, 1.0, generator)):
        assert torch.equal(xtc(ids([0], [0]), scores), scores)
    assert torch.equal(generator.get_state(), state)


def test_xtc_rows_are_independent_and_input_is_not_mutated():
    scores = logits_of([0.5, 0.3, 0.15, 0.05], [0.85, 0.05, 0.05, 0.05])
    before = scores.clone()
    out = XTCLogitsProcessor(0.1, 1.0)(ids([0], [0]), scores)
    assert torch.equal(scores, before)
    assert torch.isinf(out[0]).tolist() == [True, True, False, False]
    assert torch.equal(out[1], scores[1])  # one top choice only: untouched


def test_xtc_applies_with_the_given_probability():
    scores = logits_of(*[[0.5, 0.3, 0.2]] * 4000)
    out = XTCLogitsProcessor(0.1, 0.3, torch.Generator().manual_seed(0))(ids(*[[0]] * 4000), scores)
    share = torch.isinf(out[:, 0]).float().mean().item()
    assert abs(share - 0.3) < 0.04  # binomial sd ~ 0.007


def test_xtc_seeded_generator_and_global_rng_reproduce():
    scores = logits_of(*[[0.5, 0.3, 0.2]] * 64)
    input_ids = ids(*[[0]] * 64)

    def run(seed: int) -> torch.Tensor:
        return XTCLogitsProcessor(0.1, 0.5, torch.Generator().manual_seed(seed))(input_ids, scores)

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))
    global_runs = []
    for _ in range(2):
        torch.manual_seed(3)
        global_runs.append(XTCLogitsProcessor(0.1, 0.5)(input_ids, scores))
    assert torch.equal(*global_runs)


@pytest.mark.parametrize("kwargs", [
    dict(threshold=-0.1), dict(threshold=1.5), dict(threshold=float("nan")),
    dict(probability=1.1), dict(probability=-0.5), dict(probability=True), dict(generator=42),
])
def test_xtc_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        XTCLogitsProcessor(**kwargs)


@FAST
@given(
    st.lists(st.one_of(st.floats(-10, 10), st.just(NEG_INF)), min_size=1, max_size=12),
    st.floats(0.0, 0.5),
)
def test_xtc_keeps_the_least_likely_top_choice_and_everything_below(logits, threshold):
    if all(math.isinf(x) for x in logits):
        logits[0] = 0.0
    scores = torch.tensor([logits])
    out = XTCLogitsProcessor(threshold, 1.0)(ids([0]), scores)
    probs = torch.softmax(scores, dim=-1)[0]
    kept = torch.isfinite(out[0])
    assert kept.any()  # never empties a row
    assert torch.equal(out[0][kept], scores[0][kept])  # survivors keep their logits
    top = (probs >= threshold) & (probs > 0)
    assert bool(kept[~top & torch.isfinite(scores[0])].all())  # below the threshold: untouched
    if top.sum() >= 2:
        # Exactly the least likely top choice(s) survive among the top.
        assert torch.equal(kept & top, top & (probs == probs[top].min()))
    else:
        assert torch.equal(out, scores)
