"""Mirostat 2.0: steer the surprise of each sampled token towards a target, by feedback."""

from __future__ import annotations


import torch
from transformers import LogitsProcessor

from webui.generation.samplers.checks import finite_number


class Mirostat2LogitsProcessor(LogitsProcessor):
    """Mirostat version 2: keep the average surprise near `tau` bits.

    Reference: Sourya Basu et al., "Mirostat: A Neural Text Decoding Algorithm that Directly
    Controls Perplexity" (ICLR 2021); version 2 as in llama.cpp (`llama_sampler_mirostat_v2`)
    and Text Generation WebUI (`mirostat_mode=2`, `mirostat_tau`, `mirostat_eta`).

    State: a threshold ``mu`` per row, starting at ``2 * tau``.  Each step, per row:

    1. softmax the scores; drop tokens whose surprise ``-log2 p`` exceeds ``mu`` (the most
       likely token is always kept, so a row never empties);
    2. renormalise the survivors and *sample* one of them (`torch.multinomial` with
       `generator`, or torch's global RNG when it is None);
    3. ``mu -= eta * (observed_surprise - tau)``: if that token was more surprising than the
       target, truncate harder next step, otherwise loosen.

    The observed surprise is ``-log2`` of the chosen token's probability in the
    *renormalised* (truncated) distribution, as llama.cpp and Text Generation WebUI compute
    it, not in the full one.  So what converges to `tau` is the surprise of the distribution
    actually sampled from; truncation only ever raises probabilities, so this is at most the
    surprise under the full distribution.

    Because this step samples by itself, it returns scores with every token except the
    chosen one at -inf (the chosen one keeps its score): whatever picks the token afterwards
    (greedy or sampling) must pick it.  Put it last in the chain.

    One instance per request: ``mu`` carries over between calls, which is the point, so
    reusing an instance for a new request would start it from the old request's state.  The
    batch size is fixed by the first call.

    Neutral value: none -- mirostat replaces sampling; it is off by not being in the chain
    (Text Generation WebUI's ``mirostat_mode != 2``).  ``eta == 0`` freezes ``mu`` at
    ``2 * tau``.
    """

    def __init__(self, tau: float = 5.0, eta: float = 0.1, generator: torch.Generator | None = None):
        self.tau = finite_number("tau", tau, minimum=0.0)
        self.eta = finite_number("eta", eta, minimum=0.0)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"`generator` must be a torch.Generator or None, got {generator!r}")
        self.generator = generator
        self.mu: torch.Tensor | None = None  # [batch], float64 on the CPU; set by the first call
        self.last_surprise: torch.Tensor | None = None  # [batch], for inspection and tests

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        batch = scores.shape[0]
        if self.mu is None:
            self.mu = torch.full((batch,), 2.0 * self.tau, dtype=torch.float64)
        elif self.mu.shape[0] != batch:
            raise ValueError(f"Mirostat2LogitsProcessor: batch size changed from {self.mu.shape[0]} to "
                             f"{batch}; use a fresh instance per request")
        # Sample where the generator lives (a CPU generator with CUDA scores is allowed).
        # float32, not float64: some accelerators (MPS) have no float64.
        device = self.generator.device if self.generator is not None else scores.device
        probs = torch.softmax(scores.detach().to(device=device, dtype=torch.float32), dim=-1)
        mu = self.mu.to(device=device, dtype=torch.float32)
        keep = -torch.log2(probs) <= mu.unsqueeze(-1)
        # The top logit, not the top probability: near-equal logits can round to equal
        # probabilities, and the token the model ranks first is the one to keep.
        keep.scatter_(1, scores.detach().argmax(dim=-1, keepdim=True).to(device), True)
        truncated = probs * keep
        truncated = truncated / truncated.sum(dim=-1, keepdim=True)
        chosen = torch.multinomial(truncated, 1, generator=self.generator)
        surprise = -torch.log2(truncated.gather(1, chosen)).squeeze(-1)
        self.last_surprise = surprise.cpu().double()
        self.mu = self.mu - self.eta * (self.last_surprise - self.tau)
        # Everything but the chosen token goes to -inf; the chosen one keeps its score.
        chosen = chosen.to(scores.device)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, chosen, scores.gather(1, chosen))
