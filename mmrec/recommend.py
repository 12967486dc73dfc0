"""Batch top-K generation: every user against every item, in memory-bounded chunks.

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

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from mmrec import ranking
from mmrec.constants import DEFAULT_K, ITEM_ID, USER_ID
from mmrec.errors import DataError, ModelError
from mmrec.params.recommend import RecommendParams, recommend_params

if TYPE_CHECKING:
    from mmrec.models.base import Recommender
    from mmrec.stages import StageContext

log = logging.getLogger(__name__)

RANK = "rank"
SCORE = "score"
OUTPUT_COLUMNS = (USER_ID, ITEM_ID, RANK, SCORE)
#: scores kept for the distribution summary; beyond it a uniform sample is kept (bounded memory)
_SCORE_SAMPLE = 200_000


# -- core: chunked scoring -------------------------------------------------------------------


def iter_topk(
    model: Recommender,
    users: np.ndarray | None = None,
    k: int = DEFAULT_K,
    batch_size: int = 1024,
    exclude: sp.csr_matrix | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (user indices, item indices (B, k), scores (B, k)) chunk by chunk.

    Args:
        model: a fitted Recommender; `model.score` supplies (B, n_items) scores per chunk.
        users: row indices of the model's users (all when None).
        exclude: (n_users, n_items) items to mask per user; masked entries come back with a
            score of -inf when a user has fewer than k unmasked items (callers drop them).
    """
    if model.item_ids is None or model.user_ids is None:
        raise ModelError(f"model {model.name!r} is not fitted; nothing to recommend from")
    if users is None:
        users = np.arange(len(model.user_ids), dtype=np.int64)
    users = np.asarray(users, dtype=np.int64)
    if exclude is not None:
        exclude = sp.csr_matrix(exclude)
        if exclude.shape != (len(model.user_ids), len(model.item_ids)):
            raise ModelError(f"exclude matrix shape {exclude.shape} does not match the model's index")
    yield from ranking.iter_topk(model.score, users, k, batch_size, seen=exclude)


def history_matrix(model: Recommender, interactions: pd.DataFrame | None) -> sp.csr_matrix:
    """What each user has already interacted with, over the model's index.

    The training matrix plus every (user, item) pair of `interactions` whose ids the model
    knows (validation and test interactions happened too; pairs with ids the model never saw
    cannot be masked and need not be).
    """
    assert model.user_ids is not None and model.item_ids is not None
    shape = (len(model.user_ids), len(model.item_ids))
    seen = sp.csr_matrix(model.train_matrix if model.train_matrix is not None else sp.csr_matrix(shape), dtype=np.float32)
    if interactions is None or not len(interactions):
        return seen
    rows = pd.Index(model.user_ids).get_indexer(interactions[USER_ID].astype(str))
    cols = pd.Index(model.item_ids).get_indexer(interactions[ITEM_ID].astype(str))
    keep = (rows >= 0) & (cols >= 0)
    extra = sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (rows[keep], cols[keep])), shape=shape)
    out = sp.csr_matrix(seen + extra)
    out.data[:] = 1.0
    return out


def chunk_frame(model: Recommender, users: np.ndarray, idx: np.ndarray, val: np.ndarray) -> pd.DataFrame:
    """Long format (user_id, item_id, rank, score) of one chunk; masked (-inf) entries dropped."""
    assert model.user_ids is not None and model.item_ids is not None
    b, k = idx.shape
    valid = np.isfinite(val)
    user_ids = np.asarray(model.user_ids, dtype=object)[np.repeat(users, k)]
    item_ids = np.asarray(model.item_ids, dtype=object)[idx.ravel()]
    ranks = np.tile(np.arange(1, k + 1, dtype=np.int32), b)
    df = pd.DataFrame({USER_ID: user_ids, ITEM_ID: item_ids, RANK: ranks, SCORE: val.ravel().astype(np.float32)})
    return df[valid.ravel()].reset_index(drop=True)


# -- summary ----------------------------------------------------------------------------------


@dataclass
class _Stats:
    """Streaming statistics over the chunks: coverage and a bounded sample of scores."""

    n_items: int
    rng: np.random.Generator
    users: int = 0
    users_covered: int = 0
    users_full: int = 0
    rows: int = 0
    seen_items: np.ndarray | None = None
    sample: np.ndarray | None = None
    top1: list[np.ndarray] | None = None
    sampled_from: int = 0

    def add(self, idx: np.ndarray, val: np.ndarray, k: int) -> None:
        finite = np.isfinite(val)
        per_user = finite.sum(axis=1)
        self.users += len(idx)
        self.users_covered += int((per_user > 0).sum())
        self.users_full += int((per_user >= min(k, self.n_items)).sum())
        self.rows += int(finite.sum())
        if self.seen_items is None:
            self.seen_items = np.zeros(self.n_items, dtype=bool)
        self.seen_items[idx[finite]] = True
        scores = val[finite]
        self.sampled_from += len(scores)
        merged = scores if self.sample is None else np.concatenate([self.sample, scores])
        if len(merged) > _SCORE_SAMPLE:
            merged = self.rng.choice(merged, _SCORE_SAMPLE, replace=False)
        self.sample = merged
        if self.top1 is None:
            self.top1 = []
        self.top1.append(val[finite[:, 0], 0] if val.shape[1] else np.zeros(0, np.float32))

    def summary(self) -> dict[str, Any]:
        def dist(x: np.ndarray | None) -> dict[str, float]:
            if x is None or not len(x):
                return {}
            q = np.quantile(x.astype(np.float64), [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0])
            keys = ("min", "p05", "p25", "p50", "p75", "p95", "max")
            return {**{key: round(float(v), 6) for key, v in zip(keys, q, strict=True)}, "mean": round(float(x.mean()), 6)}

        items = int(self.seen_items.sum()) if self.seen_items is not None else 0
        top1 = np.concatenate(self.top1) if self.top1 else None
        return {
            "users": self.users,
            "users_covered": self.users_covered,
            "users_full": self.users_full,
            "rows": self.rows,
            "items_recommended": items,
            "catalogue_coverage": round(items / self.n_items, 6) if self.n_items else 0.0,
            "score": dist(self.sample),
            "top1_score": dist(top1),
            "score_sampled": self.sampled_from > _SCORE_SAMPLE,
        }


# -- writing ----------------------------------------------------------------------------------


def output_schema() -> Any:  # -> pa.Schema
    """The arrow schema of latest.parquet (`OUTPUT_COLUMNS`, typed)."""
    import pyarrow as pa

    return pa.schema([(USER_ID, pa.string()), (ITEM_ID, pa.string()), (RANK, pa.int32()), (SCORE, pa.float32())])


class RecommendationWriter:
    """Streams top-K chunks into latest.parquet, swapped into place atomically, with the run's statistics.

    The one writer of the recommendations file: the single-process path (`write_recommendations`)
    and the Dask driver (`mmrec.distributed.scoring`) both feed it chunks in user order, so both
    write the same rows, row groups and summary.

        with RecommendationWriter(model, path, k) as out:
            for users, idx, val in chunks:
                out.write(users, idx, val)
        summary = out.summary(seconds)

    A failure inside the `with` block leaves the previous file untouched (`mmrec.io.atomic_path`).
    """

    def __init__(self, model: Recommender, path: str | Path, k: int) -> None:
        assert model.item_ids is not None
        self.model, self.path, self.k = model, Path(path), k
        self.stats = _Stats(n_items=len(model.item_ids), rng=np.random.default_rng(0))
        self.schema = output_schema()
        self._stack: ExitStack | None = None
        self._writer: Any = None

    def __enter__(self) -> RecommendationWriter:
        import pyarrow.parquet as pq

        from mmrec.io import atomic_path

        with ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(self.path))
            self._writer = stack.enter_context(pq.ParquetWriter(tmp, self.schema))
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: Any) -> bool | None:
        assert self._stack is not None
        stack, self._stack, self._writer = self._stack, None, None
        return stack.__exit__(*exc)

    def write(self, users: np.ndarray, idx: np.ndarray, val: np.ndarray) -> None:
        """One chunk: (B,) user rows, (B, k) item indices and scores; -inf entries are dropped."""
        import pyarrow as pa

        if self._writer is None:
            raise RuntimeError("RecommendationWriter.write outside its `with` block")
        self.stats.add(idx, val, self.k)
        table = pa.Table.from_pandas(chunk_frame(self.model, users, idx, val), schema=self.schema, preserve_index=False)
        self._writer.write_table(table)

    def summary(self, seconds: float, **extra: Any) -> dict[str, Any]:
        """`run_summary` of what was written."""
        return run_summary(self.stats, self.model, self.k, seconds, self.path, **extra)


def write_recommendations(
    model: Recommender,
    path: str | Path,
    k: int = DEFAULT_K,
    batch_size: int = 1024,
    exclude: sp.csr_matrix | None = None,
    users: np.ndarray | None = None,
    fail_after_batches: int | None = None,
) -> dict[str, Any]:
    """Top-K for every user streamed to a parquet file, swapped into place atomically.

    Args:
        path: the output parquet (its previous content survives any failure).
        fail_after_batches: testing hook that raises after that many chunks were written, to
            prove a crash keeps the previous file.

    Returns:
        The summary: users, users_covered, users_full, rows, items_recommended,
        catalogue_coverage, score/top1_score distributions, seconds, users_per_second, path.
    """
    import torch  # noqa: F401 - imported before the clock starts: the runtime reports scoring, not imports

    assert model.item_ids is not None
    start = time.perf_counter()
    with RecommendationWriter(model, path, k) as out:
        for n, (batch, idx, val) in enumerate(iter_topk(model, users, k, batch_size, exclude)):
            if fail_after_batches is not None and n >= fail_after_batches:
                raise RuntimeError(f"simulated crash after {n} batches (fail_after_batches)")
            out.write(batch, idx, val)
    return out.summary(time.perf_counter() - start)


def run_summary(stats: _Stats, model: Recommender, k: int, seconds: float, path: Path, **extra: Any) -> dict[str, Any]:
    """The summary of one batch-scoring run (single process or Dask), as the nightly job reports it."""
    assert model.item_ids is not None
    out = stats.summary()
    out.update(
        k=k,
        n_items=len(model.item_ids),
        seconds=round(seconds, 3),
        users_per_second=round(out["users"] / seconds, 1) if seconds > 0 else None,
        path=str(path),
        **extra,
    )
    return out


def recommend_for_ids(
    model: Recommender,
    user_ids: Sequence[str],
    k: int = DEFAULT_K,
    exclude: sp.csr_matrix | None = None,
    batch_size: int = 1024,
    exclude_seen: bool = True,
) -> pd.DataFrame:
    """Top-K for the given user ids; ids the model never saw get the most popular items.

    Args:
        exclude: items to mask per user over the model's index; None with `exclude_seen`
            masks the model's training items.

    Returns:
        (user_id, item_id, rank, score) in the order of `user_ids` (duplicates collapsed).
    """
    assert model.user_ids is not None and model.item_ids is not None
    wanted = list(dict.fromkeys(str(u) for u in user_ids))
    rows = pd.Index(np.asarray(model.user_ids, dtype=str)).get_indexer(wanted)
    known = rows >= 0
    if exclude is None and exclude_seen:
        exclude = model.train_matrix
    frames = []
    if known.any():
        for batch, idx, val in iter_topk(model, rows[known], k, batch_size, exclude):
            frames.append(chunk_frame(model, batch, idx, val))
    unknown = [u for u, ok in zip(wanted, known, strict=True) if not ok]
    if unknown:
        from mmrec.models.training import popularity_scores

        train = model.train_matrix
        pop = popularity_scores(train) if train is not None else np.zeros(len(model.item_ids), np.float32)
        cold_user_scores = getattr(model, "cold_user_scores", None)  # a StrategyScorer applies its filters
        if cold_user_scores is not None:
            pop = cold_user_scores()
        idx, val = ranking.topk(pop[None, :], k)
        keep = np.isfinite(val[0])
        idx, val = idx[:, keep], val[:, keep]
        item_ids = np.asarray(model.item_ids, dtype=object)[idx[0]]
        for u in unknown:
            frames.append(
                pd.DataFrame({USER_ID: u, ITEM_ID: item_ids, RANK: np.arange(1, len(item_ids) + 1, dtype=np.int32), SCORE: val[0]})
            )
    if not frames:
        return pd.DataFrame({c: [] for c in OUTPUT_COLUMNS})
    out = pd.concat(frames, ignore_index=True)
    order = {u: i for i, u in enumerate(wanted)}
    out["_o"] = out[USER_ID].map(order)
    return out.sort_values(["_o", RANK], kind="stable").drop(columns="_o").reset_index(drop=True)


def read_user_ids(path: str | Path) -> list[str]:
    """User ids from a file: one per line, or a CSV/TSV/parquet with a `user_id` column."""
    return read_ids(path, USER_ID, what="users")


def read_ids(path: str | Path, column: str, what: str = "ids") -> list[str]:
    """Ids from a file: one per line, or a CSV/TSV/parquet with a `column` column."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: {what} file not found (one id per line, or a table with a {column!r} column)")
    if p.suffix == ".parquet":
        df = pd.read_parquet(p)
    else:
        first = p.read_text(encoding="utf-8").splitlines()[:1]
        sep = "\t" if first and "\t" in first[0] else ","
        if first and column in [c.strip() for c in first[0].split(sep)]:
            return _ids_from_table(p, sep, column)
        else:
            return [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if column not in df.columns:
        raise DataError(f"{p}: no {column!r} column; columns are {list(df.columns)}")
    return df[column].astype(str).tolist()


def _ids_from_table(p: Path, sep: str, column: str) -> list[str]:
    """The `column` of a delimited file, read line by line: a bad line fails loudly, naming it.

    pandas' reader would let one stray quote swallow the following lines (those users would
    silently get no recommendations); the line-accounting reader stops at nothing and reports.
    """
    from mmrec.data.reader import Reject, read_delimited_records

    header, records, _ = read_delimited_records(p, "utf-8", sep)
    pos = header.index(column)
    ids: list[str] = []
    bad: list[Reject] = []
    for _, _, fields in records:
        if isinstance(fields, Reject):
            bad.append(fields)
        else:
            ids.append(fields[pos].strip())
    if bad:
        raise DataError(
            f"{p}: {len(bad)} unreadable line(s), e.g. line {bad[0].line}: {bad[0].reason}; fix them and run again"
        )
    return [i for i in ids if i]


def summary_markdown(summary: dict[str, Any]) -> str:
    """The nightly run's summary as markdown (the Prefect artifact and the report file)."""
    model = summary.get("model", {})
    how = ""
    if summary.get("strategy", "model") != "model":
        how += f", strategy `{summary['strategy']}`"
    if summary.get("threshold") is not None:
        how += f", scores >= {summary['threshold']}"
    lines = [
        f"# Recommendations: {summary.get('dataset', '')}",
        "",
        f"Model **{model.get('name', '?')}** (registry `{model.get('registered_model', '-')}` version "
        f"{model.get('version', '-')}, alias `{model.get('alias', '-')}`), top-{summary['k']} per user{how}.",
        "",
        "| users | covered | with full top-K | rows | items recommended | catalogue coverage | seconds | users/s |",
        "|---|---|---|---|---|---|---|---|",
        f"| {summary['users']} | {summary['users_covered']} | {summary['users_full']} | {summary['rows']} | "
        f"{summary['items_recommended']} / {summary['n_items']} | {summary['catalogue_coverage']:.3f} | "
        f"{summary['seconds']:.2f} | {summary['users_per_second']} |",
        "",
    ]
    for key, title in (("score", "all scores"), ("top1_score", "rank-1 scores")):
        d = summary.get(key) or {}
        if d:
            lines += [f"Score distribution ({title}):", "", "| " + " | ".join(d) + " |", "|" + "---|" * len(d)]
            lines += ["| " + " | ".join(f"{v:.4g}" for v in d.values()) + " |", ""]
    lines.append(f"Written to `{summary['path']}`.")
    return "\n".join(lines)


# -- the stage ----------------------------------------------------------------------------------


def strategy_scorer(ctx: StageContext, model: Recommender, rp: RecommendParams, history: sp.csr_matrix | None = None) -> Any:
    """What to rank with under `rp` (mmrec/generation.py): the model itself with the defaults.

    Content features are read from the dataset's extracted features, aligned with the model's
    item index; relative filter files are resolved against the workspace.
    """
    from mmrec.generation import build_scorer
    from mmrec.models.features import load_item_features

    assert model.item_ids is not None

    def load_features(modalities: list[str] | None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        return load_item_features(ctx.paths, ctx.params.extract, model.item_ids, modalities)  # type: ignore[arg-type]

    return build_scorer(model, rp, history=history, load_features=load_features, base_dir=ctx.workspace)


def run_recommend(
    ctx: StageContext,
    k: int | None = None,
    model: Recommender | None = None,
    model_info: dict[str, Any] | None = None,
    fail_after_batches: int | None = None,
    client: Any = None,
) -> dict[str, Any]:
    """The nightly job: the registry's champion's top-K for every user, to latest.parquet.

    Args:
        model: use this model instead of loading the champion (tests, ad-hoc runs).
        k: overrides `recommend.k`.
        client: a `distributed.Client`: score user blocks on its workers
            (`mmrec.distributed.scoring`, same file as without it); None scores in this process.

    Returns:
        The summary (also written to reports/<name>/recommendations.json and .md).

    Raises:
        ModelError: no champion registered (the message names the command that makes one).
    """
    from mmrec.io import write_json, write_text

    rp = recommend_params(ctx.params)
    k = int(k or rp.k)
    if model is None:
        from mmrec.tracking import load_champion

        model, model_info = load_champion(ctx)
    interactions = None
    validated = ctx.paths.validated_table("interactions")
    if (rp.exclude_seen or rp.strategy != "model") and validated.is_file():
        interactions = pd.read_parquet(validated, columns=[USER_ID, ITEM_ID])
    history = history_matrix(model, interactions)
    exclude = history if rp.exclude_seen else None
    scorer = strategy_scorer(ctx, model, rp, history)
    log.info(
        "recommending top-%d (%s) for %d users over %d items",
        k, rp.strategy, len(model.user_ids) if model.user_ids is not None else 0, model.n_items,
    )
    # a hybrid holds each component's chunk of scores besides the blend: shrink the chunk to match
    parts = 1 + len([w for w in rp.hybrid.weights.values() if w > 0]) if rp.strategy == "hybrid" else 1
    chunk = max(1, rp.chunk_users(model.n_items) // parts)
    if client is not None:
        from mmrec.distributed.scoring import DEFAULT_BLOCK_USERS, write_recommendations_dask

        block = getattr(getattr(ctx.params, "orchestrate", None), "score_block_users", DEFAULT_BLOCK_USERS)
        summary = write_recommendations_dask(scorer, ctx.paths.recommendations, client, k=k, batch_size=chunk,
                                             exclude=exclude, block_users=block)
    else:
        summary = write_recommendations(
            scorer, ctx.paths.recommendations, k=k, batch_size=chunk,
            exclude=exclude, fail_after_batches=fail_after_batches,
        )
    summary = {
        "dataset": ctx.spec.name,
        "model": {"name": model.name, **(model_info or {})},
        "strategy": rp.strategy,
        **({"threshold": rp.threshold} if rp.threshold is not None else {}),
        **summary,
    }
    write_json(ctx.paths.reports / "recommendations.json", summary)
    write_text(ctx.paths.reports / "recommendations.md", summary_markdown(summary))
    log.info(
        "wrote %d rows for %d users (coverage %.3f) in %.1fs",
        summary["rows"],
        summary["users_covered"],
        summary["catalogue_coverage"],
        summary["seconds"],
    )
    return summary
