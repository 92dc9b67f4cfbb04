"""Vectors for chunks and queries: a sentence-transformers folder in models/, or the
loaded language model's own hidden states (webui/generation/embedding.py) as the fallback.

A sentence-transformers folder is read without the sentence-transformers package: its
modules.json names the transformer's folder and the pooling (1_Pooling/config.json:
mean, CLS, max or last token), loaded with transformers' AutoModel from safetensors
only, never with remote code.  Such a model is small and runs on the calling thread (an
indexing job's), not on the engine's: it never waits behind a long reply.  The loaded
language model instead embeds through Runtime.embed, between the engine's decoding
steps, so indexing with it never stalls anyone's reply for long.

Each embedder has a `name` that tags the vectors it made: vectors of two models are
never compared, and switching models re-embeds what the new one lacks (incremental).
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from webui.documents.chunking import word_spans
from webui.documents.errors import DocumentError

if TYPE_CHECKING:
    from webui.runtime import Runtime

BATCH = 32
POOLINGS = ("pooling_mode_mean_tokens", "pooling_mode_cls_token", "pooling_mode_max_tokens",
            "pooling_mode_lasttoken")


class EmbedderUnavailable(DocumentError):
    status, code = 409, "no_embedding_model"


class Embedder(Protocol):
    name: str
    max_tokens: int

    def embed(self, texts: list[str]) -> np.ndarray: ...  # unit rows, float32

    def token_spans(self, text: str) -> list[tuple[int, int]]: ...


def is_sentence_transformers_folder(folder: Path) -> bool:
    return (folder / "modules.json").is_file() and any(folder.glob("**/*.safetensors"))


def _spans_with(tokenizer, text: str) -> list[tuple[int, int]]:
    if not getattr(tokenizer, "is_fast", False):
        return word_spans(text)
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)["offset_mapping"]
    return [(s, e) for s, e in offsets if e > s]


class FolderEmbedder:
    """A sentence-transformers folder (modules.json + a transformer + its pooling)."""

    def __init__(self, folder: Path):
        from transformers import AutoModel, AutoTokenizer

        self.folder = folder
        try:
            modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
            by_type = {m["type"].rsplit(".", 1)[-1]: m.get("path", "") for m in modules}
            body = folder / by_type.get("Transformer", "")
            pooling = json.loads((folder / by_type.get("Pooling", "1_Pooling") / "config.json").read_text("utf-8"))
            self.pooling = next((p for p in POOLINGS if pooling.get(p)), "pooling_mode_mean_tokens")
            config = folder / "sentence_bert_config.json"
            self.max_tokens = int(json.loads(config.read_text("utf-8")).get("max_seq_length", 256)) if (
                config.is_file()) else 256
            if not body.resolve().is_relative_to(folder.resolve()):
                raise ValueError("its Transformer module points outside the folder")
            self.tokenizer = AutoTokenizer.from_pretrained(body)
            self.model = AutoModel.from_pretrained(body, use_safetensors=True, trust_remote_code=False).eval()
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise EmbedderUnavailable(f"the embedding model {folder.name} could not be loaded: {exc}"[:400],
                                      param="embedding_model") from None
        weights = sorted(folder.glob("**/*.safetensors"))
        stamp = hashlib.sha256(";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                                        for p in weights).encode()).hexdigest()[:12]
        self.name = f"st/{folder.name}/{stamp}"
        self.max_tokens = min(self.max_tokens, int(getattr(self.model.config, "max_position_embeddings", 512)))
        self._lock = threading.Lock()

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return _spans_with(self.tokenizer, text)

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> np.ndarray:
        rows = []
        with self._lock:
            for start in range(0, len(texts), BATCH):
                batch = self.tokenizer(texts[start:start + BATCH], padding=True, truncation=True,
                                       max_length=self.max_tokens, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state.float()
                rows.append(self._pool(hidden, batch["attention_mask"]))
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        return torch.nn.functional.normalize(torch.cat(rows), dim=-1).numpy().astype(np.float32)

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "pooling_mode_cls_token":
            return hidden[:, 0]
        if self.pooling == "pooling_mode_lasttoken":
            return hidden[torch.arange(hidden.shape[0]), mask.sum(dim=1) - 1]
        if self.pooling == "pooling_mode_max_tokens":
            return hidden.masked_fill(mask.unsqueeze(-1) == 0, float("-inf")).max(dim=1).values
        weights = mask.unsqueeze(-1).float()
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


class ModelEmbedder:
    """The loaded language model's embeddings, computed on the engine's thread."""

    def __init__(self, runtime: Runtime, who: str):
        loaded = runtime.models.current
        if loaded is None or loaded.backend is None or not loaded.backend.capabilities.embeddings:
            raise EmbedderUnavailable("no embedding model: choose one in the Model tab (a sentence-transformers "
                                      "folder in models/), or load a local model, whose own embeddings serve",
                                      param="embedding_model")
        self.runtime, self.who, self.loaded = runtime, who, loaded
        self.name = f"llm/{loaded.name}"
        self.max_tokens = min(512, loaded.context_length)
        self.owner = f"documents-{uuid.uuid4().hex}"  # Runtime.stop(owner) drops a queued batch

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return _spans_with(self.loaded.tokenizer, text)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        ids = [self.loaded.tokenizer(t)["input_ids"][: self.max_tokens] or [0] for t in texts]
        vectors = self.runtime.embed(self.owner, ids, who=self.who)
        return torch.nn.functional.normalize(vectors.float(), dim=-1).numpy().astype(np.float32)

    def cancel(self) -> None:
        self.runtime.stop(self.owner)
