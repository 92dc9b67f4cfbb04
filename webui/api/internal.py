"""/v1/internal/*: model management and usage (admin key, webui/api/security.py), and
the tokenizer's view of a text."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from webui.api.errors import APIError
from webui.api.schemas import LoadRequest, TextRequest, TokensRequest
from webui.api.state import RuntimeDep
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
