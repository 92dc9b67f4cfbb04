"""XTC ("Exclude Top Choices"): sometimes take the most likely tokens out of the running."""

from __future__ import annotations


import torch
from transformers import LogitsProcessor

from webui.generation.samplers.checks import unit_interval


class XTCLogitsProcessor(LogitsProcessor):
    """XTC, "Exclude Top Choices".

    Reference: p-e-w's XTC sampler (text-generation-webui PR #6335), as in KoboldCpp and
    llama.cpp; Text Generation WebUI names `xtc_threshold` and `xtc_probability`.

    With chance `probability`, independently for each row and step: if at least two tokens
    have probability >= `threshold`, remove all of them except the least probable one.  The
    model's obvious continuations are then replaced by a still-plausible one, which breaks
    clichés while keeping the text coherent; tokens below the threshold are left alone.

    Ties: if several above-threshold tokens share the lowest probability they all survive
    (llama.cpp keeps just one of them, whichever its sort puts last; keeping all of them
    does not depend on sort order).  Only tokens with non-zero probability count, so a
    threshold of 0 cannot pick a -inf token as the survivor.

    Randomness: one uniform draw per row from `generator` (or torch's global RNG when it is
    None), so a seeded generator reproduces the same choices.  A CUDA generator is fine: the
    draw happens on the generator's device.

    Neutral values: ``probability == 0``; also ``threshold > 0.5``, because two tokens
    cannot both have more than half of the probability.
    """

    def __init__(self, threshold: float = 0.1, probability: float = 0.0,
                 generator: torch.Generator | None = None):
        self.threshold = unit_interval("threshold", threshold)
        self.probability = unit_interval("probability", probability)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"`generator` must be a torch.Generator or None, got {generator!r}")
        self.generator = generator

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = scores.clone()
        if self.probability == 0 or self.threshold > 0.5:
            # No draw either: an inactive step must not shift the RNG stream of later steps.
            return out
        device = self.generator.device if self.generator is not None else torch.device("cpu")
        roll = torch.rand(scores.shape[0], generator=self.generator, device=device)
        active = (roll < self.probability).to(scores.device)
        probs = torch.softmax(scores.float(), dim=-1)
        top = (probs >= self.threshold) & (probs > 0)
        active &= top.sum(dim=-1) >= 2
        # The least probable of the top choices, per row (1.0 where a row has none).
        floor = probs.masked_fill(~top, 1.0).amin(dim=-1, keepdim=True)
        # Strictly above the floor: the least probable top choice itself always survives.
        remove = top & (probs > floor) & active.unsqueeze(-1)
        return out.masked_fill_(remove, float("-inf"))
