"""The four ways to fill one user's list, over a trained `Recommender`, free of HTTP and stores.

- `nightly`: the precomputed list (what the nightly job wrote), minus what was just consumed.
- `realtime`: the nightly list blended with a real-time fold-in of the user's history plus their
  recent events through the model's own `score_history` (the path `POST /recommendations` uses for
  sessions), by weighted reciprocal-rank fusion; items that owe their place to the fold-in are
  marked as real-time.
- `popularity`: training popularity, minus everything consumed.
- `content`: nearest items, in the fused content space, of the most recent events.

The API (mmrec/serve/realtime.py) and the replay simulator (mmrec/events/replay.py) call the
same functions, so what the replay measures is what is served.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmrec.ranking import mask, topk

Ranked = list[tuple[str, float, str]]
"""(item_id, score, part) best first; part: nightly, realtime, popularity or content."""

#: (item_id, k) -> nearest (item_id, similarity) or None (no vector): a serving `SimilarIndex`
Similar = Callable[[str, int], "list[tuple[str, float]] | None"]


@dataclass
class UserView:
    """What is known about one user at request time.

    Attributes:
        nightly: the precomputed (item_id, score) list, best first (may be empty).
        history: item ids of the user's known past (training history), oldest first.
        recent: item ids of the recent events, newest first.
    """

    nightly: Sequence[tuple[str, float]]
    history: Sequence[str]
    recent: Sequence[str]
    consumed: set[str] = field(init=False)

    def __post_init__(self) -> None:
        self.consumed = set(self.recent) | set(self.history)


class Strategies:
    """The strategy functions over one model.

    Args:
        model: a fitted Recommender (`item_ids`, `train_matrix`, `score_history`).
        item_pos: item id -> the model's column.
        similar: nearest items in the fused content space (None: the content strategy falls back
            to the real-time fold-in).
        realtime_weight: the fold-in's share in the `realtime` blend.
        rrf_k: reciprocal-rank fusion constant.
    """

    def __init__(
        self,
        model: Any,
        item_pos: Mapping[str, int],
        similar: Similar | None = None,
        realtime_weight: float = 0.5,
        rrf_k: float = 10.0,
    ) -> None:
        self.model = model
        self.item_pos = item_pos
        self.similar = similar
        self.realtime_weight = realtime_weight
        self.rrf_k = rrf_k
        self.item_ids = [str(i) for i in model.item_ids]
        from mmrec.models.base import popularity_scores

        self._popularity = popularity_scores(model.train_matrix)

    def _top(self, scores: np.ndarray, k: int, exclude: set[str], part: str) -> Ranked:
        cols = [self.item_pos[i] for i in exclude if i in self.item_pos]
        row = mask(np.array(scores, dtype=np.float32, copy=True).ravel(), cols)
        idx, val = topk(row, k)
        return [(self.item_ids[i], float(v), part) for i, v in zip(idx, val, strict=True) if np.isfinite(v)]

    def foldin(self, view: UserView, k: int) -> Ranked:
        """Top-k of `score_history` over history + recent events (newest last), consumed masked."""
        ordered = [*view.history, *reversed(view.recent)]
        cols = np.asarray([self.item_pos[i] for i in ordered if i in self.item_pos], dtype=np.int64)
        try:
            scores = self.model.score_history([cols])[0]
        except Exception:  # noqa: BLE001 - a model without a fold-in path: popularity, as the session endpoint does
            scores = self._popularity
        return self._top(scores, k, view.consumed, "realtime")

    def nightly(self, view: UserView, k: int) -> Ranked:
        """The nightly list minus consumed items (topped up by the fold-in when it runs short)."""
        out = [(i, float(s), "nightly") for i, s in view.nightly if i not in view.consumed][:k]
        if len(out) < k:
            have = {i for i, _, _ in out}
            out += [r for r in self.foldin(view, k + len(have)) if r[0] not in have][: k - len(out)]
        return out

    def realtime(self, view: UserView, k: int) -> Ranked:
        """Weighted reciprocal-rank fusion of the nightly list and the fold-in.

        score(i) = (1 - w) / (rrf_k + rank_nightly(i)) + w / (rrf_k + rank_foldin(i)); an item
        is real-time when the fold-in contributes more to its score than the nightly list.
        """
        depth = max(2 * k, 50)
        night = [(i, s) for i, s in view.nightly if i not in view.consumed][:depth]
        fold = self.foldin(view, depth)
        w = self.realtime_weight
        fused: dict[str, list[float]] = {}
        for rank, (item, _) in enumerate(night, 1):
            fused.setdefault(item, [0.0, 0.0])[0] = (1 - w) / (self.rrf_k + rank)
        for rank, (item, _, _) in enumerate(fold, 1):
            fused.setdefault(item, [0.0, 0.0])[1] = w / (self.rrf_k + rank)
        order = sorted(fused.items(), key=lambda kv: (-(kv[1][0] + kv[1][1]), kv[0]))[:k]
        return [(item, n + f, "realtime" if f > n else "nightly") for item, (n, f) in order]

    def popularity(self, view: UserView, k: int) -> Ranked:
        return self._top(self._popularity, k, view.consumed, "popularity")

    def content(self, view: UserView, k: int) -> Ranked:
        """Items nearest to the newest recent events in content space, newer events weighing more."""
        if self.similar is None or not view.recent:
            return [(i, s, "content") for i, s, _ in self.foldin(view, k)]
        scores: dict[str, float] = {}
        for age, item in enumerate(view.recent[:5]):
            near = self.similar(item, k + len(view.consumed)) or []
            for other, sim in near:
                if other not in view.consumed:
                    scores[other] = scores.get(other, 0.0) + float(sim) / (1 + age)
        out = [(i, s, "content") for i, s in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]
        if len(out) < k:  # too few neighbours with vectors: top up from the fold-in
            have = {i for i, _, _ in out}
            out += [(i, s, "content") for i, s, _ in self.foldin(view, k + len(have)) if i not in have][: k - len(out)]
        return out

    def run(self, strategy: str, view: UserView, k: int) -> Ranked:
        fn = getattr(self, strategy, None)
        if strategy not in ("nightly", "realtime", "popularity", "content") or fn is None:
            raise ValueError(f"unknown strategy {strategy!r}")
        return fn(view, k)
