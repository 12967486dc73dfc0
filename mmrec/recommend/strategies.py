"""Generation strategies for batch recommendation: what scores the users x items grid.

`mmrec.recommend.topk` ranks whatever `score(users)` returns, chunk by chunk, masks seen items and
keeps the top K. A `StrategyScorer` stands in for the model there: it keeps the model's user and
item index and training matrix, and computes the scores of the configured strategy:

- `model`: the trained model's own scores (the default; the model is then used directly and
  nothing here runs, so the output is exactly what it was before strategies existed).
- `popularity`: training interaction counts per item, the same for every user.
- `content`: the mean similarity of a candidate item to the items of the user's history, in
  each modality's feature space under the chosen metric, fused across modalities by a weighted
  mean over the modalities defined for the pair (the rule of
  `mmrec.models.content_knn.fused_similarity`: a missing poster means "compare on text", not
  "similarity 0"). Items without a vector in any used modality get no content score and are
  never recommended by it; users without history get popularity.
- `hybrid`: a weighted sum of the other strategies' scores after per-user normalisation, divided
  by the sum of the weights (so scores lie in [0, 1]).

Hybrid normalisation is per user (each row of a chunk), either `rank` (default) or `minmax`:
- rank: an item's score becomes its average rank among the user's scorable items / their number
  (best item 1, worst ~0). The components live on unrelated scales (popularity counts are
  heavy-tailed, model scores unbounded, centred-content cosines compressed near 0), and a
  single extreme value (the blockbuster's count) would squash every other item under min-max;
  ranks make a weight mean the same thing for every component and every user. It is the
  reciprocal-rank-fusion family of blending, robust and parameter-free.
- minmax: (s - min) / (max - min) per user; keeps the gaps between scores (a component that is
  very sure about one item can carry it), at the cost of the outlier sensitivity above.
Items a component cannot score (no content vector) count as its worst (0) in the blend. Cost:
rank sorts each user's row (O(n log n) per user and component), minmax is one linear pass.

After the strategy, in order: business filters (excluded items and a candidate restriction) set
disallowed items to -inf, then a similarity `threshold` drops scores below it, so a user may get
fewer than K recommendations (or none) when few items pass. Seen-item exclusion happens in
`mmrec.recommend.topk` as before.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from mmrec.constants import ITEM_ID
from mmrec.errors import ConfigError, DataError, ModelError
from mmrec.models.item_features import centred_unit
from mmrec.models.training import popularity_scores
from mmrec.params.recommend import check_hybrid_weights, check_strategy
from mmrec.recommend.id_files import read_ids
from mmrec.retrieval import DEFAULT_BLOCK_MB, check_metric, prepare, rows_per_block, similarity_scores

if TYPE_CHECKING:
    from mmrec.models.base import Recommender
    from mmrec.params.recommend import RecommendParams

log = logging.getLogger(__name__)

# -- per-user normalisation ---------------------------------------------------------------------


def rank_normalise(scores: np.ndarray) -> np.ndarray:
    """Per row: average rank among the finite entries / their number (best 1); non-finite 0."""
    from scipy.stats import rankdata

    s = np.where(np.isfinite(scores), scores, -np.inf).astype(np.float64)
    finite = np.isfinite(s)
    n_fin = finite.sum(axis=1, keepdims=True)
    ranks = rankdata(s, method="average", axis=1) - (s.shape[1] - n_fin)  # non-finite ranks first
    out = np.where(finite, ranks / np.maximum(n_fin, 1), 0.0)
    return out.astype(np.float32)


def minmax_normalise(scores: np.ndarray) -> np.ndarray:
    """Per row: (s - min) / (max - min) over the finite entries; non-finite and constant rows 0."""
    finite = np.isfinite(scores)
    s = np.where(finite, scores, np.nan).astype(np.float64)
    any_fin = finite.any(axis=1, keepdims=True)
    lo = np.where(any_fin, np.nanmin(np.where(any_fin, s, 0.0), axis=1, keepdims=True), 0.0)
    hi = np.where(any_fin, np.nanmax(np.where(any_fin, s, 0.0), axis=1, keepdims=True), 0.0)
    span = hi - lo
    out = np.divide(s - lo, span, out=np.zeros_like(s), where=(span > 0) & finite)
    return np.where(finite, out, 0.0).astype(np.float32)


NORMALISERS = {"rank": rank_normalise, "minmax": minmax_normalise}


# -- content ----------------------------------------------------------------------------------


class ContentScores:
    """Mean similarity of every item to each user's history items, fused over modalities.

    For cosine, dot and pearson the mean over the history is linear, so it is computed through
    the user's mean (prepared) history vector: O(B x n_items x d) per chunk. Euclidean is not
    linear: the (n_items x history-items) distances are computed in blocks of at most
    `max_block_mb`, O(n_items x |union of the chunk's histories| x d) per chunk.

    Args:
        features, masks: modality -> (n_items, d) matrix and (n_items,) presence mask, aligned
            with the model's item index (what `load_item_features` returns).
        metric: cosine | dot | euclidean | pearson.
        weights: per-modality weight (unnamed modalities weigh 1; 0 drops one).
        centre: first mean-centre each modality over the items that have it and L2-normalise
            (`mmrec.models.item_features.centred_unit`, what content_knn does): removes the direction
            every vector of an encoder shares, which otherwise dominates cosines. The vectors
            are then unit length, so dot ranks like cosine; use centre=False to apply the metric
            to the raw encoder vectors.
    """

    def __init__(
        self,
        features: Mapping[str, np.ndarray],
        masks: Mapping[str, np.ndarray],
        metric: str = "cosine",
        weights: Mapping[str, float] | None = None,
        centre: bool = True,
        max_block_mb: int = DEFAULT_BLOCK_MB,
    ) -> None:
        self.metric = check_metric(metric)
        weights = dict(weights or {})
        stray = sorted(set(weights) - set(features))
        if stray:
            raise ConfigError(
                f"recommend.content.weights name {stray}, which have no features; available: {sorted(features)}"
            )
        self.max_block_mb = max_block_mb
        self.spaces: list[tuple[np.ndarray, np.ndarray, float]] = []
        for modality, matrix in features.items():
            w = float(weights.get(modality, 1.0))
            if w < 0:
                raise ConfigError(f"recommend.content.weights.{modality} must be >= 0, got {w}")
            if w == 0:
                continue
            x = np.asarray(matrix, dtype=np.float32)
            # presence: the given mask, and never a row without finite values (prepare's rule)
            mask = prepare(x, "dot", masks.get(modality))[1]
            if centre:
                x = centred_unit(np.where(mask[:, None], x, 0.0), mask)
            prepared, present = prepare(x, self.metric, mask)
            self.spaces.append((prepared, present, w))
        if not self.spaces:
            raise ConfigError(f"content strategy: no modality with a weight > 0 among {sorted(features)}")
        self.n_items = self.spaces[0][0].shape[0]

    def score(self, history: sp.csr_matrix) -> np.ndarray:
        """(B, n_items) fused mean similarity to the history rows; NaN where undefined."""
        h = sp.csr_matrix(history, dtype=np.float32)
        h.data[:] = 1.0  # a history is a set of items: repeats and weights do not count twice
        num = np.zeros((h.shape[0], self.n_items), np.float32)
        den = np.zeros_like(num)
        for x, present, w in self.spaces:
            hm = h @ sp.diags(present.astype(np.float32))  # only history items with this modality
            counts = np.asarray(hm.sum(axis=1), dtype=np.float32).ravel()
            mean_sim = self._mean_similarity(hm, x, present, counts)  # (B, n)
            defined = (counts > 0)[:, None] & present[None, :]
            num += np.where(defined, w * mean_sim, 0.0)
            den += w * defined
        out = np.full_like(num, np.nan)
        np.divide(num, den, out=out, where=den > 0)
        return out

    def _mean_similarity(self, hm: sp.csr_matrix, x: np.ndarray, present: np.ndarray, counts: np.ndarray) -> np.ndarray:
        inv = np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)
        if self.metric != "euclidean":
            profile = sp.diags(inv) @ hm @ x  # (B, d): the mean prepared history vector
            return np.asarray(profile @ x.T, dtype=np.float32)
        out = np.zeros((hm.shape[0], self.n_items), np.float32)
        cols = np.unique(hm.indices)  # history items of this chunk
        if not len(cols):
            return out
        x_sq = np.einsum("ij,ij->i", x, x)
        step = rows_per_block(self.n_items, self.max_block_mb)
        for start in range(0, len(cols), step):
            c = cols[start : start + step]
            sims = similarity_scores(x[c], x, "euclidean", x_sq)  # (len(c), n): -distance from history item
            out += np.asarray(hm[:, c] @ sims, dtype=np.float32)
        return out * inv[:, None]


# -- business filters ---------------------------------------------------------------------------


def read_item_ids(path: str | Path) -> list[str]:
    """Item ids from a file: one per line, or a CSV/TSV/parquet with an `item_id` column."""
    return read_ids(path, ITEM_ID, what="items")


def allowed_items(
    item_ids: Sequence[str] | np.ndarray,
    exclude: Iterable[str] = (),
    candidates: Iterable[str] | None = None,
    source: str = "recommend",
) -> np.ndarray | None:
    """(n_items,) bool of the items that may be recommended, or None when everything may.

    Ids not in the model's index are ignored (with a log line): exclusion lists go stale and a
    candidate list may name items the model never saw. A candidate list with *no* known id is
    an error, since it would silently recommend nothing.
    """
    index = pd.Index(np.asarray(item_ids, dtype=str))
    excl = [str(i) for i in exclude]
    if not excl and candidates is None:
        return None
    ok = np.ones(len(index), dtype=bool)
    if excl:
        pos = index.get_indexer(excl)
        if (pos < 0).any():
            log.info(
                "%s: %d of %d excluded item ids are not in the model's index (ignored)",
                source,
                int((pos < 0).sum()),
                len(excl),
            )
        ok[pos[pos >= 0]] = False
    if candidates is not None:
        cand = [str(i) for i in candidates]
        pos = index.get_indexer(cand)
        if not (pos >= 0).any():
            raise DataError(
                f"{source}: none of the {len(cand)} candidate item ids is in the model's item index "
                f"(e.g. {cand[:3]}); check the candidates list"
            )
        if (pos < 0).any():
            log.warning(
                "%s: %d of %d candidate item ids are not in the model's index (ignored)",
                source,
                int((pos < 0).sum()),
                len(cand),
            )
        only = np.zeros(len(index), dtype=bool)
        only[pos[pos >= 0]] = True
        ok &= only
    return ok


# -- the scorer ---------------------------------------------------------------------------------


class StrategyScorer:
    """The configured strategy behind the slice of the Recommender interface `mmrec.recommend` uses.

    Attributes mirrored from the model: name, user_ids, item_ids, train_matrix, n_items.

    Args:
        model: the fitted model (its index and training matrix; its scores for model/hybrid).
        strategy: model | popularity | content | hybrid.
        history: (n_users, n_items) what each user interacted with (content's history); the
            model's training matrix when None.
        content: a ContentScores (needed by content, and by hybrid when it weighs content).
        hybrid_weights, normalise: the blend (see the module docstring).
        allowed: (n_items,) bool business filter, None = every item.
        threshold: scores below it are dropped (None: keep the top K whatever they score).
    """

    def __init__(
        self,
        model: Recommender,
        strategy: str = "model",
        history: sp.csr_matrix | None = None,
        content: ContentScores | None = None,
        hybrid_weights: Mapping[str, float] | None = None,
        normalise: str = "rank",
        allowed: np.ndarray | None = None,
        threshold: float | None = None,
    ) -> None:
        self.model = model
        self.strategy = check_strategy(strategy)
        if model.item_ids is None or model.user_ids is None:
            raise ModelError(f"model {model.name!r} is not fitted; nothing to recommend from")
        self.name = (
            model.name if strategy == "model" else f"{strategy}({model.name})" if strategy == "hybrid" else strategy
        )
        self.user_ids, self.item_ids, self.train_matrix = model.user_ids, model.item_ids, model.train_matrix
        n_users, n_items = len(model.user_ids), len(model.item_ids)
        self.history = sp.csr_matrix(history if history is not None else model.train_matrix, dtype=np.float32)
        if self.history.shape != (n_users, n_items):
            raise DataError(
                f"history matrix shape {self.history.shape} does not match the model's index {(n_users, n_items)}"
            )
        self.popularity = (
            popularity_scores(model.train_matrix) if model.train_matrix is not None else np.zeros(n_items, np.float32)
        )
        if normalise not in NORMALISERS:
            raise ConfigError(f"unknown hybrid normalisation {normalise!r}; expected one of {list(NORMALISERS)}")
        self.normalise = normalise
        self.weights = check_hybrid_weights(hybrid_weights or {"model": 1.0}) if strategy == "hybrid" else {}
        needs_content = strategy == "content" or self.weights.get("content", 0) > 0
        if needs_content and content is None:
            raise ConfigError(f"the {strategy} strategy needs item features (recommend.content); none were given")
        if content is not None and content.n_items != n_items:
            raise DataError(f"content features cover {content.n_items} items, the model has {n_items}")
        self.content = content
        if allowed is not None and np.asarray(allowed).shape != (n_items,):
            raise DataError(f"allowed-items mask has shape {np.asarray(allowed).shape}, expected ({n_items},)")
        self.allowed = None if allowed is None else np.asarray(allowed, dtype=bool)
        self.threshold = threshold

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def _component(self, name: str, users: np.ndarray) -> np.ndarray:
        if name == "model":
            return np.array(self.model.score(users), dtype=np.float32, copy=True)
        if name == "popularity":
            return np.repeat(self.popularity[None, :], len(users), axis=0)
        assert self.content is not None
        scores = self.content.score(self.history[users])
        no_history = np.diff(self.history[users].indptr) == 0
        if self.strategy == "content" and no_history.any():
            scores[no_history] = self.popularity[None, :]  # nothing to compare with: the honest guess
        return scores

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        """(len(users), n_items) float32; -inf for filtered-out items and scores under the threshold."""
        users = np.asarray(users, dtype=np.int64)
        if self.strategy == "hybrid":
            scores = self._blend(users)
        else:
            scores = self._component(self.strategy, users)
        scores = np.where(np.isfinite(scores), scores, -np.inf).astype(np.float32, copy=False)
        fallback = None
        if self.strategy == "content":  # users without history got popularity counts
            fallback = np.diff(self.history[users].indptr) == 0
        self._filter(scores, fallback)
        return scores if items is None else scores[:, np.asarray(items, dtype=np.int64)]

    def _blend(self, users: np.ndarray) -> np.ndarray:
        norm = NORMALISERS[self.normalise]
        total = sum(self.weights.values())
        out = np.zeros((len(users), self.n_items), np.float32)
        for name, w in self.weights.items():
            if w == 0:
                continue
            s = self._component(name, users)
            if self.allowed is not None:
                s[:, ~self.allowed] = -np.inf  # rank among what may be shown
            out += (w / total) * norm(s)
        return out

    def _filter(self, scores: np.ndarray, fallback: np.ndarray | None = None) -> None:
        """Business filter on every row; the threshold on rows scored by the strategy itself.

        A threshold is on the strategy's scale (a content similarity, a model score); rows that
        fell back to popularity counts (`fallback`) are on another, so it does not apply there.
        """
        if self.allowed is not None:
            scores[:, ~self.allowed] = -np.inf
        if self.threshold is not None:
            rows = scores if fallback is None or not fallback.any() else scores[~fallback]
            rows[rows < self.threshold] = -np.inf
            if fallback is not None and fallback.any():
                scores[~fallback] = rows

    def cold_user_scores(self) -> np.ndarray:
        """(n_items,) scores for users the model never saw: popularity, business-filtered.

        The threshold applies only under the popularity strategy (elsewhere it is on another
        scale than these counts) and, normalised, under hybrid (whose scale is [0, 1]).
        """
        row = self.popularity[None, :].astype(np.float32).copy()
        if self.strategy == "hybrid":
            row = NORMALISERS[self.normalise](np.where(self.allowed, row, -np.inf) if self.allowed is not None else row)
        on_scale = self.strategy in ("popularity", "hybrid")
        self._filter(row, None if on_scale else np.ones(1, dtype=bool))
        return row[0]


def build_scorer(
    model: Recommender,
    rp: RecommendParams,
    history: sp.csr_matrix | None = None,
    load_features: Any = None,
    base_dir: str | Path | None = None,
) -> Recommender | StrategyScorer:
    """The object to rank with under `rp`: the model itself when the defaults apply.

    Args:
        rp: the `recommend:` params (strategy, threshold, content, hybrid, filters).
        history: every known interaction per user over the model's index.
        load_features: callable(modalities or None) -> (features, masks) aligned with the
            model's item index; called only when a strategy needs content.
        base_dir: where relative filter files are resolved (the workspace).

    Raises:
        ConfigError: a content strategy without a feature loader or without features.
    """
    exclude = list(rp.exclude_items)
    base = Path(base_dir) if base_dir is not None else Path(".")
    if rp.exclude_items_file:
        exclude += read_item_ids(base / rp.exclude_items_file)
    candidates = read_item_ids(base / rp.candidates_file) if rp.candidates_file else None
    assert model.item_ids is not None
    allowed = allowed_items(model.item_ids, exclude, candidates)
    if rp.strategy == "model" and allowed is None and rp.threshold is None:
        return model  # unchanged default behaviour
    weights = check_hybrid_weights(rp.hybrid.weights) if rp.strategy == "hybrid" else {}
    content = None
    if rp.strategy == "content" or weights.get("content", 0) > 0:
        if load_features is None:
            raise ConfigError(f"the {rp.strategy} strategy needs item features but no feature loader was given")
        features, masks = load_features(rp.content.modalities or None)
        if not features:
            raise DataError(
                f"the {rp.strategy} strategy needs item features, and none were found; "
                "run `mmrec stage extract_text` (or another modality) first, or pick another strategy"
            )
        content = ContentScores(features, masks, rp.content.metric, rp.content.weights, rp.content.centre)
    return StrategyScorer(
        model,
        rp.strategy,
        history=history,
        content=content,
        hybrid_weights=weights or None,
        normalise=rp.hybrid.normalise,
        allowed=allowed,
        threshold=rp.threshold,
    )
