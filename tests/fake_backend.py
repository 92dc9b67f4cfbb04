"""A fake model backend, registered through the same door a plugin's loader uses (an
extension's `register_loaders` hook, docs/EXTENSIONS.md), for engine, batching and API
tests that need a backend's behaviour but not a network's arithmetic.

Its "model" is a hash: the next-token logits are random numbers seeded by the last few
token ids, so a reply is deterministic, independent of what it is batched with and of
any cache, and costs microseconds.  Everything else is real: the tokenizer (a trained
one from tests/tiny_models.py), the engine, the sampling chain, the API.

A model folder is fake when it holds `fake-model.json`:

    {"capabilities": {"max_batch": 8, "samplers": ["temperature", ...]}, "context_length": 512}

(`samplers` null = all of them; every capability left out is the protocol's default, no.)
The loader records what the engine asked of it (`FakeBackend.steps`: the batch size of
each decoding step) so tests can see batching rather than time it.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from webui.generation.backend import Capabilities
from webui.loaders.base import LoadedModel, LoadError
from webui.loaders.options import LoaderOptions

MARKER = "fake-model.json"
CONTEXT_WINDOW = 4  # the last ids that decide the next logits


@dataclass
class FakeSlot:
    ids: list[int]
    logits: torch.Tensor | None = None
    cached_tokens: int = 0


@dataclass
class FakeBackend:
    capabilities: Capabilities
    tokenizer: Any
    vocab: int
    device: str = "cpu"
    steps: list[int] = field(default_factory=list)  # batch size of each step
    started: list[int] = field(default_factory=list)  # prompt length of each start
    running: int = 0

    def vocab_size(self) -> int:
        return self.vocab

    def eos_ids(self) -> set[int]:
        return {self.tokenizer.eos_token_id}

    def can_admit(self, running: int, prompt_tokens: int, new_tokens: int) -> bool:
        return running < self.capabilities.max_batch

    def start(self, ids: list[int], embeds: torch.Tensor | None = None, reuse: bool = True) -> FakeSlot:
        slot = FakeSlot(list(ids))
        slot.logits = self._logits([slot.ids])
        self.started.append(len(ids))
        self.running += 1
        return slot

    def step(self, slots: list[FakeSlot], tokens: list[int]) -> torch.Tensor:
        for slot, token in zip(slots, tokens, strict=True):
            slot.ids.append(token)
        self.steps.append(len(slots))
        return self._logits([slot.ids for slot in slots])

    def finish(self, slot: FakeSlot, keep: bool) -> None:
        self.running -= 1

    def guidance_processor(self, scale: float, negative_ids: list[int]) -> Any:
        raise NotImplementedError("the fake backend declares no guidance")

    def clear_cache(self) -> None:
        pass

    def _logits(self, sequences: list[list[int]]) -> torch.Tensor:
        rows = []
        for ids in sequences:
            seed = 1
            for token in ids[-CONTEXT_WINDOW:]:
                seed = (seed * 1_000_003 + token) % (1 << 31)
            rows.append(torch.randn(self.vocab, generator=torch.Generator().manual_seed(seed)) * 4)
        return torch.stack(rows)


class FakeOptions(LoaderOptions):
    """The fake loader takes no options."""


class FakeLoader:
    name = "fake"
    options_schema = FakeOptions

    def __init__(self):
        self.loaded: list[FakeBackend] = []

    def can_load(self, folder: Path) -> bool:
        return (folder / MARKER).is_file()

    def load(self, name: str, folder: Path, options: Any) -> LoadedModel:
        try:
            spec = json.loads((folder / MARKER).read_text(encoding="utf-8"))
            tokenizer = AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError) as exc:
            raise LoadError(f"{name}: not a fake model: {exc}") from exc
        declared = dict(spec.get("capabilities", {}))
        if declared.get("samplers") is not None:
            declared["samplers"] = frozenset(declared["samplers"])
        capabilities = dataclasses.replace(Capabilities(), **declared)
        backend = FakeBackend(capabilities, tokenizer, len(tokenizer))
        self.loaded.append(backend)
        return LoadedModel(name=name, folder=folder, loader=self.name, model=None, tokenizer=tokenizer,
                           device="cpu", dtype="fake", context_length=spec.get("context_length", 512),
                           parameters=0, options=options, backend=backend)

    def unload(self, loaded: LoadedModel) -> None:
        pass


def write_fake_model(folder: Path, tokenizer_from: Path, **spec: Any) -> Path:
    """A fake model folder: the tokenizer files of a real tiny model, and the spec."""
    folder.mkdir(parents=True, exist_ok=True)
    AutoTokenizer.from_pretrained(tokenizer_from).save_pretrained(folder)
    (folder / MARKER).write_text(json.dumps(spec), encoding="utf-8")
    return folder


def write_fake_extension(user_data: Path) -> None:
    """The extension that registers the fake loader (enable it as "fake")."""
    folder = user_data / "extensions" / "fake"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "script.py").write_text(textwrap.dedent("""
        from tests.fake_backend import FakeLoader

        def register_loaders(register):
            register(FakeLoader())
    """), encoding="utf-8")
