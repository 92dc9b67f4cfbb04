"""Dynamic temperature, quadratic smoothing, top-a and tail-free sampling.

Hand-made logits with expected values worked out in the comments, then properties that
every step must keep (Hypothesis, few examples so the file stays fast).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from webui.generation.samplers.temperature import (
    DynamicTemperatureLogitsProcessor,
    QuadraticSmoothingLogitsProcessor,
)
from webui.generation.samplers.truncation import TailFreeLogitsProcessor, TopALogitsProcessor

NEG_INF = float("-inf")
NO_IDS = torch.zeros(1, 0, dtype=torch.long)


def run(processor, rows) -> torch.Tensor:
    scores = torch.tensor(rows, dtype=torch.float32)
    if scores.dim() == 1:
        scores = scores.unsqueeze(0)
    return processor(torch.zeros(scores.shape[0], 0, dtype=torch.long), scores)


def log_probs(*probs: float) -> list[float]:
    """Logits whose softmax is exactly `probs` (they sum to 1)."""
    return [math.log(p) for p in probs]


def kept(out: torch.Tensor) -> list[int]:
    return torch.nonzero(~torch.isneginf(out[0])).flatten().tolist()


# -- dynamic temperature ------------------------------------------------------------------


def test_dynatemp_uniform_distribution_gets_high():
    # Uniform: H = log(4) = max entropy, normalized 1 -> temperature = high = 1.5; 2 / 1.5.
    dyn = DynamicTemperatureLogitsProcessor(0.5, 1.5)
    assert dyn.temperatures(torch.full((1, 4), 2.0)).item() == pytest.approx(1.5)
    assert run(dyn, [2.0] * 4)[0].tolist() == pytest.approx([2 / 1.5] * 4)


def test_dynatemp_counts_only_tokens_still_in_play():
    # Two finite equal tokens: H = log 2 and n = 2 (not 4), so it is still "uniform" -> high.
    out = run(DynamicTemperatureLogitsProcessor(0.5, 1.5), [1.0, 1.0, NEG_INF, NEG_INF])
    assert out[0, :2].tolist() == pytest.approx([1 / 1.5, 1 / 1.5])
    assert torch.isneginf(out[0, 2:]).all()


def test_dynatemp_confident_model_gets_low():
    # p ~ [1, e^-100, e^-100]: H ~ 1e-41, so temperature ~ low.
    dyn = DynamicTemperatureLogitsProcessor(0.5, 1.5)
    assert dyn.temperatures(torch.tensor([[100.0, 0.0, 0.0]])).item() == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize(("exponent", "expected"), [(1.0, 1.622556), (2.0, 1.316344)])
def test_dynatemp_in_between(exponent, expected):
    # p = [0.75, 0.25]: H = 0.75*ln(4/3) + 0.25*ln 4 = 0.215762 + 0.346574 = 0.562335;
    # normalized = 0.562335 / ln 2 = 0.811278.  low 0, high 2:
    #   exponent 1 -> 2 * 0.811278 = 1.622556;  exponent 2 -> 2 * 0.658172 = 1.316344.
    dyn = DynamicTemperatureLogitsProcessor(0.0, 2.0, exponent)
    logits = log_probs(0.75, 0.25)
    assert dyn.temperatures(torch.tensor([logits])).item() == pytest.approx(expected, abs=1e-5)
    assert run(dyn, logits)[0].tolist() == pytest.approx([x / expected for x in logits], abs=1e-5)


def test_dynatemp_single_candidate_gets_low_and_zero_means_greedy():
    # One finite token: no uncertainty, temperature = low.
    assert run(DynamicTemperatureLogitsProcessor(0.5, 2.0), [3.0, NEG_INF]).tolist() == [[6.0, NEG_INF]]
    # low = 0 and a (near) certain model: temperature ~ 1e-41 -> greedy, only the best token stays.
    out = run(DynamicTemperatureLogitsProcessor(0.0, 2.0), [100.0, 0.0, 0.0])
    assert out.tolist() == [[100.0, NEG_INF, NEG_INF]]


def test_dynatemp_low_equal_high_is_plain_temperature():
    assert run(DynamicTemperatureLogitsProcessor(0.5, 0.5), [1.0, -3.0]).tolist() == [[2.0, -6.0]]


@pytest.mark.parametrize(
    ("args", "name"),
    [((-0.1, 1.0), "low"), ((1.0, 0.5), "high"), ((0.5, 1.0, 0.0), "exponent"),
     ((float("nan"), 1.0), "low"), ((0.5, float("inf")), "high"), ((True, 1.0), "low")],
)
def test_dynatemp_refuses_bad_arguments(args, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        DynamicTemperatureLogitsProcessor(*args)


# -- quadratic smoothing ------------------------------------------------------------------


def test_smoothing_quadratic():
    # m = 2, d = [0, -1, -2]:  2 - 1*d^2 = [2, 1, -2].
    assert run(QuadraticSmoothingLogitsProcessor(1.0), [2.0, 1.0, 0.0]).tolist() == [[2.0, 1.0, -2.0]]
    # factor 0.5: 2 - 0.5*d^2 = [2, 1.5, 0]; -inf stays -inf.
    out = run(QuadraticSmoothingLogitsProcessor(0.5), [2.0, 1.0, 0.0, NEG_INF])
    assert out.tolist() == [[2.0, 1.5, 0.0, NEG_INF]]


def test_smoothing_cubic_curve():
    # curve 2, factor 1: k = (3-2)/2 = 0.5, s = (2-1)/2 = 0.5;  x' = -0.5 d^2 + 0.5 d^3 + 2
    #   d = -1: -0.5 - 0.5 + 2 = 1;   d = -2: -2 - 4 + 2 = -4.
    assert run(QuadraticSmoothingLogitsProcessor(1.0, 2.0), [2.0, 1.0, 0.0]).tolist() == [[2.0, 1.0, -4.0]]


def test_smoothing_uses_each_rows_own_maximum():
    # Row 1's max is 10: d = [0, -1, -2] -> [10, 9, 6]; row 0 must not see that 10.
    out = run(QuadraticSmoothingLogitsProcessor(1.0), [[2.0, 1.0, 0.0], [10.0, 9.0, 8.0]])
    assert out.tolist() == [[2.0, 1.0, -2.0], [10.0, 9.0, 6.0]]


def test_smoothing_factor_zero_is_a_no_op_not_a_flat_distribution():
    # The bare formula would give [2, 2, 2] here.
    assert run(QuadraticSmoothingLogitsProcessor(0.0), [2.0, 1.0, 0.0]).tolist() == [[2.0, 1.0, 0.0]]


@pytest.mark.parametrize(
    ("args", "name"),
    [((-1.0,), "smoothing_factor"), ((1.0, 0.5), "smoothing_curve"), ((float("nan"),), "smoothing_factor")],
)
def test_smoothing_refuses_bad_arguments(args, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        QuadraticSmoothingLogitsProcessor(*args)


# -- top-a --------------------------------------------------------------------------------


def test_top_a_cutoff_is_top_a_times_max_squared():
    probs = log_probs(0.5, 0.3, 0.2)
    # top_a 1.0: cutoff 1.0 * 0.5^2 = 0.25 -> 0.5 and 0.3 stay, 0.2 goes.
    assert kept(run(TopALogitsProcessor(1.0), probs)) == [0, 1]
    # top_a 0.5: cutoff 0.125 -> all stay.
    assert kept(run(TopALogitsProcessor(0.5), probs)) == [0, 1, 2]
    # p = [0.1, 0.6, 0.3], top_a 0.5: cutoff 0.5 * 0.36 = 0.18 -> token 0 goes.
    out = run(TopALogitsProcessor(0.5), log_probs(0.1, 0.6, 0.3))
    assert kept(out) == [1, 2]
    assert out[0, 1:].tolist() == pytest.approx(log_probs(0.6, 0.3))  # survivors untouched


@pytest.mark.parametrize("value", [-0.1, 1.1, float("nan"), "0.5"])
def test_top_a_refuses_bad_values(value):
    with pytest.raises(ValueError, match="`top_a`"):
        TopALogitsProcessor(value)


# -- tail-free sampling -------------------------------------------------------------------


def test_tfs_four_tokens():
    # Sorted p = [0.5, 0.25, 0.15, 0.1]; first differences [-0.25, -0.1, -0.05];
    # |second differences| = [0.15, 0.05] -> normalised [0.75, 0.25] -> cdf [0.75, 1.0].
    # Sorted token 1 stays iff cdf[0] = 0.75 <= tfs; token 2 iff cdf[1] = 1 <= tfs; token 3
    # (the last) always goes.  Tokens are shuffled: ids by probability are 1, 3, 0, 2.
    logits = log_probs(0.15, 0.5, 0.1, 0.25)
    assert kept(run(TailFreeLogitsProcessor(0.8), logits)) == [1, 3]
    assert kept(run(TailFreeLogitsProcessor(0.7), logits)) == [1]


def test_tfs_finds_the_cliff():
    # Sorted p = [0.35, 0.3, 0.25, 0.06, 0.04]; differences [-0.05, -0.05, -0.19, -0.02];
    # |second differences| = [0, 0.14, 0.17] (total 0.31) -> cdf [0, 0.4516, 1].
    # tfs 0.5 keeps tokens 0, 1 (cdf[0] = 0) and 2 (cdf[1] = 0.45): everything before the
    # drop from 0.25 to 0.06.  (llama.cpp's convention would keep only tokens 0 and 1.)
    assert kept(run(TailFreeLogitsProcessor(0.5), log_probs(0.35, 0.3, 0.25, 0.06, 0.04))) == [0, 1, 2]


def test_tfs_leaves_flat_and_tiny_rows_alone():
    # Uniform (and straight-line) probabilities have no curvature: nothing to cut.
    assert kept(run(TailFreeLogitsProcessor(0.5), [1.0] * 5)) == [0, 1, 2, 3, 4]
    assert kept(run(TailFreeLogitsProcessor(0.5), log_probs(0.4, 0.3, 0.2, 0.1))) == [0, 1, 2, 3]
    # Two tokens have no second difference at all.
    assert kept(run(TailFreeLogitsProcessor(0.1), [3.0, 1.0])) == [0, 1]


@pytest.mark.parametrize("value", [-0.1, 1.5, float("inf")])
def test_tfs_refuses_bad_values(value):
    with pytest.raises(ValueError, match="`tfs`"):
        TailFreeLogitsProcessor(value)


# -- properties ---------------------------------------------------------------------------

PROPERTY = settings(max_examples=60, deadline=None)

logit = st.one_of(st.floats(-30, 30, allow_nan=False, width=32), st.just(NEG_INF))


@st.composite
def score_batches(draw) -> torch.Tensor:
    """[batch, vocab] logits, some -inf, with at least one finite logit per row."""
    batch = draw(st.integers(1, 3))
    vocab = draw(st.integers(1, 12))
    rows = [draw(st.lists(logit, min_size=vocab, max_size=vocab)) for _ in range(batch)]
    for row in rows:
        if all(math.isinf(x) for x in row):
            row[draw(st.integers(0, vocab - 1))] = draw(st.floats(-30, 30, width=32))
    return torch.tensor(rows, dtype=torch.float32)


truncators = st.one_of(
    st.builds(TopALogitsProcessor, st.floats(0, 1)),
    st.builds(TailFreeLogitsProcessor, st.floats(0, 1)),
)
reshapers = st.one_of(
    st.floats(0, 5).flatmap(lambda low: st.builds(
        DynamicTemperatureLogitsProcessor, st.just(low), st.floats(low, 5), st.floats(0.1, 10))),
    st.builds(QuadraticSmoothingLogitsProcessor, st.floats(0, 10), st.floats(1, 10)),
)
any_processor = st.one_of(truncators, reshapers)
neutral = [
    TopALogitsProcessor(0.0),
    TailFreeLogitsProcessor(1.0),
    DynamicTemperatureLogitsProcessor(1.0, 1.0, 3.0),
    QuadraticSmoothingLogitsProcessor(0.0, 4.0),
]


@PROPERTY
@given(truncators, score_batches())
def test_truncation_keeps_the_top_token_and_only_removes(processor, scores):
    out = processor(NO_IDS, scores)
    best = scores.argmax(dim=-1, keepdim=True)
    assert torch.equal(out.gather(1, best), scores.gather(1, best))
    assert torch.all((out == scores) | torch.isneginf(out))


@PROPERTY
@given(any_processor, score_batches())
def test_every_row_keeps_a_token_input_untouched_rows_independent(processor, scores):
    before = scores.clone()
    out = processor(NO_IDS, scores)
    assert torch.equal(scores, before)
    assert out.shape == scores.shape and out.dtype == scores.dtype
    assert not torch.isnan(out).any()
    assert (~torch.isneginf(out)).any(dim=-1).all()
    for i in range(scores.shape[0]):
        assert torch.equal(processor(NO_IDS, scores[i : i + 1]), out[i : i + 1])


@PROPERTY
@given(score_batches())
def test_neutral_values_are_no_ops(scores):
    for processor in neutral:
        assert torch.equal(processor(NO_IDS, scores), scores)


@PROPERTY
@given(st.floats(0, 5), st.floats(0, 5), st.floats(0.1, 10), score_batches())
def test_dynatemp_stays_between_low_and_high(a, b, exponent, scores):
    low, high = min(a, b), max(a, b)
    temperature = DynamicTemperatureLogitsProcessor(low, high, exponent).temperatures(scores)
    assert ((temperature >= low - 1e-6) & (temperature <= high + 1e-6)).all()


@PROPERTY
@given(st.floats(0.01, 10), st.floats(1, 3), score_batches())
def test_smoothing_keeps_the_order_and_the_top(factor, curve, scores):
    # For curve in [1, 3] both terms fall as d falls, so the ranking cannot change.
    out = QuadraticSmoothingLogitsProcessor(factor, curve)(NO_IDS, scores)
    top = scores.max(dim=-1, keepdim=True).values
    assert torch.equal(out.max(dim=-1, keepdim=True).values, top)
    for row_in, row_out in zip(scores, out, strict=True):
        finite = torch.isfinite(row_in)
        assert torch.isneginf(row_out[~finite]).all()
        order = torch.argsort(row_in[finite], stable=True)
        assert torch.all(row_out[finite][order].diff() >= 0)
