"""/v1/models, and which model a request's `model` field names: a resident one, a remote
engine's, or a listed one loaded now (load on demand, webui/resident.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from webui.api.errors import APIError
from webui.api.security import key_matches, presented_key
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
    """The resident models (the loaded one first), every remote engine's (a name a local
    model has is its), then, when requests load models on demand, the rest of the listing."""
    loaded = runtime.models.current
    cards = [model_card(loaded.name, vision=sees(loaded))] if loaded else []
    residents = runtime.resident.entries() if runtime.resident is not None else []
    cards += [model_card(r.name, vision=sees(r.loaded)) for r in residents
              if r.loaded is not None and (loaded is None or r.name != loaded.name)]
    local = {card["id"] for card in cards}
    if runtime.settings.loads_on_demand:
        local |= set(runtime.models.available())
    if runtime.remotes:
        remote = await run_in_threadpool(runtime.remotes.models)
        cards += [model_card(name, engine.name) for name, engine in remote.items() if name not in local]
    if runtime.settings.loads_on_demand:
        shown = {card["id"] for card in cards}
        cards += [model_card(name) for name in runtime.models.names() if name not in shown]
    return cards


def sees(model: LoadedModel | RemoteModel) -> bool:
    """Whether `model` reads images (its backend says so)."""
    capabilities = model.capabilities if isinstance(model, RemoteModel) else getattr(model.backend, "capabilities", None)
    return bool(getattr(capabilities, "vision", False))


async def target(runtime: Runtime, requested: str, request: Request | None = None) -> LoadedModel | RemoteModel:
    """A resident model (the loaded one or another), the remote model of that name, or a
    listed model loaded now for this request if its caller may (it waits meanwhile)."""
    loaded = runtime.models.current
    if loaded is not None and requested == loaded.name:
        return loaded
    resident = runtime.resident.find(requested) if runtime.resident is not None else None
    if resident is not None and resident.loaded is not None:
        return resident.loaded
    remote = await run_in_threadpool(runtime.remotes.model, requested) if runtime.remotes else None
    if remote is not None:
        return remote
    if runtime.resident is not None:
        owner = is_owner(runtime, request)
        on_demand = await run_in_threadpool(runtime.resident_model, requested, owner)
        if on_demand is not None:
            return on_demand
    if loaded is None and not runtime.remotes:
        raise APIError(503, "no model is loaded", kind="server_error", code="model_not_loaded")
    here = f"the loaded model is '{loaded.name}'" if loaded else "no local model is loaded"
    here += "".join(f"; {problem}" for problem in runtime.remotes.problems.values())
    raise APIError(404, f"the model '{requested}' is not loaded; {here}", param="model", code="model_not_found")


def is_owner(runtime: Runtime, request: Request | None) -> bool:
    """Whether the caller presents the admin key (the server owner's, on the API)."""
    admin = runtime.settings.admin_key
    return bool(admin and request is not None and key_matches(presented_key(request.headers), admin))


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
