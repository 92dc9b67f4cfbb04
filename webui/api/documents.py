"""OpenAI's Files and Vector Stores endpoints, over the documents feature (webui/documents/).

    POST/GET /v1/files, GET/DELETE /v1/files/{id}, GET /v1/files/{id}/content
    POST/GET /v1/vector_stores, GET/POST/DELETE /v1/vector_stores/{id}
    POST/GET /v1/vector_stores/{id}/files, GET/DELETE /v1/vector_stores/{id}/files/{file_id}
    POST /v1/vector_stores/{id}/search

Each API key has its own store (webui/documents/service.py): files and vector stores of
one key are invisible to every other, whatever ids a request names (404, as for an id
that never existed).  Without --api-key every client presents what key it likes, so a
key is then a private name, not a password.  Adding a file to a vector store indexes it
in the background (extract, chunk, embed: webui/documents/indexer.py); the file shows
`in_progress`, then `completed` or `failed` with OpenAI's `last_error`.  Search is hybrid
(BM25 + vectors, fused) unless the request's extra field `mode` says "bm25" or "vector".
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from webui.api.errors import APIError
from webui.api.schemas import CheckedText
from webui.api.state import RuntimeDep
from webui.api.usage import api_party, key_label
from webui.documents.errors import DocumentError, UnsupportedDocument
from webui.documents.extract import MAX_FILE_BYTES, kind_of
from webui.documents.indexer import ensure_vectors, index_file
from webui.documents.search import RRF_K, search
from webui.documents.store import Collection, DocumentStore, FileInfo, Member
from webui.runtime import Runtime

router = APIRouter()
PURPOSES = ("assistants", "user_data", "batch", "fine-tune", "vision", "evals")
MAX_RESULTS = 50


def owned_store(runtime: Runtime, request: Request) -> DocumentStore:
    if runtime.documents is None:
        raise APIError(503, "documents are not available in this server", code="unavailable")
    return runtime.documents.for_key(key_label(request.headers))


# -- files ------------------------------------------------------------------------------
def file_object(info: FileInfo) -> dict[str, Any]:
    return {"id": info.id, "object": "file", "bytes": info.bytes, "created_at": int(info.created),
            "filename": info.name, "purpose": info.purpose, "status": "processed", "expires_at": None,
            "status_details": None}


@router.post("/v1/files")
async def upload_file(request: Request, runtime: RuntimeDep, file: UploadFile = File(...),  # noqa: B008
                      purpose: str = Form("assistants")):
    if purpose not in PURPOSES:
        raise APIError(400, f"purpose: one of {', '.join(PURPOSES)}", param="purpose", code="invalid_value")
    name = file.filename or "upload"
    try:
        kind = kind_of(name)
    except UnsupportedDocument as exc:
        exc.param = "file"
        raise
    data = await file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise APIError(413, f"file: at most {MAX_FILE_BYTES >> 20} MB", param="file", code="file_too_large")
    store = owned_store(runtime, request)
    info = await run_in_threadpool(store.add_file, name, data, kind, purpose)
    return file_object(info)


@router.get("/v1/files")
async def list_files(request: Request, runtime: RuntimeDep, purpose: str | None = None):
    files = [f for f in await run_in_threadpool(owned_store(runtime, request).files)
             if purpose is None or f.purpose == purpose]
    return page([file_object(f) for f in reversed(files)])


@router.get("/v1/files/{file_id}")
async def get_file(file_id: str, request: Request, runtime: RuntimeDep):
    return file_object(await run_in_threadpool(owned_store(runtime, request).file, file_id))


@router.get("/v1/files/{file_id}/content")
async def file_content(file_id: str, request: Request, runtime: RuntimeDep):
    data = await run_in_threadpool(owned_store(runtime, request).content, file_id)
    # Never rendered by a browser: served as bytes to download.
    return Response(data, media_type="application/octet-stream",
                    headers={"Content-Disposition": "attachment", "X-Content-Type-Options": "nosniff"})


@router.delete("/v1/files/{file_id}")
async def delete_file(file_id: str, request: Request, runtime: RuntimeDep):
    await run_in_threadpool(owned_store(runtime, request).delete_file, file_id)
    return {"id": file_id, "object": "file", "deleted": True}


def page(data: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": False}


# -- vector stores ------------------------------------------------------------------------
class StaticChunking(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_chunk_size_tokens: int = Field(800, ge=100, le=4096)
    chunk_overlap_tokens: int = Field(400, ge=0)


class ChunkingStrategy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["auto", "static"] = "auto"
    static: StaticChunking | None = None

    def sizes(self) -> tuple[int, int]:
        from webui.documents.chunking import OVERLAP, SIZE

        if self.type == "static" and self.static is not None:
            size, overlap = self.static.max_chunk_size_tokens, self.static.chunk_overlap_tokens
            if overlap >= size // 2:
                raise APIError(400, "chunking_strategy: chunk_overlap_tokens must be under half of "
                               "max_chunk_size_tokens", param="chunking_strategy", code="invalid_value")
            return size, overlap
        return SIZE, OVERLAP


class CreateVectorStore(CheckedText):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("", max_length=256)
    file_ids: list[str] = Field(default_factory=list, max_length=500)
    metadata: dict[str, str] | None = Field(None, max_length=16)
    chunking_strategy: ChunkingStrategy | None = None
    expires_after: None = None  # not supported: refused if sent with a value


class ModifyVectorStore(CheckedText):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, max_length=256)
    metadata: dict[str, str] | None = Field(None, max_length=16)
    expires_after: None = None


class AddFile(CheckedText):
    model_config = ConfigDict(extra="forbid")
    file_id: str = Field(max_length=100)
    attributes: dict[str, str | float | bool] | None = Field(None, max_length=16)
    chunking_strategy: ChunkingStrategy | None = None


class RankingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ranker: Literal["auto", "default-2024-11-15", "none"] = "auto"
    score_threshold: float = Field(0.0, ge=0.0, le=1.0)


class SearchRequest(CheckedText):
    model_config = ConfigDict(extra="forbid")
    query: Annotated[str, Field(max_length=4000)] | Annotated[list[Annotated[str, Field(max_length=4000)]],
                                                              Field(max_length=16)]
    max_num_results: int = Field(10, ge=1, le=MAX_RESULTS)
    ranking_options: RankingOptions | None = None
    rewrite_query: Literal[False] = False  # no query rewriting: there is no model call in search
    filters: None = None  # attribute filters are not supported: refused if sent
    mode: Literal["hybrid", "bm25", "vector"] = "hybrid"  # ours: which retrieval

    def text(self) -> str:
        text = self.query if isinstance(self.query, str) else " ".join(self.query)
        if not text.strip() or len(text) > 4000:
            raise APIError(400, "query: 1 to 4,000 characters", param="query", code="invalid_value")
        return text


def vector_store_object(store: DocumentStore, collection: Collection) -> dict[str, Any]:
    members = store.members(collection.id)
    counts = {status: sum(1 for m in members if m.status == status)
              for status in ("in_progress", "completed", "failed", "cancelled")}
    used = sum(store.file(m.file).bytes for m in members if m.status == "completed")
    return {"id": collection.id, "object": "vector_store", "created_at": int(collection.created),
            "name": collection.name, "usage_bytes": used, "file_counts": {**counts, "total": len(members)},
            "status": "in_progress" if counts["in_progress"] else "completed", "last_active_at": int(time.time()),
            "metadata": {}, "expires_after": None, "expires_at": None}


def member_object(store: DocumentStore, member: Member) -> dict[str, Any]:
    error = None
    if member.status == "failed":
        code, _, message = (member.error or "server_error:failed").partition(":")
        error = {"code": code, "message": message}
    return {"id": member.file, "object": "vector_store.file", "created_at": int(member.created),
            "vector_store_id": member.collection, "status": member.status, "last_error": error,
            "usage_bytes": store.file(member.file).bytes if member.status == "completed" else 0,
            "attributes": {}}


@router.post("/v1/vector_stores")
async def create_vector_store(body: CreateVectorStore, request: Request, runtime: RuntimeDep):
    store = owned_store(runtime, request)
    for file_id in body.file_ids:
        await run_in_threadpool(store.file, file_id)  # every id must be this key's, before anything is made
    collection = await run_in_threadpool(store.create_collection, body.name or "vector store", "vector_store")
    sizes = (body.chunking_strategy or ChunkingStrategy()).sizes()
    for file_id in body.file_ids:
        start_indexing(runtime, request, store, collection.id, file_id, sizes)
    return vector_store_object(store, collection)


@router.get("/v1/vector_stores")
async def list_vector_stores(request: Request, runtime: RuntimeDep):
    store = owned_store(runtime, request)
    found = await run_in_threadpool(store.collections, "vector_store")
    return page([vector_store_object(store, c) for c in reversed(found)])


@router.get("/v1/vector_stores/{store_id}")
async def get_vector_store(store_id: str, request: Request, runtime: RuntimeDep):
    store = owned_store(runtime, request)
    return vector_store_object(store, await run_in_threadpool(store.collection, store_id))


@router.post("/v1/vector_stores/{store_id}")
async def modify_vector_store(store_id: str, body: ModifyVectorStore, request: Request, runtime: RuntimeDep):
    store = owned_store(runtime, request)
    collection = await run_in_threadpool(store.collection, store_id)
    if body.name is not None:
        collection = await run_in_threadpool(store.rename_collection, collection.id, body.name)
    return vector_store_object(store, collection)


@router.delete("/v1/vector_stores/{store_id}")
async def delete_vector_store(store_id: str, request: Request, runtime: RuntimeDep):
    await run_in_threadpool(owned_store(runtime, request).delete_collection, store_id)
    return {"id": store_id, "object": "vector_store.deleted", "deleted": True}


# -- files in a vector store -------------------------------------------------------------------
def start_indexing(runtime: Runtime, request: Request, store: DocumentStore, collection_id: str, file_id: str,
                   sizes: tuple[int, int]) -> Member:
    member = store.set_member(collection_id, file_id, "in_progress")
    who = api_party(request)

    def work(job) -> None:
        try:
            embedder = runtime.documents.embedder(runtime, who)
            index_file(store, file_id, embedder, job.cancel, job.progress, *sizes)
        except UnsupportedDocument as exc:
            store.set_member(collection_id, file_id, "failed", f"unsupported_file:{exc}")
            return
        except DocumentError as exc:
            store.set_member(collection_id, file_id, "failed", f"invalid_file:{exc}")
            return
        except Exception:
            store.set_member(collection_id, file_id, "failed", "server_error:indexing failed on the server")
            raise
        store.set_member(collection_id, file_id, "completed")

    runtime.documents.jobs.submit(f"{collection_id}/{file_id}", file_id, work)
    return member


@router.post("/v1/vector_stores/{store_id}/files")
async def add_vector_store_file(store_id: str, body: AddFile, request: Request, runtime: RuntimeDep):
    store = owned_store(runtime, request)
    collection = await run_in_threadpool(store.collection, store_id)
    await run_in_threadpool(store.file, body.file_id)
    sizes = (body.chunking_strategy or ChunkingStrategy()).sizes()
    member = start_indexing(runtime, request, store, collection.id, body.file_id, sizes)
    return member_object(store, member)


@router.get("/v1/vector_stores/{store_id}/files")
async def list_vector_store_files(store_id: str, request: Request, runtime: RuntimeDep, filter: str | None = None):
    store = owned_store(runtime, request)
    collection = await run_in_threadpool(store.collection, store_id)
    members = [m for m in store.members(collection.id) if filter is None or m.status == filter]
    return page([member_object(store, m) for m in reversed(members)])


@router.get("/v1/vector_stores/{store_id}/files/{file_id}")
async def get_vector_store_file(store_id: str, file_id: str, request: Request, runtime: RuntimeDep):
    store = owned_store(runtime, request)
    collection = await run_in_threadpool(store.collection, store_id)
    return member_object(store, await run_in_threadpool(store.member, collection.id, file_id))


@router.delete("/v1/vector_stores/{store_id}/files/{file_id}")
async def remove_vector_store_file(store_id: str, file_id: str, request: Request, runtime: RuntimeDep):
    store = owned_store(runtime, request)
    collection = await run_in_threadpool(store.collection, store_id)
    runtime.documents.jobs.cancel(f"{collection.id}/{file_id}")
    await run_in_threadpool(store.remove_member, collection.id, file_id)
    return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}


@router.post("/v1/vector_stores/{store_id}/search")
async def search_vector_store(store_id: str, body: SearchRequest, request: Request, runtime: RuntimeDep):
    store = owned_store(runtime, request)
    collection = await run_in_threadpool(store.collection, store_id)
    query = body.text()
    files = await run_in_threadpool(store.ready_files, collection.id)
    embedder = None
    if body.mode != "bm25" and files:
        embedder = await run_in_threadpool(runtime.documents.embedder, runtime, api_party(request))
    if embedder is not None:  # the embedding model changed since these files were indexed: catch up first
        await run_in_threadpool(ensure_vectors, store, embedder, files)
    if body.mode == "vector" and embedder is None:
        raise APIError(409, "mode: vector search needs an embedding model (choose one in the Model tab, or load a "
                       "local model)", param="mode", code="no_embedding_model")
    hits = await run_in_threadpool(search, store, query, files, embedder, body.max_num_results, body.mode)
    lists = 2 if body.mode == "hybrid" and embedder is not None else 1
    best = lists / (RRF_K + 1)  # a chunk first in every list: score 1
    threshold = body.ranking_options.score_threshold if body.ranking_options else 0.0
    data = [{"file_id": hit.chunk.file, "filename": hit.chunk.name, "score": round(hit.score / best, 6),
             "attributes": {"page": hit.chunk.page} if hit.chunk.page is not None else {},
             "content": [{"type": "text", "text": hit.chunk.text}]}
            for hit in hits if hit.score / best >= threshold]
    return {"object": "vector_store.search_results.page", "search_query": [query], "data": data,
            "has_more": False, "next_page": None}

