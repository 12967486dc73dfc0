"""What each endpoint computes, over one `ServingState`, free of HTTP.

Unknown ids raise `NotFoundError` (404 in the API); asking for something the served model or
index cannot do raises `ModelError` (409 in the API: the request is fine, the deployment lacks
the piece). Everything else is a bug and becomes a 500 without details.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmrec.errors import ModelError, NotFoundError
from mmrec.ranking import mask, topk
from mmrec.serve.render import RankedItems
from mmrec.serve.state import ServingState

MODALITY_CHOICES = ("fused", "text", "image", "audio", "video")


def _top(scores: np.ndarray, k: int, exclude: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Top-k column indices and scores of one row, `exclude` masked and dropped (`mmrec.ranking`)."""
    row = mask(np.array(scores, dtype=np.float32, copy=True).ravel(), exclude)
    idx, val = topk(row, k)
    keep = np.isfinite(val)
    return idx[keep], val[keep]


def _items(state: ServingState, pairs: Sequence[tuple[str, float]], key: str = "score") -> RankedItems:
    """The ranked item records of a response (rendered from the state's pre-serialised records)."""
    return RankedItems(state.item_json, pairs, key)


def _model(state: ServingState, what: str) -> Any:
    if state.model is None:
        raise ModelError(f"no model is loaded, so {what} is unavailable; promote a champion (`mmrec promote`)")
    return state.model


def _score_items(state: ServingState, history: Sequence[str], k: int) -> tuple[list[tuple[str, float]], list[str]]:
    """Top-k for an ad-hoc history through the model's `score_history` (popularity when it has none).

    Returns:
        ((item_id, score) best first with the history masked, history ids the model does not know).
    """
    model = _model(state, "real-time recommendation")
    cols = [state.item_pos[i] for i in history if i in state.item_pos]
    unknown = [i for i in history if i not in state.item_pos]
    try:
        scores = model.score_history([np.asarray(cols, dtype=np.int64)])[0]
    except (ModelError, AttributeError):
        from mmrec.models.training import popularity_scores

        scores = popularity_scores(model.train_matrix)
    idx, val = _top(scores, k, cols)
    item_ids = model.item_ids
    return [(str(item_ids[i]), float(v)) for i, v in zip(idx, val, strict=True)], unknown


def _precomputed(state: ServingState, user_id: str, pre: list[tuple[str, float]], k: int) -> dict[str, Any]:
    # the nightly list names the model version that wrote it (until the next nightly run after a
    # promotion, that is the previous champion)
    version = getattr(pre, "model_version", None) or state.version
    return {"user_id": user_id, "source": "precomputed", "version": str(version), "items": _items(state, pre[:k])}


def _seen(state: ServingState, user_id: str) -> set[int]:
    """Model columns of everything the user interacted with (training row + catalogue history)."""
    u = state.user_pos[user_id]
    seen: set[int] = set()
    tm = state.model.train_matrix if state.model is not None else None
    if tm is not None:
        seen.update(tm.indices[tm.indptr[u] : tm.indptr[u + 1]].tolist())
    if state.catalog.has_user(user_id):
        seen.update(state.item_pos[i] for i in state.catalog.history(user_id) if i in state.item_pos)
    return seen


def user_recommendations(state: ServingState, user_id: str, k: int) -> dict[str, Any]:
    """Top-k for a user, most direct source first.

    1. `precomputed`: the nightly top-K from the online store (when it holds at least k, or
       the model cannot do better).
    2. `model`: live scoring of a user the model was trained on, their history masked.
    3. `history`: a user the model never saw but whose interactions the catalogue has, folded
       in through `score_history` (the model's own cold-user path).
    4. `fallback`: a known user without any interaction gets what the model gives an empty
       history (popularity).
    A user none of these knows is a NotFoundError.
    """
    pre = state.recs.get(user_id) if state.recs is not None else None
    if pre and (len(pre) >= k or state.model is None or user_id not in state.user_pos):
        return _precomputed(state, user_id, pre, k)
    if state.model is not None and user_id in state.user_pos:
        seen = _seen(state, user_id)
        if pre and len(pre) >= state.model.n_items - len(seen):  # the stored list already holds every unseen item
            return _precomputed(state, user_id, pre, k)
        row = state.model.score(np.asarray([state.user_pos[user_id]], dtype=np.int64))[0]
        idx, val = _top(row, k, sorted(seen))
        pairs = [(str(state.model.item_ids[i]), float(v)) for i, v in zip(idx, val, strict=True)]
        return {"user_id": user_id, "source": "model", "version": state.version, "items": _items(state, pairs)}
    if not state.catalog.has_user(user_id):
        raise NotFoundError(
            "user", user_id, f"unknown user id {user_id!r}: not in the catalogue, the online store or the model"
        )
    history = state.catalog.history(user_id)
    pairs, _ = _score_items(state, history, k)
    return {
        "user_id": user_id,
        "source": "history" if history else "fallback",
        "version": state.version,
        "items": _items(state, pairs),
    }


def session_recommendations(state: ServingState, item_ids: Sequence[str], k: int) -> dict[str, Any]:
    """Top-k for an anonymous session of recently seen items (real time, no stored user).

    Ids in neither the catalogue nor the model are a NotFoundError listing all of them; catalogue
    items the model was not trained on cannot inform its user representation and are reported
    as `ignored_item_ids`.
    """
    history = list(dict.fromkeys(item_ids))
    missing = [i for i in history if i not in state.catalog and i not in state.item_pos]
    if missing:
        shown = ", ".join(repr(i) for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise NotFoundError("item", missing[0], f"unknown item id(s) {shown}")
    pairs, ignored = _score_items(state, history, k)
    return {
        "source": "session",
        "version": state.version,
        "item_ids": history,
        "ignored_item_ids": ignored,
        "items": _items(state, pairs),
    }


def similar_items(state: ServingState, item_id: str, k: int, modality: str) -> dict[str, Any]:
    """Nearest items of `item_id` in one modality's embedding space (or the fused one)."""
    if item_id not in state.catalog and item_id not in state.item_pos:
        raise NotFoundError("item", item_id)
    index = state.similar.get(modality)
    if index is None:
        available = ", ".join(sorted(state.similar)) or "none"
        raise NotFoundError(
            "modality", modality, f"no {modality} embeddings are served for this dataset (available: {available})"
        )
    pairs = index.similar(item_id, k)
    if pairs is None:
        raise NotFoundError(
            "item", item_id, f"item {item_id!r} has no {modality} embedding (its {modality} is missing)"
        )
    return {
        "item_id": item_id,
        "modality": modality,
        "version": state.version,
        "items": _items(state, pairs[:k], key="similarity"),
    }


def explain_pair(state: ServingState, user_id: str, item_id: str) -> dict[str, Any]:
    """Why `item_id` is (or would be) recommended to `user_id` (mmrec.explain)."""
    model = _model(state, "explanation")
    if state.explainer is None:
        raise ModelError("explanations are not available in this deployment")
    if item_id not in state.item_pos and item_id not in state.catalog:
        raise NotFoundError("item", item_id)
    if user_id not in state.user_pos and not state.catalog.has_user(user_id):
        raise NotFoundError("user", user_id)
    out = dict(state.explainer(model, user_id, item_id))
    support = out.get("supporting_items") or []
    if support:
        described = {d["item_id"]: d for d in state.catalog.describe([s["item_id"] for s in support])}
        out["supporting_items"] = [{**described.get(s["item_id"], {}), **s} for s in support]
    out["item"] = state.catalog.describe([item_id])[0]
    out["version"] = state.version
    return out


def user_history(state: ServingState, user_id: str, limit: int) -> dict[str, Any]:
    """The user's most recent `limit` items, newest first."""
    history = state.catalog.history(user_id)
    recent = list(reversed(history[-limit:]))
    return {"user_id": user_id, "total": len(history), "items": state.catalog.describe(recent)}
