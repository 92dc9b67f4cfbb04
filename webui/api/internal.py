"""/v1/internal/*: model management and usage (admin key, webui/api/security.py), the
tokenizer's view of a text, and the logit lens (webui/inspect/: it takes the model from
every user for the pass, so it is the admin's, as the Inspect tab is the owner's)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from webui.api.errors import APIError
from webui.api.schemas import CheckedText, LoadRequest, TextRequest, TokensRequest
from webui.api.state import RuntimeDep
from webui.inspect.lens import MAX_CHARS, TOP
from webui.loaders.base import LoadedModel, ModelRefused
from webui.paths import NameRefused
from webui.runtime import Runtime

router = APIRouter(prefix="/v1/internal")


@router.get("/models")
async def available_models(runtime: RuntimeDep):
    loaded = runtime.models.current
    return {"models": runtime.models.names(), "loaded": loaded.name if loaded else None}


@router.post("/models/load")
async def load_model(body: LoadRequest, runtime: RuntimeDep):
    # ModelBusy (503) and LoadError (500) carry their status as they are; a name not in
    # the listing (404) and refused files (400) blame the request's model field.
    try:
        await run_in_threadpool(lambda: runtime.load_model(body.model, body.choice(), timeout=30))
    except (NameRefused, ModelRefused) as exc:
        exc.blame("model")
        raise
    return {"loaded": runtime.models.current.describe()}


@router.post("/models/unload")
async def unload_model(runtime: RuntimeDep):
    await run_in_threadpool(lambda: runtime.models.unload(timeout=30))  # ModelBusy: a 503
    return {"loaded": None}


@router.get("/usage")
async def usage_by_key(runtime: RuntimeDep):
    """Tokens in and out per API key (named by a digest's prefix, never the key itself)."""
    return {"usage": runtime.usage.snapshot()}


def loaded_model(runtime: Runtime) -> LoadedModel:
    loaded = runtime.models.current
    if loaded is None:
        raise APIError(503, "no model is loaded", kind="server_error", code="model_not_loaded")
    return loaded


@router.post("/tokenize")
async def tokenize(body: TextRequest, runtime: RuntimeDep):
    ids = loaded_model(runtime).tokenizer(body.text, add_special_tokens=False)["input_ids"]
    return {"tokens": ids, "length": len(ids)}


@router.post("/token-count")
async def token_count(body: TextRequest, runtime: RuntimeDep):
    return {"length": len(loaded_model(runtime).tokenizer(body.text, add_special_tokens=False)["input_ids"])}


@router.post("/detokenize")
async def detokenize(body: TokensRequest, runtime: RuntimeDep):
    loaded = loaded_model(runtime)
    size = loaded.backend.vocab_size()
    bad = next((t for t in body.tokens if not 0 <= t < size), None)
    if bad is not None:
        raise APIError(400, f"token id {bad} is outside the vocabulary (0..{size - 1})", param="tokens")
    return {"text": loaded.tokenizer.decode(body.tokens)}


class LogitLensRequest(CheckedText):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(max_length=MAX_CHARS)
    position: int | None = None  # the query position whose attention is returned; None: the last
    top: int = Field(1, ge=1, le=TOP)  # likeliest tokens per layer and position


@router.post("/logit-lens")
async def logit_lens(body: LogitLensRequest, runtime: RuntimeDep):
    """Each layer's likeliest next tokens at each position, the attention of one position
    (per layer and head) and the hidden-state norms: what the Inspect tab shows."""
    lens = await run_in_threadpool(lambda: runtime.inspect.run(body.text, body.position))
    k = body.top
    return {
        "model": runtime.models.current.name,
        "tokens": [{"id": i, "text": t} for i, t in zip(lens.ids, lens.tokens, strict=True)],
        "layers": lens.layer_names,
        "lens": [[[{"id": int(i), "text": lens.vocab[int(i)], "probability": float(p)}
                   for i, p in zip(ids[:k], probs[:k], strict=True)]
                  for ids, probs in zip(layer_ids, layer_probs, strict=True)]
                 for layer_ids, layer_probs in zip(lens.top_ids, lens.top_probs, strict=True)],
        "norms": lens.mean_norms(),
        "position": lens.position,
        "attention": lens.attention.tolist(),  # [layer][head][key position]
        "seconds": round(lens.seconds, 4),
    }
