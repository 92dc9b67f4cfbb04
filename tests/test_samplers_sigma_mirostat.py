"""Top-nσ and Mirostat 2.0: hand-worked cases, properties, batches, RNG reproducibility."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from webui.generation.samplers.mirostat import Mirostat2LogitsProcessor
from webui.generation.samplers.top_n_sigma import TopNSigmaLogitsProcessor

FAST = settings(max_examples=60, deadline=None)
NEG_INF = float("-inf")
NO_IDS = torch.zeros(1, 1, dtype=torch.long)


def kept(out: torch.Tensor) -> list[bool]:
    return torch.isfinite(out[0]).tolist()


# ---------------------------------------------------------------- top-nσ


def test_top_n_sigma_hand_worked():
    # Logits 0..4: max 4, mean 2, population variance (4+1+0+1+4)/5 = 2, σ = √2 ≈ 1.414.
    scores = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]])
    # n = 1: cut at 4 - 1.414 = 2.586 -> keep 3 and 4.
    assert kept(TopNSigmaLogitsProcessor(1.0)(NO_IDS, scores)) == [False, False, False, True, True]
    # n = 2: cut at 4 - 2.828 = 1.172 -> keep 2, 3 and 4.
    assert kept(TopNSigmaLogitsProcessor(2.0)(NO_IDS, scores)) == [False, False, True, True, True]
    # -inf logits (banned earlier) do not count towards σ and stay removed: same cut.
    banned = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0, NEG_INF, NEG_INF]])
    out = TopNSigmaLogitsProcessor(1.0)(NO_IDS, banned)
    assert kept(out) == [False, False, False, True, True, False, False]
    assert torch.equal(out[0, 3:5], banned[0, 3:5])  # survivors keep their logits


def test_top_n_sigma_flat_row_keeps_everything():
    # σ = 0: the cut is the max itself, and every token ties with it.
    scores = torch.full((1, 5), 1.5)
    assert torch.equal(TopNSigmaLogitsProcessor(1.0)(NO_IDS, scores), scores)


@pytest.mark.parametrize("n", [0.0, -1.0, 0, float("inf")])
def test_top_n_sigma_neutral_values(n):
    scores = torch.randn(2, 50)
    assert torch.equal(TopNSigmaLogitsProcessor(n)(NO_IDS, scores), scores)


def test_top_n_sigma_rows_independent_input_not_mutated_half_precision():
    scores = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0], [4.0, 3.9, 3.8, -5.0, -6.0]])
    before = scores.clone()
    out = TopNSigmaLogitsProcessor(1.0)(NO_IDS, scores)
    assert torch.equal(scores, before)
    # Row 2: mean -0.06, σ ≈ 4.86 -> cut ≈ -0.86: the three close logits stay.
    assert torch.isfinite(out).tolist() == [[False, False, False, True, True], [True, True, True, False, False]]
    half = TopNSigmaLogitsProcessor(1.0)(NO_IDS, scores.half())
    assert half.dtype == torch.float16 and torch.equal(torch.isfinite(half), torch.isfinite(out))


@pytest.mark.parametrize("n", [float("nan"), "1", True, None])
def test_top_n_sigma_rejects_bad_n(n):
    with pytest.raises(ValueError, match="`n`"):
        TopNSigmaLogitsProcessor(n)


# Rounded to 3 decimals: no subnormal logits, whose scaling by 2**k would not be exact.
logit_rows = st.lists(st.floats(-30, 30).map(lambda x: round(x, 3)), min_size=2, max_size=40)


@FAST
@given(logit_rows, st.floats(0.01, 5.0))
def test_top_n_sigma_keeps_the_top_token(logits, n):
    scores = torch.tensor([logits])
    out = TopNSigmaLogitsProcessor(n)(NO_IDS, scores)
    assert torch.isfinite(out[0, scores[0].argmax()])
    finite = torch.isfinite(out)
    assert torch.equal(out[finite], scores[finite])


@FAST
@given(logit_rows, st.floats(0.01, 5.0), st.integers(-3, 3))
def test_top_n_sigma_is_exactly_invariant_to_power_of_two_temperatures(logits, n, exponent):
    # Dividing by 2**k is exact in binary floating point, and so is every step of the cut
    # (sums, the mean, σ, max - nσ all scale by 2**k), so the kept set must match exactly.
    scores = torch.tensor([logits])
    step = TopNSigmaLogitsProcessor(n)
    assert kept(step(NO_IDS, scores)) == kept(step(NO_IDS, scores / 2.0**exponent))


@FAST
@given(logit_rows, st.floats(0.01, 5.0), st.floats(0.1, 10.0))
def test_top_n_sigma_is_invariant_to_any_temperature(logits, n, temperature):
    values = torch.tensor(logits, dtype=torch.float64)
    cut = values.max() - n * values.std(correction=0)
    # Any temperature, up to rounding: skip rows with a logit right at the cut.
    assume(bool(((values - cut).abs() > 1e-3 * (1 + cut.abs())).all()))
    scores = torch.tensor([logits])
    step = TopNSigmaLogitsProcessor(n)
    assert kept(step(NO_IDS, scores)) == kept(step(NO_IDS, scores / temperature))


# ---------------------------------------------------------------- Mirostat 2.0


def zipf_logits(vocab: int = 1000, exponent: float = 1.0) -> torch.Tensor:
    # A fixed Zipf distribution, p(k) ∝ 1 / k**exponent: entropy ≈ 7.5 bits for 1000 tokens,
    # so targets of 3 and 5 bits are reachable by truncation.
    ranks = torch.arange(1, vocab + 1, dtype=torch.float64)
    return (-exponent * ranks.log()).float().unsqueeze(0)


@pytest.mark.parametrize("tau", [3.0, 5.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_mirostat_average_surprise_tracks_tau(tau, seed):
    mirostat = Mirostat2LogitsProcessor(tau, 0.1, torch.Generator().manual_seed(seed))
    scores = zipf_logits()
    surprises = []
    for _ in range(300):
        mirostat(NO_IDS, scores)
        surprises.append(float(mirostat.last_surprise[0]))
    assert abs(sum(surprises) / len(surprises) - tau) < 0.5


def test_mirostat_hand_worked_truncation_and_update():
    # p = 0.6, 0.3, 0.1: surprises 0.737, 1.737, 3.32 bits.
    scores = torch.tensor([[0.6, 0.3, 0.1]]).log()
    # tau 0.5 -> mu 1: only token 0 survives, renormalised to p = 1, surprise 0, and
    # mu becomes 1 - 0.1 * (0 - 0.5) = 1.05.
    mirostat = Mirostat2LogitsProcessor(0.5, 0.1)
    out = mirostat(NO_IDS, scores)
    assert kept(out) == [True, False, False] and out[0, 0] == scores[0, 0]
    assert mirostat.last_surprise.tolist() == [0.0]
    assert mirostat.mu.tolist() == pytest.approx([1.05])
    # tau 1.5 -> mu 3: tokens 0 and 1 survive, renormalised to 2/3 and 1/3; never token 2.
    generator = torch.Generator().manual_seed(0)
    picks = []
    for _ in range(600):
        mirostat = Mirostat2LogitsProcessor(1.5, 0.1, generator)
        picks.append(int(mirostat(NO_IDS, scores).argmax()))
        surprise = -math.log2(2 / 3) if picks[-1] == 0 else -math.log2(1 / 3)
        assert mirostat.last_surprise.tolist() == pytest.approx([surprise], rel=1e-5)
        assert mirostat.mu.tolist() == pytest.approx([3.0 - 0.1 * (surprise - 1.5)], rel=1e-5)
    assert 2 not in picks
    assert abs(picks.count(0) / len(picks) - 2 / 3) < 0.07  # binomial sd ~ 0.02


def test_mirostat_tau_zero_is_greedy_and_eta_zero_freezes_mu():
    scores = zipf_logits(50)
    greedy = Mirostat2LogitsProcessor(0.0, 0.1)
    frozen = Mirostat2LogitsProcessor(4.0, 0.0)
    for _ in range(20):
        assert kept(greedy(NO_IDS, scores)) == [True] + [False] * 49
        frozen(NO_IDS, scores)
        assert frozen.mu.tolist() == [8.0]


def test_mirostat_rows_keep_their_own_mu():
    # Row 0: one dominant token (always the only survivor, surprise 0); row 1: Zipf.
    peaked = torch.full((1, 1000), -50.0)
    peaked[0, 7] = 0.0
    scores = torch.cat([peaked, zipf_logits()])
    before = scores.clone()
    both = Mirostat2LogitsProcessor(3.0, 0.1, torch.Generator().manual_seed(0))
    alone = Mirostat2LogitsProcessor(3.0, 0.1)
    for _ in range(30):
        out = both(NO_IDS, scores)
        assert torch.isfinite(out).sum(dim=1).tolist() == [1, 1]
        assert out[0, 7] == 0.0
        alone(NO_IDS, peaked)
    assert torch.equal(scores, before)
    # Row 0 saw surprise 0 every step, so its mu grew by 0.1 * 3 per step, alone or batched.
    assert both.mu[0].item() == pytest.approx(alone.mu[0].item()) == pytest.approx(6.0 + 30 * 0.3)
    assert both.mu[1].item() != both.mu[0].item()
    with pytest.raises(ValueError, match="fresh instance"):
        both(NO_IDS, peaked)


def test_mirostat_seeded_generator_reproduces():
    scores = torch.cat([zipf_logits(), zipf_logits(exponent=1.2)])

    def run(seed: int) -> list[list[int]]:
        mirostat = Mirostat2LogitsProcessor(5.0, 0.1, torch.Generator().manual_seed(seed))
        return [mirostat(NO_IDS, scores).argmax(dim=1).tolist() for _ in range(40)]

    assert run(3) == run(3)
    assert run(3) != run(4)


@pytest.mark.parametrize("kwargs", [
    dict(tau=-1.0), dict(tau=float("nan")), dict(tau=True), dict(eta=-0.1), dict(eta=float("inf")),
    dict(generator="seed"),
])
def test_mirostat_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Mirostat2LogitsProcessor(**kwargs)


@FAST
@given(
    st.lists(st.one_of(st.floats(-20, 20), st.just(NEG_INF)), min_size=1, max_size=30),
    st.floats(0.0, 10.0), st.floats(0.0, 1.0), st.integers(0, 2**31),
)
def test_mirostat_always_picks_one_possible_token(logits, tau, eta, seed):
    if all(math.isinf(x) for x in logits):
        logits[0] = 0.0
    scores = torch.tensor([logits])
    mirostat = Mirostat2LogitsProcessor(tau, eta, torch.Generator().manual_seed(seed))
    probs = torch.softmax(scores[0].double(), dim=-1)
    for _ in range(3):
        mu = 2 * tau if mirostat.mu is None else mirostat.mu[0].item()
        out = mirostat(NO_IDS, scores)
        chosen = torch.isfinite(out[0])
        assert chosen.sum() == 1
        token = int(chosen.nonzero())
        assert out[0, token] == scores[0, token]  # a possible token, with its own logit
        # It survived the truncation: at most mu bits of surprise, or the top token.
        assert token == int(scores[0].argmax()) or -math.log2(probs[token]) <= mu + 1e-4
