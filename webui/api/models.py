"""/v1/models, and which model a request's `model` field names: the loaded one, or a
remote engine's (no load step for those)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from webui.api.errors import APIError
from webui.api.state import RuntimeDep
from webui.loaders.base import LoadedModel
from webui.remote.engine import RemoteModel
from webui.runtime import Runtime

router = APIRouter()


def model_card(name: str, owner: str = "local", vision: bool = False) -> dict[str, Any]:
    # `capabilities` (Ollama's word for it): whether the model reads images, for clients that ask.
    return {"id": name, "object": "model", "created": 0, "owned_by": owner,
            "capabilities": ["completion", "vision"] if vision else ["completion"]}


async def all_cards(runtime: Runtime) -> list[dict[str, Any]]:
    """The loaded model, then every remote engine's (a name the local model has is its)."""
    loaded = runtime.models.current
    cards = [model_card(loaded.name, vision=sees(loaded))] if loaded else []
    if runtime.remotes:
        remote = await run_in_threadpool(runtime.remotes.models)
        cards += [model_card(name, engine.name) for name, engine in remote.items()
                  if not loaded or name != loaded.name]
    return cards


def sees(model: LoadedModel | RemoteModel) -> bool:
    """Whether `model` reads images (its backend says so)."""
    capabilities = model.capabilities if isinstance(model, RemoteModel) else getattr(model.backend, "capabilities", None)
    return bool(getattr(capabilities, "vision", False))


async def target(runtime: Runtime, requested: str) -> LoadedModel | RemoteModel:
    """The loaded model, or the remote model of that name."""
    loaded = runtime.models.current
    if loaded is not None and requested == loaded.name:
        return loaded
    remote = await run_in_threadpool(runtime.remotes.model, requested) if runtime.remotes else None
    if remote is not None:
        return remote
    if loaded is None and not runtime.remotes:
        raise APIError(503, "no model is loaded", kind="server_error", code="model_not_loaded")
    here = f"the loaded model is '{loaded.name}'" if loaded else "no local model is loaded"
    here += "".join(f"; {problem}" for problem in runtime.remotes.problems.values())
    raise APIError(404, f"the model '{requested}' is not loaded; {here}", param="model", code="model_not_found")


@router.get("/v1/models")
async def list_models(runtime: RuntimeDep):
    return {"object": "list", "data": await all_cards(runtime)}


@router.get("/v1/models/{model_id}")
async def get_model(model_id: str, runtime: RuntimeDep):
    card = next((c for c in await all_cards(runtime) if c["id"] == model_id), None)
    if card is None:
        raise APIError(404, f"the model '{model_id}' does not exist or is not loaded", param="model",
                       code="model_not_found")
    return card
