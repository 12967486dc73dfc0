"""Cross-modal search: a text or an image query ranked against items in a model's joint space.

A query is embedded by the dataset's own encoder of its modality (the one `extract` used, built
from `params.extract` by `mmrec.extract.build_encoder`, so preprocessing and weights match the
item vectors the model was trained on), then mapped through the model's frozen cross-modal
projection (`model.projection`, mmrec/models/projection.py; `two_tower` learns one). Items are
scored by the cosine between the query and *their* joint vectors of the target modalities:
- `target="image"`: only the items' image vectors (a text query finds items by their pictures);
- `target="text"`: only their text vectors;
- `target="all"` (default): the mean cosine over the modalities each item has, so an item
  matching in both counts more than one matching in one, and an item without an image is still
  found by its text.
The answer says per item which modality matched how well.

Which model: the serving champion when it has a projection. A model without one (BPR, ItemKNN,
...) cannot place a query in its space; `search_model` then names the error (`NoProjection`),
and `mmrec serve` can load a declared search model (`MMREC_SEARCH_ALIAS`) next to the champion.

`evaluate_title_search` measures how often an item's own title, as a query, finds the item.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmrec.errors import ConfigError, DataError, MMRecError, ModelError
from mmrec.models.projection import CrossModalProjection, unit_rows

TARGETS = ("all", "text", "image")
#: longest text query accepted (characters, after trimming)
MAX_QUERY_CHARS = 512
#: image uploads: formats accepted and their MIME types
IMAGE_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP", "image/gif": "GIF", "image/bmp": "BMP"}


class NoProjection(ModelError):
    """The model has no cross-modal projection (it learned no joint space of text and image)."""


class QueryError(DataError):
    """A query that cannot be searched (empty, too long, not an image, too large...)."""


def model_projection(model: Any, what: str = "the model") -> CrossModalProjection:
    """`model.projection`, or NoProjection saying which models have one.

    Raises:
        NoProjection: the model is not a joint-embedding model, or was saved before projections
            were persisted (retrain it).
    """
    projection = getattr(model, "projection", None)
    if projection is None:
        name = getattr(model, "name", type(model).__name__)
        raise NoProjection(
            f"{what} ({name}) has no cross-modal projection, so it cannot place a text or image query in its "
            "space; search needs a two_tower model trained with text and image (retrain, or serve one as the "
            "search model: MMREC_SEARCH_ALIAS=<registry alias>)"
        )
    return projection


def check_text_query(q: Any, max_chars: int = MAX_QUERY_CHARS) -> str:
    """The trimmed query, or QueryError naming the problem."""
    if not isinstance(q, str):
        raise QueryError(f"query must be text, got {type(q).__name__}")
    text = q.strip()
    if not text:
        raise QueryError("query is empty: give a few words to search for")
    if len(text) > max_chars:
        raise QueryError(f"query is {len(text)} characters long, above the limit of {max_chars}; shorten it")
    if any(ord(c) < 32 and c not in "\t\n\r" for c in text):
        raise QueryError("query contains control characters")
    return text


def decode_query_image(data: bytes, content_type: str | None, max_bytes: int, max_pixels: int) -> Any:
    """Decoded RGB PIL image of an upload, validated before and after decoding.

    Checks, in order: a declared image type we accept, the byte size, the pixel count from the
    header (Pillow's decompression-bomb guard plus our own, lower, limit: nothing is decoded
    above it), then a full decode (a corrupt or truncated file is refused, not half-read).

    Raises:
        QueryError: the reason, for a 4xx answer.
    """
    from mmrec.encoders.base import ItemFailure
    from mmrec.encoders.image import load_image

    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in IMAGE_TYPES:
        raise QueryError(
            f"unsupported Content-Type {media or '(none)'!r}; send the image as one of {sorted(IMAGE_TYPES)}"
        )
    if not data:
        raise QueryError("empty upload: send the image bytes as the request body")
    if len(data) > max_bytes:
        raise QueryError(f"image is {len(data):,} bytes, above the limit of {max_bytes:,}")
    try:
        img = load_image(data, max_pixels)
    except ItemFailure as exc:
        raise QueryError(f"image refused: {exc}") from exc
    return img


class QueryEncoders:
    """The dataset's encoders, built lazily and once per process (thread-safe).

    Args:
        extract: `params.extract` of the dataset (the encoders the features were made with).
    """

    def __init__(self, extract: Any) -> None:
        self.extract = extract
        self._lock = threading.Lock()
        self._encoders: dict[str, Any] = {}

    def encoder(self, modality: str) -> Any:
        with self._lock:  # the first request builds it; concurrent ones wait instead of loading twice
            enc = self._encoders.get(modality)
            if enc is None:
                from mmrec.extract import build_encoder, extract_params

                enc = build_encoder(modality, extract_params(self.extract))
                self._encoders[modality] = enc
            return enc

    def text(self, query: str) -> np.ndarray:
        """(1, d) vector of a text query, through the encoder's own cleaning and tokenisation."""
        return self._run("text", lambda enc: enc.encode([query]))

    def image(self, img: Any) -> np.ndarray:
        """(1, d) vector of a decoded image, through the encoder's own resize/crop/normalisation."""
        return self._run("image", lambda enc: enc.encode_batch([enc.prepare_image(img)]))

    def _run(self, modality: str, fn: Any) -> np.ndarray:
        try:
            enc = self.encoder(modality)
            with self._lock:  # one forward pass at a time per process: torch modules are not re-entrant safe
                out = fn(enc)
        except (ConfigError, ModelError):
            raise
        except MMRecError:
            raise
        except Exception as exc:
            raise ModelError(f"the {modality} encoder cannot embed the query: {type(exc).__name__}: {exc}") from exc
        return np.asarray(out, dtype=np.float32).reshape(1, -1)


@dataclass(frozen=True)
class Hit:
    """One search result: the item, its score and the cosine per matched modality."""

    item_id: str
    score: float
    matched: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "score": self.score, "matched": self.matched}


def rank(
    projection: CrossModalProjection,
    query: np.ndarray,
    item_ids: Sequence[str],
    k: int,
    target: str = "all",
) -> list[Hit]:
    """The k items closest to a joint-space query (1, dim) over the target modalities.

    Args:
        projection: holds the items' joint vectors (`item_vectors`, `item_masks`).
        query: the query's unit joint vector.
        item_ids: ids of the projection's item rows.
        k: how many.
        target: "all", "text" or "image" (see the module docstring).

    Raises:
        QueryError: an unknown target, or a target modality the model has no item vectors for.
    """
    if target not in TARGETS:
        raise QueryError(f"unknown target {target!r}; choose one of {list(TARGETS)}")
    mods = [m for m in projection.item_vectors if (target == "all" or m == target)]
    if not mods:
        raise QueryError(f"this model has no {target} item vectors; it has {sorted(projection.item_vectors)}")
    q = unit_rows(np.asarray(query, np.float32).reshape(1, -1))[0]
    n = len(item_ids)
    total = np.zeros(n, np.float32)
    count = np.zeros(n, np.float32)
    cos: dict[str, np.ndarray] = {}
    for m in mods:
        mask = projection.item_masks[m]
        c = projection.item_vectors[m] @ q
        cos[m] = c
        total += np.where(mask, c, 0.0)
        count += mask
    score = np.where(count > 0, total / np.maximum(count, 1), -np.inf)
    k = min(int(k), int((count > 0).sum()))
    if k <= 0:
        return []
    top = np.argpartition(-score, k - 1)[:k]
    top = top[np.lexsort((top, -score[top]))]  # best first, ties by row for a stable order
    return [
        Hit(str(item_ids[i]), float(score[i]), {m: float(cos[m][i]) for m in mods if projection.item_masks[m][i]})
        for i in top
    ]


def search(
    model: Any,
    encoders: QueryEncoders,
    k: int,
    *,
    text: str | None = None,
    image: Any = None,
    target: str = "all",
) -> list[Hit]:
    """Rank `model`'s items for a text query or a decoded image (exactly one of them).

    Raises:
        NoProjection: the model has no joint space.
        QueryError: a bad query.
        ModelError: the encoder cannot run (e.g. its weights are not available offline).
    """
    if (text is None) == (image is None):
        raise QueryError("give a text query or an image, not both or neither")
    projection = model_projection(model)
    modality = "text" if text is not None else "image"
    if modality not in projection.modalities:
        raise NoProjection(
            f"the model has no {modality} projection (it was trained on {sorted(projection.modalities)})"
        )
    raw = encoders.text(check_text_query(text)) if text is not None else encoders.image(image)
    query = projection.project(modality, raw)
    return rank(projection, query, [str(i) for i in model.item_ids], k, target)


# -- evaluation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TitleSearchResult:
    """recall@k of title queries, per method (see `evaluate_title_search`)."""

    k: int
    n_queries: int
    n_candidates: int
    recall: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "n_queries": self.n_queries,
            "n_candidates": self.n_candidates,
            "recall": self.recall,
            "random_chance": self.k / max(self.n_candidates, 1),
        }


def recall_at_k(queries: np.ndarray, items: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Share of queries whose true item (row `truth[i]` of `items`) is among the top-k by cosine.

    Ties are broken against the true item (an all-equal score never counts as found).
    """
    q, v = unit_rows(queries), unit_rows(items)
    scores = q @ v.T  # (n_queries, n_items)
    true = scores[np.arange(len(truth)), truth]
    better = (scores >= true[:, None]).sum(axis=1) - 1  # items scoring at least as high, itself excluded
    return float(np.mean(better < k)) if len(truth) else float("nan")


def evaluate_title_search(
    projection: CrossModalProjection,
    title_vectors: np.ndarray,
    item_features: Mapping[str, np.ndarray],
    item_masks: Mapping[str, np.ndarray],
    query_rows: np.ndarray,
    candidate_rows: np.ndarray,
    k: int = 10,
    seed: int = 0,
) -> TitleSearchResult:
    """How often an item's title, as a text query, finds the item among the candidates.

    Methods (recall@k; the query is `title_vectors[i]`, the raw text-encoder vector of item
    `query_rows[i]`'s title alone; the candidates are `candidate_rows`):
    - `cross_modal`: query through the trained text projection vs the candidates' *image*
      vectors through the trained image projection (the item side never sees any text);
    - `random_projection`: the same with the head weights replaced by random ones
      (`CrossModalProjection.randomised`), PCA and centring kept;
    - `text_only`: the raw query vs the candidates' own raw *text* vectors (centred): a baseline
      that sees the item's text, which contains the title, so it is an upper reference, not a rival.
    Candidates need an image vector; queries are restricted to candidates.

    Held-out: pass as `query_rows` items whose title-image pairs the projection never trained on
    (e.g. items without training interactions: the alignment term only sees the positives of
    training batches). The caller says which; this function only measures.
    """
    image_mask = np.asarray(item_masks["image"], bool)
    candidates = np.asarray([r for r in candidate_rows if image_mask[r]], np.int64)
    pos = {int(r): j for j, r in enumerate(candidates)}
    keep = np.asarray([j for j, r in enumerate(query_rows) if int(r) in pos], np.int64)
    if not len(keep):
        raise DataError("no query item has an image among the candidates; nothing to evaluate")
    truth = np.asarray([pos[int(query_rows[j])] for j in keep], np.int64)
    titles = np.asarray(title_vectors, np.float32)[keep]
    images = np.asarray(item_features["image"], np.float32)[candidates]
    out: dict[str, float] = {}
    for name, proj in (("cross_modal", projection), ("random_projection", projection.randomised(seed))):
        out[name] = recall_at_k(proj.project("text", titles), proj.project("image", images), truth, k)
    text = np.asarray(item_features["text"], np.float32)
    text_mask = np.asarray(item_masks["text"], bool)
    centre = text[text_mask].mean(axis=0)
    cand_text = np.where(text_mask[candidates, None], text[candidates] - centre, 0.0)
    out["text_only"] = recall_at_k(titles - centre, cand_text, truth, k)
    return TitleSearchResult(k=k, n_queries=len(keep), n_candidates=len(candidates), recall=out)
