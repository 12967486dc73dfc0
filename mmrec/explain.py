"""Why a model recommends an item to a user.

Two complementary answers, both computed from the trained model alone:
- **contributions**: the score split into additive parts by source (collaborative signal,
  each modality's content, popularity for users without history), from `Recommender.score_parts`;
  the parts sum to the score, so their shares are meaningful.
- **supporting items**: the user's past items that most support the recommendation, from
  `Recommender.item_affinity` (an exact term of the score for neighbourhood models, item-vector
  cosine for factor models).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmrec.errors import NotFoundError
from mmrec.models.base import Recommender

#: id(ids array) -> (that array, id -> first position): the API explains one pair per request, and
#: scanning 10^5-10^6 ids for each would cost more than the explanation; a few models at most
#: (the served one, the one being loaded) are kept
_POSITIONS: dict[int, tuple[Any, dict[str, int]]] = {}


def _index(ids: np.ndarray | None, key: str, kind: str) -> int:
    pos = None
    if ids is not None:
        hit = _POSITIONS.get(id(ids))
        if hit is None or hit[0] is not ids:  # a new array (the id of a freed one may come back)
            positions: dict[str, int] = {}
            for i, v in enumerate(ids):
                positions.setdefault(str(v), i)
            if len(_POSITIONS) >= 4:
                _POSITIONS.clear()
            hit = _POSITIONS[id(ids)] = (ids, positions)
        pos = hit[1].get(key)
    if pos is None:
        raise NotFoundError(kind, key, f"unknown {kind} id {key!r}: not in the model's training index")
    return pos


def explain(model: Recommender, user_id: str, item_id: str, top_n: int = 5) -> dict[str, Any]:
    """Explain the score of `item_id` for `user_id`.

    Args:
        model: a fitted or loaded model.
        user_id, item_id: external ids (strings).
        top_n: how many supporting past items to return.

    Returns:
        {"user_id", "item_id", "model", "score", "rank" (1-based among unseen items),
        "contributions" {part: value}, "shares" {part: |value| / sum |values|},
        "supporting_items" [{"item_id", "affinity"}], "history_size"}.

    Raises:
        NotFoundError: the user or item is not in the model's index.
    """
    u = _index(model.user_ids, str(user_id), "user")
    i = _index(model.item_ids, str(item_id), "item")
    assert model.train_matrix is not None and model.item_ids is not None
    scores = np.array(model.score(np.asarray([u])), dtype=np.float32).ravel()
    tm = model.train_matrix
    seen = tm.indices[tm.indptr[u] : tm.indptr[u + 1]]  # the user's row (no scipy slicing per request)
    unseen = np.ones(len(scores), dtype=bool)
    unseen[seen] = False
    score = float(scores[i])
    rank = int((scores[unseen] > score).sum()) + 1 if unseen[i] else None
    parts = model.score_parts(u, i)
    total = sum(abs(v) for v in parts.values()) or 1.0
    support: list[dict[str, Any]] = []
    others = seen[seen != i]
    if len(others):
        affinity = np.asarray(model.item_affinity(i, others), dtype=np.float32)
        order = np.argsort(-affinity, kind="stable")[:top_n]
        support = [
            {"item_id": str(model.item_ids[others[j]]), "affinity": round(float(affinity[j]), 6)}
            for j in order
            if affinity[j] > 0
        ]
    return {
        "user_id": str(user_id),
        "item_id": str(item_id),
        "model": model.name,
        "score": round(score, 6),
        "rank": rank,
        "already_seen": bool(not unseen[i]),
        "contributions": {k: round(float(v), 6) for k, v in parts.items()},
        "shares": {k: round(abs(float(v)) / total, 4) for k, v in parts.items()},
        "supporting_items": support,
        "history_size": len(seen),
    }


def item_titles(items: Any) -> dict[str, str]:
    """item_id -> display title from a validated items table (pandas DataFrame).

    The title is the `title` or `name` text field when the dataset has one, else its first text
    field (dataset.yaml fixes their order); empty when the items have no text.
    """
    cols = [c for c in items.columns if c.startswith("text_")]
    preferred = [c for c in ("text_title", "text_name") if c in cols]
    col = (preferred or cols or [None])[0]
    if col is None:
        return {}
    return dict(zip(items["item_id"].astype(str), items[col].fillna("").astype(str), strict=True))


def format_explanation(exp: dict[str, Any], titles: dict[str, str] | None = None) -> str:
    """A few lines of plain text for the CLI."""
    titles = titles or {}

    def name(item: str) -> str:
        return f"{item} ({titles[item]})" if item in titles else item

    rank = f"rank {exp['rank']}" if exp["rank"] is not None else "already in the user's history"
    lines = [f"{exp['model']}: user {exp['user_id']} x item {name(exp['item_id'])}: score {exp['score']:.4f}, {rank}"]
    lines.append("contributions:")
    for part, value in sorted(exp["contributions"].items(), key=lambda kv: -abs(kv[1])):
        lines.append(f"  {part:<14} {value:+.4f}  ({exp['shares'][part]:.0%})")
    if exp["supporting_items"]:
        lines.append(f"supported by the user's past items (of {exp['history_size']}):")
        lines += [f"  {name(s['item_id'])}  affinity {s['affinity']:.3f}" for s in exp["supporting_items"]]
    return "\n".join(lines)
