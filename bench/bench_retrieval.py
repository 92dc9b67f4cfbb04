"""Documents: recall@5 of each retrieval mode, indexing pages/s, and query latency at
1k and 100k chunks.

    .venv/bin/python bench/bench_retrieval.py [--big 100000] [--queries 50] [--pages 200]

- Recall@5 on the town fixture (tests/doc_fixtures.py: 240 paragraphs, 240 held-out
  questions, half naming their town, half describing it in other words), for BM25,
  vectors (the fixture's tiny trained sentence-transformers model), and their fusion by
  reciprocal rank with K = 5 (ours) and K = 60 (the usual default).  What it shows and
  does not: docs/DOCUMENTS.md.
- Indexing: a PDF of --pages pages (one town paragraph each) through extraction (child
  process), chunking, embedding (the tiny model) and the store: pages/s, and the same
  text as a .txt file.
- Query latency (median of --queries) of each mode in stores of 1,000 and --big chunks:
  the big store's chunks are town sentences mixed at random, and its vectors random
  unit vectors of the model's width (an exact scan costs the same whatever the values);
  the cost of the exact scan alone at widths 384 and 1024 (common sentence-transformers
  sizes) is printed too.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from report import figure

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.doc_fixtures import build_embedder, corpus_text, passage, pdf_bytes, questions, towns  # noqa: E402
from webui.documents.chunking import Chunk  # noqa: E402
from webui.documents.embedders import FolderEmbedder  # noqa: E402
from webui.documents.indexer import ingest  # noqa: E402
from webui.documents.search import search  # noqa: E402
from webui.documents.store import DocumentStore  # noqa: E402


def recall(store, info, embedder, mode: str, rrf_k: int) -> dict[str, float]:
    found: dict[str, list[bool]] = {}
    for q in questions(towns()):
        if q.train:
            continue
        hits = search(store, q.text, [info.id], embedder, k=5, mode=mode, rrf_k=rrf_k)
        found.setdefault(q.kind, []).append(any(q.answer in h.chunk.text for h in hits))
    every = [x for v in found.values() for x in v]
    return {"all": float(np.mean(every)), **{k: float(np.mean(v)) for k, v in found.items()}}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def big_store(folder: Path, chunks: int, width: int, embedder_name: str, seed: int = 0) -> tuple[DocumentStore, list]:
    """A store of `chunks` chunks in files of 1,000, with random unit vectors."""
    rng = random.Random(seed)
    sentences = [s + "." for t in towns() for s in passage(t).split(". ")]
    store = DocumentStore(folder)
    generator = np.random.default_rng(seed)
    files = []
    for start in range(0, chunks, 1000):
        count = min(1000, chunks - start)
        texts = [" ".join(rng.sample(sentences, 4)) for _ in range(count)]
        info = store.add_file(f"part{start // 1000}.txt", b"x", "text")
        vectors = generator.standard_normal((count, width)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.save_index(info.id, [(None, "")], [Chunk(None, 0, len(t), t, 60) for t in texts],
                         {embedder_name: vectors})
        files.append(info.id)
    return store, files


def latency(store, files, embedder, queries: list[str], mode: str) -> float:
    search(store, queries[0], files, embedder, mode=mode)  # warm: the vector cache is built once per write
    return statistics.median(timed(lambda q=q: search(store, q, files, embedder, mode=mode)) for q in queries) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    all_towns = towns()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        embedder = FolderEmbedder(build_embedder(tmp / "town-embedder", all_towns))
        print(f"trained the fixture's embedding model in {time.perf_counter() - start:.1f} s")

        store = DocumentStore(tmp / "fixture")
        info = ingest(store, "towns.txt", corpus_text(all_towns).encode(), embedder, chunk_tokens=128, overlap=16)
        print(f"fixture: {store.chunk_count()} chunks")
        for mode, rrf_k in (("bm25", 5), ("vector", 5), ("hybrid", 5), ("hybrid", 60)):
            got = recall(store, info, embedder, mode, rrf_k)
            label = f"{mode}" + (f" (RRF K={rrf_k})" if mode == "hybrid" else "")
            print(f"recall@5 {label:22} all {got['all']:.3f}  named {got['named']:.3f}  "
                  f"described {got['described']:.3f}")
            figure(f"Recall@5, {label}", f"{got['all']:.3f}",
                   f"named {got['named']:.3f}, described {got['described']:.3f}; 240 held-out questions")

        pages = [passage(all_towns[i % len(all_towns)]) for i in range(args.pages)]
        pdf = pdf_bytes(pages)
        text = "\n\n".join(pages).encode()
        seconds = timed(lambda: ingest(DocumentStore(tmp / "pdf"), "atlas.pdf", pdf, embedder))
        plain = timed(lambda: ingest(DocumentStore(tmp / "txt"), "atlas.txt", text, embedder))
        no_vectors = timed(lambda: ingest(DocumentStore(tmp / "bm25"), "atlas.pdf", pdf, None))
        print(f"indexing {args.pages} PDF pages: {args.pages / seconds:.1f} pages/s "
              f"({args.pages / no_vectors:.1f} without vectors); the same text as .txt: {args.pages / plain:.1f}")
        figure("Indexing a PDF (extract, chunk, embed, store)", f"{args.pages / seconds:.1f} pages/s",
               f"{args.pages} pages of ~95 words; without vectors {args.pages / no_vectors:.1f} pages/s; "
               f"as .txt {args.pages / plain:.1f} pages/s; the fixture's tiny embedding model")

        queries = [q.text for q in questions(all_towns)][: args.queries]
        width = embedder.embed(["x"]).shape[1]
        for size in (1000, args.big):
            start = time.perf_counter()
            big, files = big_store(tmp / f"big{size}", size, width, embedder.name)
            built = time.perf_counter() - start
            results = {mode: latency(big, files, embedder, queries, mode) for mode in ("bm25", "vector", "hybrid")}
            print(f"{size:>7} chunks (stored in {built:.1f} s): " + ", ".join(
                f"{mode} {ms:.1f} ms" for mode, ms in results.items()))
            figure(f"Query latency at {size:,} chunks (median)", f"hybrid {results['hybrid']:.1f} ms",
                   f"BM25 {results['bm25']:.1f} ms, vectors {results['vector']:.1f} ms (width {width}, exact scan)")
            big.close()
        for wide in (384, 1024):
            matrix = np.random.default_rng(1).standard_normal((args.big, wide)).astype(np.float32)
            query = matrix[0].copy()
            scan = statistics.median(timed(lambda m=matrix, q=query: np.argpartition(-(m @ q), 50)[:50])
                                     for _ in range(20)) * 1000
            print(f"exact scan of {args.big:,} vectors of width {wide}: {scan:.1f} ms, "
                  f"{matrix.nbytes / 2**20:.0f} MB in memory")
            figure(f"Exact vector scan, {args.big:,} x {wide}", f"{scan:.1f} ms",
                   f"{matrix.nbytes / 2**20:.0f} MB of float32 held in memory")


if __name__ == "__main__":
    main()
