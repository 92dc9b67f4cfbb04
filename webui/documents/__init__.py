"""Documents: extraction, chunking, a per-user index (BM25 + vectors) and retrieval.

extract.py turns an uploaded file into page texts (hostile formats in a bounded child
process, worker.py); chunking.py cuts pages into overlapping token windows; store.py
keeps files, chunks, their full-text index and vectors in one SQLite file per owner;
embedders.py computes vectors; search.py fuses BM25 and vector ranks; indexer.py runs
the whole path with progress and cancel; context.py decides what a chat message gets.
"""
