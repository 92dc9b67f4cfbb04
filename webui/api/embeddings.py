"""POST /v1/embeddings, and the embedding path it shares with Ollama's /api/embed.

Vectors come from the loaded model's hidden states, computed on the engine's model
thread (webui/generation/embedding.py says which pooling, and why the thread): the mean
of the last hidden state over the input's tokens, L2-normalised.  `dimensions` keeps
the first d components and normalises again.  Inputs are checked against the model
(token ids in its vocabulary, length within its context) before anything is queued.
Transformers and llama.cpp models embed (the same pooling); remote engines' models are
refused with a 400 naming `model`.
"""

from __future__ import annotations

import base64
import uuid

import numpy as np
import torch
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from webui.api.disconnect import on_disconnect
from webui.api.errors import APIError
from webui.api.models import target
from webui.api.schemas import EmbeddingRequest
from webui.api.state import RuntimeDep
from webui.api.usage import api_party, key_label
from webui.generation.embedding import normalize
from webui.loaders.base import LoadedModel
from webui.remote.engine import RemoteModel
from webui.runtime import Runtime

router = APIRouter()


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request, runtime: RuntimeDep):
    vectors, tokens = await embed_inputs(runtime, request, body.model, body.inputs(), truncate=False)
    vectors = normalize(vectors, checked_dimensions(body.dimensions, vectors.shape[1]))
    data = [{"object": "embedding", "index": index, "embedding": encode(row, body.encoding_format)}
            for index, row in enumerate(vectors)]
    return {"object": "list", "data": data, "model": body.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def checked_dimensions(dimensions: int | None, width: int) -> int | None:
    if dimensions is not None and dimensions > width:
        raise APIError(400, f"dimensions: this model's embeddings have {width} dimensions; ask for at most that",
                       param="dimensions", code="invalid_value")
    return dimensions


def encode(row: torch.Tensor, encoding_format: str) -> list[float] | str:
    """A list of floats, or OpenAI's base64: the little-endian float32 bytes."""
    if encoding_format == "base64":
        return base64.b64encode(row.numpy().astype("<f4").tobytes()).decode("ascii")
    return row.tolist()


def decode_base64(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4")


async def embed_inputs(runtime: Runtime, request: Request, name: str, inputs: list[str | list[int]],
                       truncate: bool, param: str = "input", context: int | None = None) -> tuple[torch.Tensor, int]:
    """Pooled vectors (not normalised) of `inputs` from the model `name`, and the tokens
    read; counted against the request's key.  `truncate`: an input longer than the
    context (the model's, or `context` if smaller) is cut to it (Ollama's default)
    instead of refused."""
    model = await target(runtime, name, request)
    refuse_unless_embeds(model)
    ids = await run_in_threadpool(token_ids, model, inputs, truncate, param, context)
    owner = f"api-{uuid.uuid4().hex}"
    async with on_disconnect(request.receive, lambda: runtime.stop(owner)):
        vectors = await run_in_threadpool(runtime.embed, owner, ids, name, api_party(request))
    if not bool(torch.isfinite(vectors).all()):
        # JSON has no NaN: left to the encoder, this became a plain-text 500 on every route.
        raise APIError(500, f"the model '{name}' computed embeddings that are not finite numbers (NaN or "
                       "infinity); its weights or config.json are broken", code="model_error")
    tokens = sum(len(row) for row in ids)
    runtime.usage.add(key_label(request.headers), tokens, 0)
    return vectors, tokens


def refuse_unless_embeds(model: LoadedModel | RemoteModel) -> None:
    if isinstance(model, RemoteModel):
        raise APIError(400, f"the model '{model.name}' is served by remote engine {model.engine.name}; "
                       "embeddings are computed only by the local model", param="model", code="unsupported_model")
    if not model.backend.capabilities.embeddings:
        raise APIError(400, f"this model's backend ({model.loader}) cannot compute embeddings", param="model",
                       code="unsupported_model")


def token_ids(model: LoadedModel, inputs: list[str | list[int]], truncate: bool, param: str,
              context: int | None = None) -> list[list[int]]:
    """Each input's token ids: texts tokenized with the model's special tokens (its BOS),
    id lists checked against its vocabulary; each within its context."""
    size = model.backend.vocab_size()
    context = min(context or model.context_length, model.context_length)
    rows = []
    for index, item in enumerate(inputs):
        if isinstance(item, str):
            ids = model.tokenizer(item)["input_ids"]
        else:
            bad = next((t for t in item if not 0 <= t < size), None)
            if bad is not None:
                raise APIError(400, f"{param}: token id {bad} is outside the vocabulary (0..{size - 1})",
                               param=param, code="invalid_value")
            ids = list(item)
        if len(ids) > context:
            if not truncate:
                raise APIError(400, f"{param}: input {index} has {len(ids)} tokens; the context is {context}",
                               param=param, code="context_length_exceeded")
            ids = ids[:context]
        rows.append(ids)
    return rows
