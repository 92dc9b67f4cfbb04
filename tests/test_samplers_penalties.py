"""Repetition, presence and frequency penalties, logit bias and token bans.

Hand-made logits with expected values worked out in the comments, then properties that
every step must keep (Hypothesis, few examples so the file stays fast).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import RepetitionPenaltyLogitsProcessor as TransformersRepetitionPenalty

from webui.generation.samplers.penalties import (
    BanTokensLogitsProcessor,
    LogitBiasLogitsProcessor,
    PresenceFrequencyPenaltyLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    ids_in_vocab,
    token_counts,
)

NEG_INF = float("-inf")


def run(processor, context, rows) -> torch.Tensor:
    scores = torch.tensor(rows, dtype=torch.float32)
    if scores.dim() == 1:
        scores = scores.unsqueeze(0)
    input_ids = torch.tensor(context, dtype=torch.long).reshape(scores.shape[0], -1)
    return processor(input_ids, scores)


# -- repetition penalty -------------------------------------------------------------------


def test_repetition_penalty_divides_positive_and_multiplies_negative():
    # Context [0, 1, 0, 3], penalty 2: token 0: 2/2 = 1, token 1: -2*2 = -4, token 3: 0.5/2 = 0.25;
    # token 2 is not in the context and keeps 1.
    out = run(RepetitionPenaltyLogitsProcessor(2.0), [0, 1, 0, 3], [2.0, -2.0, 1.0, 0.5])
    assert out.tolist() == [[1.0, -4.0, 1.0, 0.25]]


def test_repetition_penalty_range_ignores_older_tokens():
    # range 2: only the last two tokens [0, 3] count; token 1 (older) keeps -2.
    out = run(RepetitionPenaltyLogitsProcessor(2.0, range_=2), [0, 1, 0, 3], [2.0, -2.0, 1.0, 0.5])
    assert out.tolist() == [[1.0, -2.0, 1.0, 0.25]]


def test_repetition_penalty_ignores_context_ids_outside_the_vocabulary():
    # -100 (a padding label) and 7 (beyond a 4-token vocabulary) are skipped, not indexed.
    out = run(RepetitionPenaltyLogitsProcessor(2.0), [-100, 7, 2], [2.0, 2.0, 2.0, 2.0])
    assert out.tolist() == [[2.0, 2.0, 1.0, 2.0]]


@pytest.mark.parametrize(
    ("args", "name"),
    [((0.0,), "penalty"), ((-1.0,), "penalty"), ((float("nan"),), "penalty"), ((1.2, -1), "range_"),
     ((1.2, 1.5), "range_"), ((True,), "penalty")],
)
def test_repetition_penalty_refuses_bad_arguments(args, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        RepetitionPenaltyLogitsProcessor(*args)


# -- presence / frequency -----------------------------------------------------------------


def test_presence_and_frequency_penalties_use_counts():
    # Context [1, 1, 1, 2]: counts token 1 = 3, token 2 = 1.  presence 0.5, frequency 0.1:
    #   token 1: -(0.5 + 3*0.1) = -0.8;  token 2: -(0.5 + 0.1) = -0.6;  tokens 0, 3: 0.
    out = run(PresenceFrequencyPenaltyLogitsProcessor(0.5, 0.1), [1, 1, 1, 2], [0.0] * 4)
    assert out[0].tolist() == pytest.approx([0.0, -0.8, -0.6, 0.0])
    # range 1: only the last token (2) counts.
    out = run(PresenceFrequencyPenaltyLogitsProcessor(0.5, 0.1, range_=1), [1, 1, 1, 2], [0.0] * 4)
    assert out[0].tolist() == pytest.approx([0.0, 0.0, -0.6, 0.0])


def test_negative_penalties_encourage_repetition():
    # presence -1, frequency -0.5, token 1 seen twice: 0 + 1 + 2*0.5 = 2.
    out = run(PresenceFrequencyPenaltyLogitsProcessor(-1.0, -0.5), [1, 1], [0.0, 0.0, NEG_INF])
    assert out.tolist() == [[0.0, 2.0, NEG_INF]]


def test_penalties_never_push_a_token_to_infinity():
    # fp16 tops out at 65504; a big negative penalty must not turn a logit into +inf.
    scores = torch.tensor([[65000.0, 0.0]], dtype=torch.float16)
    out = PresenceFrequencyPenaltyLogitsProcessor(-2.0, -1000.0)(torch.tensor([[0, 0]]), scores)
    assert torch.isfinite(out).all()


def test_token_counts():
    counts = token_counts(torch.tensor([[1, 1, 3, -1], [0, 0, 0, 0]]), vocab_size=4, range_=0)
    assert counts.tolist() == [[0, 2, 0, 1], [4, 0, 0, 0]]


@pytest.mark.parametrize(
    ("args", "name"),
    [((float("inf"), 0.0), "presence_penalty"), ((0.0, float("nan")), "frequency_penalty"),
     ((0.1, 0.1, -5), "range_")],
)
def test_presence_frequency_refuse_bad_arguments(args, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        PresenceFrequencyPenaltyLogitsProcessor(*args)


# -- logit bias ---------------------------------------------------------------------------


def test_logit_bias_adds_to_given_ids():
    # [1, 1, 1, -inf] + {0: +5, 2: -1.5, 3: +100} = [6, 1, -0.5, -inf]: removed stays removed.
    out = run(LogitBiasLogitsProcessor({0: 5.0, 2: -1.5, 3: 100.0}), [], [[1.0, 1.0, 1.0, NEG_INF]] * 2)
    assert out.tolist() == [[6.0, 1.0, -0.5, NEG_INF]] * 2


def test_logit_bias_refuses_ids_outside_the_vocabulary():
    with pytest.raises(ValueError, match="token id 3 "):
        run(LogitBiasLogitsProcessor({3: 1.0}), [], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="token id -1 "):
        LogitBiasLogitsProcessor({-1: 1.0})


@pytest.mark.parametrize("bias", [{0: float("nan")}, {0: float("inf")}, {"0": 1.0}, {True: 1.0}, [(0, 1.0)]])
def test_logit_bias_refuses_bad_entries(bias):
    with pytest.raises(ValueError):
        LogitBiasLogitsProcessor(bias)


# -- bans ---------------------------------------------------------------------------------


def test_ban_removes_tokens():
    out = run(BanTokensLogitsProcessor([1, 1, 3]), [], [0.0, 5.0, 1.0, 2.0])
    assert out.tolist() == [[0.0, NEG_INF, 1.0, NEG_INF]]


def test_ban_never_empties_a_row():
    # Row 0: banning every token leaves its best one (id 1, logit 5).
    # Row 1: ids 0 and 2 are the only candidates left; banning both leaves id 2 (logit 3).
    # Row 2: still has id 1 after the ban, so nothing comes back.
    rows = [[0.0, 5.0, 1.0], [2.0, NEG_INF, 3.0], [2.0, 1.0, 3.0]]
    out = run(BanTokensLogitsProcessor([0, 1, 2]), [], rows[:2])
    assert out.tolist() == [[NEG_INF, 5.0, NEG_INF], [NEG_INF, NEG_INF, 3.0]]
    out = run(BanTokensLogitsProcessor([0, 2]), [], rows)
    assert out.tolist() == [[NEG_INF, 5.0, NEG_INF], [NEG_INF, NEG_INF, 3.0], [NEG_INF, 1.0, NEG_INF]]


def test_ban_refuses_ids_outside_the_vocabulary():
    with pytest.raises(ValueError, match="token id 3 "):
        run(BanTokensLogitsProcessor([3]), [], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="token id -1 "):
        BanTokensLogitsProcessor([-1])
    with pytest.raises(ValueError):
        BanTokensLogitsProcessor("12")


def test_ids_in_vocab():
    ids_in_vocab([0, 9], 10)
    ids_in_vocab(torch.tensor([[0, 9]]), 10)
    for bad in ([-1], [10], [True], [1.0], torch.tensor([10]), torch.tensor([0.0])):
        with pytest.raises(ValueError):
            ids_in_vocab(bad, 10)
    with pytest.raises(ValueError, match="token id -1 "):
        ids_in_vocab([-1], 10)
    with pytest.raises(ValueError, match="vocab_size"):
        ids_in_vocab([0], 0)


# -- properties ---------------------------------------------------------------------------

PROPERTY = settings(max_examples=60, deadline=None)
VOCAB = 8

logit = st.one_of(st.floats(-30, 30, allow_nan=False, width=32), st.just(NEG_INF))


@st.composite
def cases(draw) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids [batch, seq], scores [batch, VOCAB]); every row has a finite logit."""
    batch = draw(st.integers(1, 3))
    seq = draw(st.integers(0, 10))
    ids = [draw(st.lists(st.integers(0, VOCAB - 1), min_size=seq, max_size=seq)) for _ in range(batch)]
    rows = [draw(st.lists(logit, min_size=VOCAB, max_size=VOCAB)) for _ in range(batch)]
    for row in rows:
        if all(math.isinf(x) for x in row):
            row[draw(st.integers(0, VOCAB - 1))] = 0.0
    return torch.tensor(ids, dtype=torch.long).reshape(batch, seq), torch.tensor(rows)


ranges = st.integers(0, 12)
penalties = st.one_of(
    st.builds(RepetitionPenaltyLogitsProcessor, st.floats(0.1, 3), ranges),
    st.builds(PresenceFrequencyPenaltyLogitsProcessor, st.floats(-2, 2), st.floats(-2, 2), ranges),
    st.builds(LogitBiasLogitsProcessor, st.dictionaries(st.integers(0, VOCAB - 1), st.floats(-100, 100))),
)
any_processor = st.one_of(penalties, st.builds(BanTokensLogitsProcessor, st.lists(st.integers(0, VOCAB - 1))))
neutral = [
    RepetitionPenaltyLogitsProcessor(1.0, 5),
    PresenceFrequencyPenaltyLogitsProcessor(0.0, 0.0, 5),
    LogitBiasLogitsProcessor({}),
    BanTokensLogitsProcessor([]),
]


@PROPERTY
@given(any_processor, cases())
def test_every_row_keeps_a_token_input_untouched_rows_independent(processor, case):
    input_ids, scores = case
    before = scores.clone()
    out = processor(input_ids, scores)
    assert torch.equal(scores, before)
    assert out.shape == scores.shape
    assert not torch.isnan(out).any()
    assert (~torch.isneginf(out)).any(dim=-1).all()
    for i in range(scores.shape[0]):
        assert torch.equal(processor(input_ids[i : i + 1], scores[i : i + 1]), out[i : i + 1])


@PROPERTY
@given(penalties, cases())
def test_penalties_and_bias_never_remove_or_revive(processor, case):
    input_ids, scores = case
    out = processor(input_ids, scores)
    assert torch.equal(torch.isneginf(out), torch.isneginf(scores))
    assert torch.isfinite(out[torch.isfinite(scores)]).all()


@PROPERTY
@given(cases())
def test_neutral_values_are_no_ops(case):
    input_ids, scores = case
    for processor in neutral:
        assert torch.equal(processor(input_ids, scores), scores)


@PROPERTY
@given(st.floats(0.1, 3), cases())
def test_repetition_penalty_matches_transformers_over_the_whole_context(penalty, case):
    input_ids, scores = case
    ours = RepetitionPenaltyLogitsProcessor(penalty)(input_ids, scores)
    # A range at least as long as the context is the whole context too.
    assert torch.equal(ours, RepetitionPenaltyLogitsProcessor(penalty, input_ids.shape[1] + 1)(input_ids, scores))
    if input_ids.shape[1] > 0:  # transformers cannot gather from an empty context
        theirs = TransformersRepetitionPenalty(penalty)(input_ids, scores.clone())
        assert torch.equal(ours, theirs)
