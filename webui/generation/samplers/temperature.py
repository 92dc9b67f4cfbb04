"""Temperature-family steps that reshape the distribution without cutting tokens off.

* `DynamicTemperatureLogitsProcessor`: a temperature that follows the model's uncertainty.
* `QuadraticSmoothingLogitsProcessor`: Text Generation WebUI's quadratic/cubic "smoothing".

Both work row by row, so each row of a batch gets its own temperature or its own maximum.
"""

from __future__ import annotations


import torch
from transformers import LogitsProcessor

from webui.generation.samplers.checks import finite_number

# Below this the temperature is treated as 0, i.e. greedy: dividing by something this small
# would push ordinary logits towards the float range's edge, where +inf turns softmax into NaN.
GREEDY_TEMPERATURE = 1e-6


class DynamicTemperatureLogitsProcessor(LogitsProcessor):
    """Entropy-based dynamic temperature ("dynatemp").

    Reference: KoboldCpp's / llama.cpp's dynatemp (the `temp_ext` sampler) as exposed by Text
    Generation WebUI (`dynatemp_low`, `dynatemp_high`, `dynatemp_exponent`).

    Per row, with ``p = softmax(scores)`` and ``n`` the number of tokens whose logit is not
    -inf (the candidates still in play)::

        normalized_entropy = H(p) / log(n)                      # in [0, 1]
        temperature = low + (high - low) * normalized_entropy ** exponent
        scores = scores / temperature

    A confident model (low entropy) is sampled near `low`, an unsure one (flat
    distribution) near `high`.  A row with a single candidate has no uncertainty and gets
    `low`.  A temperature of (nearly) 0 means greedy: only the row's best token is kept.

    Neutral value: ``low == high`` makes it a plain temperature of `low` (a no-op when both
    are 1.0); the chain builder uses this class only when ``low != high``.
    """

    def __init__(self, low: float, high: float, exponent: float = 1.0):
        low = finite_number("low", low)
        high = finite_number("high", high)
        exponent = finite_number("exponent", exponent)
        if low < 0:
            raise ValueError(f"`low` must be >= 0, got {low}")
        if high < low:
            raise ValueError(f"`high` must be >= `low` ({low}), got {high}")
        if exponent <= 0:
            raise ValueError(f"`exponent` must be > 0, got {exponent}")
        self.low = low
        self.high = high
        self.exponent = exponent

    def temperatures(self, scores: torch.FloatTensor) -> torch.FloatTensor:
        """The temperature each row gets, shape [batch, 1] (float32)."""
        logits = scores.float()
        alive = ~torch.isneginf(logits)
        n_alive = alive.sum(dim=-1, keepdim=True)
        log_probs = torch.log_softmax(logits, dim=-1)
        # -inf tokens have p = 0 and contribute nothing; masking also avoids 0 * -inf = NaN
        # (and keeps an all -inf row, where softmax is NaN, at entropy 0).
        plogp = torch.where(alive, log_probs.exp() * log_probs, torch.zeros_like(log_probs))
        entropy = -plogp.sum(dim=-1, keepdim=True)
        # log(1) = 0: a lone candidate would divide by zero; it is certain, so its entropy is 0.
        max_entropy = torch.log(n_alive.clamp(min=2).float())
        normalized = torch.where(n_alive > 1, entropy / max_entropy, torch.zeros_like(entropy))
        # Rounding can land a hair outside [0, 1]; clamp so the temperature stays in [low, high].
        normalized = normalized.clamp(0.0, 1.0)
        return self.low + (self.high - self.low) * normalized.pow(self.exponent)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        temperature = self.temperatures(scores)
        greedy_rows = temperature < GREEDY_TEMPERATURE
        # Clamp only so the division below is harmless in rows that take the greedy branch.
        scaled = scores / temperature.clamp(min=GREEDY_TEMPERATURE).to(scores.dtype)
        # Always built, never branched on: asking `greedy_rows.any()` would stall a GPU each step.
        best = scores.argmax(dim=-1, keepdim=True)
        keep = torch.zeros_like(scores, dtype=torch.bool).scatter(1, best, True)
        greedy = scores.masked_fill(~keep, float("-inf"))
        return torch.where(greedy_rows, greedy, scaled)


class QuadraticSmoothingLogitsProcessor(LogitsProcessor):
    """Quadratic ("smoothing") sampling, with the optional cubic curve.

    Reference: Text Generation WebUI, `QuadraticSamplingLogitsWarper` in
    modules/sampler_hijack.py (`smoothing_factor`, `smoothing_curve`).

    Per row, with ``m`` the row's maximum logit and ``d = x - m`` (always <= 0)::

        k = smoothing_factor * (3 - smoothing_curve) / 2
        s = smoothing_factor * (smoothing_curve - 1) / 2
        x' = -(k * d**2) + s * d**3 + m

    With ``smoothing_curve == 1`` this is ``x' = m - smoothing_factor * d**2``: tokens close
    to the top are pulled together, the tail is pushed down quadratically.  A larger curve
    moves weight to the cubic term, punishing the tail harder.  The top token keeps its
    logit, -inf stays -inf.

    Differences from the reference: the maximum is taken per row (the reference uses the
    maximum of the whole batch, which is the same for batch size 1).

    Neutral value: ``smoothing_factor == 0`` returns the scores unchanged.  (The formula
    itself would *not* be neutral there: every finite logit would collapse onto ``m``, a
    uniform distribution.  Text Generation WebUI avoids that by leaving the step out at 0;
    we do the same inside the class.)
    """

    def __init__(self, smoothing_factor: float, smoothing_curve: float = 1.0):
        smoothing_factor = finite_number("smoothing_factor", smoothing_factor)
        smoothing_curve = finite_number("smoothing_curve", smoothing_curve)
        if smoothing_factor < 0:
            raise ValueError(f"`smoothing_factor` must be >= 0, got {smoothing_factor}")
        # Below 1 the cubic term turns positive for d < 0 and far-tail tokens would end up
        # *above* the top one; Text Generation WebUI's slider starts at 1 for that reason.
        if smoothing_curve < 1:
            raise ValueError(f"`smoothing_curve` must be >= 1, got {smoothing_curve}")
        self.smoothing_factor = smoothing_factor
        self.smoothing_curve = smoothing_curve

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.smoothing_factor == 0:
            return scores.clone()
        # float32 so d**3 cannot overflow a half-precision tensor midway.
        logits = scores.float()
        top = logits.max(dim=-1, keepdim=True).values
        d = logits - top
        k = self.smoothing_factor * (3 - self.smoothing_curve) / 2
        s = self.smoothing_factor * (self.smoothing_curve - 1) / 2
        smoothed = -(k * d.square()) + s * d.pow(3) + top
        # -inf - (-inf) is NaN, so removed tokens (and all -inf rows) are passed through as they are.
        return torch.where(torch.isneginf(logits), logits, smoothed).to(scores.dtype)
