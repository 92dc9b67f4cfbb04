"""Retrieval: BM25 over the full-text index, cosine similarity over the vectors, and the
two fused by reciprocal rank fusion (RRF).

RRF adds 1 / (K + rank) over the lists a chunk appears in: it needs no calibration
between BM25 scores and cosines (which live on unrelated scales), and rewards agreement.
K is 5 here, not the 60 of the paper that introduced it (Cormack, Clarke and Büttcher,
SIGIR 2009), which fused many decent runs.  With two lists of which one is often blind
(a name the embedding model never learned; a paraphrase sharing no word with its
passage), K = 60 lets chunks that are mediocre in both lists outrank the confident top
hit of one: on the retrieval fixture (tests/doc_fixtures.py) recall@5 of the fusion fell
below either list alone with K = 60 and rose above both with K = 1..5
(bench/bench_retrieval.py prints both; docs/DOCUMENTS.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from webui.documents.embedders import Embedder, EmbedderUnavailable
from webui.documents.store import DocumentStore, StoredChunk

Mode = Literal["hybrid", "bm25", "vector"]
MODES: tuple[Mode, ...] = ("hybrid", "bm25", "vector")
RRF_K = 5
CANDIDATES = 50  # taken from each list before fusing
MAX_QUERY_CHARS = 4_000
# Words too common to rank by: dropped from the full-text query, which they would make
# match (and score) nearly every chunk.
STOPWORDS = frozenset(
    "a an and are as at be but by for from has have he her his i in is it its of on or she that the their them "
    "they this to was were what when where which who whom why will with you your how does did do not".split())


@dataclass(frozen=True)
class Hit:
    chunk: StoredChunk
    score: float
    bm25_rank: int | None  # 1-based, None when that list did not have it
    vector_rank: int | None


def query_words(query: str) -> list[str]:
    words = []
    for word in re.findall(r"\w+", query[:MAX_QUERY_CHARS].lower()):
        if word not in STOPWORDS and word not in words:
            words.append(word)
    return words


def search(store: DocumentStore, query: str, files: list[str], embedder: Embedder | None = None, k: int = 5,
           mode: Mode = "hybrid", rrf_k: int = RRF_K) -> list[Hit]:
    if not files or not query.strip():
        return []
    ranked: dict[str, list[int]] = {}
    if mode in ("hybrid", "bm25"):
        ranked["bm25"] = [i for i, _ in store.bm25(query_words(query), files, CANDIDATES)]
    if mode in ("hybrid", "vector"):
        if embedder is None:
            if mode == "vector":
                raise EmbedderUnavailable("vector search needs an embedding model", param="mode")
        else:
            ranked["vector"] = vector_ranking(store, embedder, query, files, CANDIDATES)
    scores: dict[int, float] = {}
    for ids in ranked.values():
        for rank, chunk_id in enumerate(ids, 1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (rrf_k + rank)
    best = sorted(scores, key=lambda i: (-scores[i], i))[:k]
    chunks = store.chunks(best)
    position = {name: {c: r for r, c in enumerate(ids, 1)} for name, ids in ranked.items()}
    return [Hit(chunks[i], scores[i], position.get("bm25", {}).get(i), position.get("vector", {}).get(i))
            for i in best if i in chunks]


def vector_ranking(store: DocumentStore, embedder: Embedder, query: str, files: list[str], limit: int) -> list[int]:
    ids, owners, numbers, matrix = store.vector_matrix(embedder.name)
    wanted = [numbers[f] for f in files if f in numbers]
    if not len(ids) or not wanted:
        return []
    if len(wanted) < len(numbers):  # only some files: their rows (all of them: no copy)
        mask = np.isin(owners, np.array(wanted, dtype=np.int32))
        ids, matrix = ids[mask], matrix[mask]
    query_vector = embedder.embed([query[:MAX_QUERY_CHARS]])[0]
    if query_vector.shape[0] != matrix.shape[1]:
        return []
    scores = matrix @ query_vector
    top = np.argpartition(-scores, min(limit, len(scores) - 1))[:limit] if len(scores) > limit else np.arange(
        len(scores))
    top = top[np.argsort(-scores[top], kind="stable")]
    return [int(ids[i]) for i in top]
