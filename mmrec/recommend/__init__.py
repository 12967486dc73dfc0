"""Batch top-K generation: every user against every item, in memory-bounded chunks.

Modules: `topk` (the chunked scoring loop and ad-hoc top-K for given users), `writer` (the
one writer of latest.parquet and the run's statistics), `strategies` (what scores the grid:
model, popularity, content, hybrid, plus business filters), `id_files` (id lists from files) and
`run` (the recommend stage). Its settings are `mmrec.params.recommend`.

The nightly job scores all users x all items. The full score matrix (100k users x 50k items is
20 GB of float32) is never built: users are scored `batch_size` at a time, the items each user
already interacted with are masked, the top K survive and the chunk's scores are dropped before
the next chunk. Peak memory is O(batch_size x n_items) plus the output rows.

Scoring, masking and top-K selection run through `mmrec.ranking` (the same core as evaluation,
retrieval and the API): `torch.topk` on big float chunks, so the batch path stays at least as fast
as FAISS `IndexFlatIP` exact search on the same embeddings (`benchmarks/batch_scoring.py` measures
both in one run), with ties ordered by lower item index at every position, the cut at K included.

Results are streamed to `data/<name>/recommendations/latest.parquet` (user_id, item_id,
rank 1..K, score) through `mmrec.io.atomic_path`: the new file is written aside and renamed over
the old one only when complete, so a crash mid-run keeps yesterday's recommendations.
"""
