"""The grammar step: only tokens that keep the reply inside the grammar may be chosen.

Each request with a grammar_string or json_schema gets its own `GrammarState` (an
llguidance matcher, github.com/guidance-ai/llguidance), advanced by the engine with
every token it accepts.  `GrammarLogitsProcessor` is the chain's step: it sets every
token the grammar forbids to -inf.  It runs first (webui/generation/chain.py), on the
raw logits, so that temperature, top-p, min-p and the rest shape the distribution over
the allowed tokens only: truncating first and masking after could leave no token at
all.  The end-of-text tokens are allowed only when the grammar accepts what was
written, so a reply ends exactly when it is complete.

Computing the allowed set is llguidance's job (Rust, tens of microseconds per token);
here it is written straight into a preallocated buffer and unpacked with numpy, so a
step costs one pass over the vocabulary.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import torch
from llguidance import LLMatcher, LLTokenizer
from transformers import LogitsProcessor, PreTrainedTokenizerFast

from webui.generation.grammar_compile import Constraint


# A token's allowed-flag (0 or 1) -> what is added to its logit.
_BIAS_OF_FLAG = np.array([-np.inf, 0.0], dtype=np.float32)


class GrammarUnsupported(ValueError):
    """This model's tokenizer cannot drive a grammar."""


def unsupported_reason(tokenizer: Any, eos_ids: set[int]) -> str | None:
    """Why this model cannot take a grammar (None: it can); cheap, for checks before queueing."""
    if not eos_ids:
        return "this model has no end-of-text token, so a grammar could never end"
    if isinstance(tokenizer, PreTrainedTokenizerFast) or getattr(tokenizer, "llama_vocab", None) is not None:
        return None
    return f"grammars need a fast (Rust) tokenizer; this model has {type(tokenizer).__name__}"


def grammar_tokenizer(tokenizer: Any, vocab_size: int, eos_ids: set[int]) -> LLTokenizer:
    """llguidance's view of a model's vocabulary (built once per model: ~0.05-1 s)."""
    reason = unsupported_reason(tokenizer, eos_ids)
    if reason:
        raise GrammarUnsupported(reason)
    eos = sorted(eos_ids)
    if isinstance(tokenizer, PreTrainedTokenizerFast):
        import llguidance.hf

        # n_vocab: the output layer may have more rows than the tokenizer has tokens;
        # those rows are never allowed.
        return llguidance.hf.from_tokenizer(tokenizer, n_vocab=max(vocab_size, len(tokenizer)), eos_token=eos)
    # A GGUF model: llama.cpp's own vocabulary (webui/loaders/gguf_tokenizer.py).
    import llguidance.llamacpp

    return llguidance.llamacpp.lltokenizer_from_vocab(tokenizer.llama_vocab, n_vocab=vocab_size, eos_token=eos)


class GrammarTokenizers:
    """The llguidance tokenizer of each loaded model's tokenizer, built on first use and
    dropped with the model (weak keys).  Owned by the engine; used on its model thread."""

    def __init__(self) -> None:
        self._built: weakref.WeakKeyDictionary[Any, LLTokenizer] = weakref.WeakKeyDictionary()

    def get(self, tokenizer: Any, vocab_size: int, eos_ids: set[int]) -> LLTokenizer:
        built = self._built.get(tokenizer)
        if built is None:
            built = self._built[tokenizer] = grammar_tokenizer(tokenizer, vocab_size, eos_ids)
        return built


class GrammarState:
    """One request's position in its grammar."""

    def __init__(self, constraint: Constraint, tokenizer: LLTokenizer, vocab_size: int):
        self.constraint = constraint
        self.vocab_size = vocab_size
        self.matcher = LLMatcher(tokenizer, constraint.grammar(), log_level=0)
        if self.matcher.is_error():  # refused already by SamplingParams; a tokenizer-specific failure
            raise ValueError(f"{constraint.kind}: {self.matcher.get_error().splitlines()[0]}")
        words = (tokenizer.vocab_size + 31) // 32
        self._bits = np.zeros(words, dtype=np.int32)
        self._flags_count = min(words * 32, vocab_size)
        self._bias: torch.Tensor | None = None
        # While a thinking model thinks, the grammar waits: it constrains the answer only
        # (webui/generation/reasoning.py ThinkingGate).
        self.paused = False

    def bias(self) -> torch.Tensor:
        """Float [vocab_size]: 0 for the tokens that may come next, -inf for the rest
        (computed once per position).  Added to the logits rather than masked_fill'ed:
        on a CPU an add is several times cheaper than a boolean-mask fill."""
        if self._bias is None:
            bits = self._bits
            self.matcher.unsafe_compute_mask_ptr(bits.ctypes.data, bits.nbytes)
            # Token i is bit i % 32 of word i // 32: little-endian words, so the bytes'
            # bits in little order are the tokens in order.
            flags = np.unpackbits(bits.view(np.uint8), bitorder="little", count=self._flags_count)
            bias = np.full(self.vocab_size, -np.inf, dtype=np.float32)
            n = min(self.vocab_size, flags.size)
            np.take(_BIAS_OF_FLAG, flags[:n], out=bias[:n])
            self._bias = torch.from_numpy(bias)
        return self._bias

    def allowed(self) -> torch.Tensor:
        """Bool [vocab_size]: the tokens that may come next."""
        return self.bias() == 0

    def advance(self, token: int) -> None:
        """Record the token the engine chose; ValueError if the grammar refuses it."""
        self._bias = None
        if not self.matcher.consume_token(token):
            raise ValueError(f"the grammar refused token {token}: {self.matcher.get_error().splitlines()[0]}")

    @property
    def accepting(self) -> bool:
        """What was written so far is a complete match."""
        return self.matcher.is_accepting()

    def restrict(self, scores: torch.Tensor) -> torch.Tensor:
        """`scores` with every token the grammar forbids at -inf (unchanged while paused)."""
        if self.paused:
            return scores
        return scores + self.bias().to(scores.device, scores.dtype, non_blocking=True)


class GrammarLogitsProcessor(LogitsProcessor):
    """The chain's grammar step for one sequence ([1, vocab] scores)."""

    def __init__(self, state: GrammarState):
        self.state = state

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return self.state.restrict(scores)
