"""The one writer of `data/<name>/recommendations/latest.parquet`, and the run's statistics.

Results are streamed (user_id, item_id, rank 1..K, score) through `mmrec.io.atomic_path`: the new
file is written aside and renamed over the old one only when complete, so a crash mid-run keeps
yesterday's recommendations. The single-process path (`write_recommendations`) and the Dask
driver (`mmrec.distributed.scoring`) both feed `RecommendationWriter`.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from mmrec.constants import DEFAULT_K, ITEM_ID, USER_ID
from mmrec.io import atomic_path
from mmrec.recommend.topk import RANK, SCORE, chunk_frame, iter_topk

if TYPE_CHECKING:
    from mmrec.models.base import Recommender

#: scores kept for the distribution summary; beyond it a uniform sample is kept (bounded memory)
_SCORE_SAMPLE = 200_000


@dataclass
class RunStats:
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
            return {
                **{key: round(float(v), 6) for key, v in zip(keys, q, strict=True)},
                "mean": round(float(x.mean()), 6),
            }

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
        self.stats = RunStats(n_items=len(model.item_ids), rng=np.random.default_rng(0))
        self.schema = output_schema()
        self._stack: ExitStack | None = None
        self._writer: Any = None

    def __enter__(self) -> RecommendationWriter:
        import pyarrow.parquet as pq

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


def run_summary(
    stats: RunStats, model: Recommender, k: int, seconds: float, path: Path, **extra: Any
) -> dict[str, Any]:
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
