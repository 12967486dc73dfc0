"""Analyses on top of the evaluation protocol: slices, references, paired confidence intervals.

A mean Recall@20 answers "how good on average"; the questions a model comparison has to answer
are narrower: is the gain over the reference real or resampling noise (paired bootstrap over
users), who gets it (sparse users, cold items), is it better than chance (random ranking of the
cold candidates, exact and sampled), and are cold rankings personal or the same list for everyone
(rank correlation between users). Everything here works on `UserMetrics` or a score function and
is deterministic given its seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from mmrec.errors import ConfigError
from mmrec.evaluate import ScoreFn, UserMetrics
from mmrec.metrics import METRICS, expected_random_at_k

#: the per-epoch validation column every epoch-based model logs (mmrec.models.training)
CURVE_METRIC = "valid_recall@20"


def sparse_user_mask(train: sp.csr_matrix, users: np.ndarray, max_interactions: int) -> np.ndarray:
    """True for each of `users` with at most `max_interactions` training interactions.

    Users with little history are where content should help most and where collaborative
    signal is thinnest; the slice is defined on training counts only, never on the target.
    """
    if max_interactions < 0:
        raise ConfigError(f"evaluate.sparse_max_train must be >= 0, got {max_interactions}")
    counts = np.diff(sp.csr_matrix(train).indptr)
    return counts[np.asarray(users, dtype=np.int64)] <= max_interactions


def bootstrap_ratio(
    values: np.ndarray,
    reference: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, float | int | None]:
    """Ratio of means `mean(values) / mean(reference)` with a paired percentile bootstrap CI.

    Users are resampled with replacement and the *same* users are used for both models, so the
    interval reflects how consistently one model beats the other per user, not the (much larger)
    spread between users. Resamples whose reference mean is 0 are dropped.

    Args:
        values, reference: per-user metric values of the model and of the reference, aligned.
        n_resamples: bootstrap resamples (1000 gives stable 95% percentile bounds).
        seed: the resampling seed; the same seed gives the same interval.
        confidence: the interval's coverage, e.g. 0.95.

    Returns:
        `{"ratio", "low", "high", "users", "resamples", "confidence"}`; ratio/low/high are None
        when the reference mean is 0 (no ratio exists).
    """
    a = np.asarray(values, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"values and reference must be aligned 1-D per-user vectors, got {a.shape} and {b.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    n = len(a)
    out: dict[str, float | int | None] = {
        "ratio": None,
        "low": None,
        "high": None,
        "users": n,
        "resamples": n_resamples,
        "confidence": confidence,
    }
    if n == 0 or b.mean() == 0:
        return out
    rng = np.random.default_rng(seed)
    ratios = np.empty(n_resamples)
    chunk = max(1, 4_000_000 // n)  # bound the (chunk, n) index matrix to ~32 MB
    for start in range(0, n_resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_resamples - start), n))
        num, den = a[idx].mean(axis=1), b[idx].mean(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios[start : start + len(idx)] = np.where(den > 0, num / den, np.nan)
    tail = (1 - confidence) / 2 * 100
    low, high = np.nanpercentile(ratios, [tail, 100 - tail])
    out.update(ratio=float(a.mean() / b.mean()), low=float(low), high=float(high))
    return out


def compare_to_reference(
    per_user: Mapping[str, UserMetrics],
    reference: str,
    metrics: Sequence[str] = ("recall@20", "ndcg@20"),
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Each model's ratio to `reference` on `metrics`, with paired bootstrap CIs over users.

    Returns:
        `{"reference", "confidence", "resamples", "models": {name: {metric: bootstrap_ratio}}}`,
        or the same with `"skipped"` naming why when the reference was not evaluated.
    """
    out: dict[str, Any] = {"reference": reference, "confidence": confidence, "resamples": n_resamples, "models": {}}
    if reference not in per_user:
        out["skipped"] = f"reference model {reference!r} was not evaluated (evaluate.reference / --models)"
        return out
    ref = per_user[reference]
    for name, um in per_user.items():
        if name == reference:
            continue
        if not np.array_equal(um.users, ref.users):
            raise ValueError(f"{name} and {reference} were evaluated on different users; the comparison must be paired")
        out["models"][name] = {
            m: bootstrap_ratio(um.values[m], ref.values[m], n_resamples, seed, confidence) for m in metrics
        }
    return out


def random_score_fn(n_items: int, seed: int = 0) -> ScoreFn:
    """A uniformly random scorer, seeded per user so results do not depend on batching."""

    def score(users: np.ndarray) -> np.ndarray:
        out = np.empty((len(users), n_items), dtype=np.float32)
        for row, u in enumerate(np.asarray(users, dtype=np.int64)):
            out[row] = np.random.default_rng([seed, int(u)]).random(n_items, dtype=np.float32)
        return out

    return score


def expected_random(um: UserMetrics, ks: Sequence[int]) -> dict[str, float]:
    """Exact expected metrics of uniformly random ranking, for the users and targets of `um`.

    Recall@K is K / n_candidates for everyone; the others depend on each user's target size.
    """
    out: dict[str, float] = {}
    if len(um.users) == 0:
        return out
    for k in ks:
        exp = expected_random_at_k(um.n_relevant, um.n_items, k)
        out.update({f"{m}@{k}": float(exp[m].mean()) for m in METRICS})
    out["candidates"] = int(um.n_items)
    out["users"] = len(um.users)
    return out


def lift(model: Mapping[str, float], reference: Mapping[str, float], keys: Sequence[str]) -> dict[str, float | None]:
    """`model[key] / reference[key]` per key (None where the reference is 0 or missing)."""
    out: dict[str, float | None] = {}
    for key in keys:
        ref = reference.get(key)
        out[key] = float(model[key]) / float(ref) if ref and key in model else None
    return out


def rank_personalisation(
    score_fn: ScoreFn,
    users: np.ndarray,
    candidates: np.ndarray,
    pairs: int = 200,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, float | int | None]:
    """How different users' rankings of `candidates` are: mean Spearman rho over user pairs.

    1 means everyone gets the same order (e.g. content-predicted popularity); about 0 means the
    orders are unrelated. A user whose scores are all equal has no order: the pair counts as 1
    (the same non-ranking for everyone), which is the conservative reading for personalisation.

    Returns:
        `{"mean_spearman", "pairs", "users", "constant_share"}`; mean_spearman is None with fewer
        than 2 users. constant_share is the share of sampled users whose candidate scores are all
        equal: their lists are ordered by the evaluation's tie-break (item index), not by the model.
    """
    from scipy.stats import rankdata

    users = np.unique(np.asarray(users, dtype=np.int64))
    candidates = np.asarray(candidates, dtype=np.int64)
    out: dict[str, float | int | None] = {
        "mean_spearman": None,
        "pairs": 0,
        "users": len(users),
        "constant_share": None,
    }
    if len(users) < 2 or len(candidates) < 2 or pairs < 1:
        return out
    rng = np.random.default_rng(seed)
    a = rng.choice(users, pairs)
    offset = rng.integers(1, len(users), pairs)  # b != a: a user agrees with themselves trivially
    b = users[(np.searchsorted(users, a) + offset) % len(users)]
    needed = np.unique(np.concatenate([a, b]))
    ranks = np.empty((len(needed), len(candidates)))
    constant = np.zeros(len(needed), dtype=bool)
    for start in range(0, len(needed), batch_size):
        batch = needed[start : start + batch_size]
        scores = np.asarray(score_fn(batch), dtype=np.float64)[:, candidates]
        ranks[start : start + len(batch)] = rankdata(scores, axis=1)  # average ranks for ties
        constant[start : start + len(batch)] = np.ptp(scores, axis=1) == 0
    row = {u: i for i, u in enumerate(needed)}
    ra, rb = ranks[[row[u] for u in a]], ranks[[row[u] for u in b]]
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(den > 0, (ra * rb).sum(axis=1) / den, 1.0)
    out.update(mean_spearman=float(rho.mean()), pairs=int(pairs), constant_share=float(constant.mean()))
    return out


def learning_curve(history: Sequence[Mapping[str, Any]], metric: str = CURVE_METRIC) -> list[tuple[int, float]]:
    """(epoch, value) of every epoch where `metric` was evaluated (models log it every few epochs)."""
    return [(int(h["epoch"]), float(h[metric])) for h in history if metric in h and "epoch" in h]


def seconds_per_epoch(history: Sequence[Mapping[str, Any]], train_seconds: float, epochs: int) -> float:
    """Mean training seconds of one epoch (validation excluded where the history separates it).

    Closed-form models have no per-epoch log; their one "epoch" is the whole fit.
    """
    secs = [float(h["seconds"]) for h in history if "seconds" in h]
    if secs:
        return float(np.mean(secs))
    return float(train_seconds) / max(int(epochs), 1)


def compact_history(history: Sequence[Mapping[str, Any]], digits: int = 6) -> list[dict[str, float]]:
    """The per-epoch log with floats rounded, small enough to keep in metrics.json."""
    return [{k: (round(float(v), digits) if isinstance(v, float) else v) for k, v in h.items()} for h in history]


def is_multimodal(entry: Mapping[str, Any]) -> bool:
    """A metrics.json model entry of a model that takes modality features (`modalities` param)."""
    return bool((entry.get("params") or {}).get("modalities"))


def quality_targets(report: Mapping[str, Any], cold_lift_target: float) -> dict[str, Any]:
    """Check the multimodal quality targets on a metrics dict, as data the report can print.

    - warm test: the best multimodal model (by the validation selection metric) against the
      reference on Recall@20 and NDCG@20: `not_worse` when neither CI lies wholly below 1,
      `better` when both lie wholly above 1;
    - sparse users: the same model `better` on the sparse slice (Recall@20 CI above 1);
    - cold slice: each multimodal model's Recall@20 over random ranking against `cold_lift_target`.

    Returns:
        the checks, or `{"skipped": reason}` without a multimodal model or reference comparison.
    """
    models = report.get("models", {})
    mm = {n: e for n, e in models.items() if is_multimodal(e)}
    comp = report.get("comparisons", {})
    if not mm:
        return {"skipped": "no multimodal model (one taking `modalities`) was evaluated"}
    if comp.get("skipped") or "test" not in comp:
        return {"skipped": comp.get("skipped", "no comparison with the reference model")}
    metric = report.get("selection_metric", "recall@20")
    best = max(mm, key=lambda n: mm[n]["valid"].get(metric, float("-inf")))
    out: dict[str, Any] = {"reference": comp["reference"], "best_multimodal": best}
    warm = comp["test"].get(best, {})
    if warm:
        highs = [r["high"] for r in warm.values() if r.get("ratio") is not None]
        lows = [r["low"] for r in warm.values() if r.get("ratio") is not None]
        out["warm"] = {
            "ratios": {m: r.get("ratio") for m, r in warm.items()},
            "not_worse": bool(highs) and min(highs) >= 1.0,
            "better": bool(lows) and min(lows) > 1.0,
        }
    sparse = comp.get("sparse", {}).get(best, {})
    if sparse:
        key = next(iter(sparse))
        r = sparse[key]
        out["sparse"] = {"metric": key, "ratio": r.get("ratio"), "better": r.get("low") is not None and r["low"] > 1.0}
    lifts = {n: e.get("cold_random_lift", {}).get("recall@20") for n, e in mm.items() if "cold_random_lift" in e}
    lifts = {n: v for n, v in lifts.items() if v is not None}
    if lifts:
        top = max(lifts, key=lambda n: lifts[n])
        out["cold"] = {"target": cold_lift_target, "lifts": lifts, "best": top, "met": lifts[top] >= cold_lift_target}
    out["seconds_per_epoch"] = mm[best].get("seconds_per_epoch")
    return out
