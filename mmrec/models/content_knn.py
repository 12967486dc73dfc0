"""Content-KNN: item-item similarity from fused modality features, scored against a user's history.

Each modality's vectors are mean-centred (over the items that have one) and L2-normalised, so
the similarity of two items in one modality is a cosine around a common centre. Modalities are
fused by a weighted mean of their cosines over the modalities *both* items have:

    sim(i, j) = sum_m w_m c_m(i, j) [i, j have m] / sum_m w_m [i, j have m]

so an item missing its poster is compared on text alone instead of having a zero image vector
drag its similarities towards 0. A user's score for candidate i is the sum of sim(i, j) over
the items j of their training history. No behaviour enters the similarities, so an item nobody
interacted with (cold) is scored exactly like a warm one: that is the point of the model.

`k > 0` (default 100) keeps each item's k most similar items (positive similarities only, as
in item-KNN), stored sparse: memory O(n_items * k), built in blocks of rows (BLOCK x n_items at
a time), so neither the fit nor the saved model (logged to MLflow with every run) ever holds an
n x n matrix. From `ANN_MIN_ITEMS` items (`search: auto`) the neighbours are found with an HNSW
index instead of comparing every pair (O(n log n) against O(n^2)) and re-scored exactly; the
recall against exact search on a sample of items is logged at every such fit. `k = 0` keeps every similarity, negative ones included, stored dense
(O(n_items^2): 380 MB at 9.7k items, 1.16 GB at 17k): an item unlike the user's history is then
pushed *down*, which truncation cannot do. On ml100k-mm (1.7k items) the dense form ranked cold
items better (Recall@20 2.9x random against 2.0-2.5x for k = 20..1000) and its validation
Recall@20 was higher (0.080 against 0.070 at k = 100), so small catalogues may prefer `k: 0`;
it is refused above `DENSE_MAX_ITEMS` items, where its memory grows out of bounds.

Users without history get popularity scores. The similarity is computed in blocks of rows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from mmrec.data.interactions import Interactions
from mmrec.errors import ModelError
from mmrec.models.base import Recommender
from mmrec.models.item_features import centred_unit, check_modalities, check_weights, modality_mask
from mmrec.models.neighbours import (
    NeighbourSearch,
    group_candidates,
    recall_sample,
    sampled_recall,
    topk_of_candidates,
    use_hnsw,
)
from mmrec.models.registry import register_model
from mmrec.models.training import ColdUserFallback
from mmrec.ranking import topk

log = logging.getLogger(__name__)

BLOCK = 1024  # rows of the similarity computed at once: 1024 x n_items float32 per modality
DENSE_MAX_ITEMS = 20_000  # k = 0 (dense n x n float32) above this would need > 1.6 GB
#: HNSW candidates per kept neighbour, re-scored exactly (approximate builds)
CANDIDATE_FACTOR = 1.5


def topk_sparse(sim: np.ndarray, k: int, row_offset: int = 0) -> sp.csr_matrix:
    """Keep the k largest positive entries per row of a dense block (as CSR over the block rows).

    Ties are cut by `mmrec.ranking.topk`'s rule (lower column first), so the graph is reproducible.
    """
    n_rows, n_cols = sim.shape
    k = min(k, n_cols)
    if k <= 0 or n_rows == 0:
        return sp.csr_matrix((n_rows, n_cols), dtype=np.float32)
    idx, vals = topk(sim, k)  # ties at the k-th similarity: the lower item index is the neighbour
    rows = np.repeat(np.arange(n_rows), k)
    keep = vals.ravel() > 0
    return sp.csr_matrix(
        (vals.ravel()[keep], (rows[keep], idx.ravel()[keep])), shape=(n_rows, n_cols), dtype=np.float32
    )


def fused_rows(
    blocks: Sequence[tuple[np.ndarray, np.ndarray, float]], rows: np.ndarray, shrink: float = 0.0
) -> np.ndarray:
    """Exact fused similarities of items `rows` to every item, (len(rows), n), self pairs zeroed."""
    n = blocks[0][0].shape[0]
    num = np.zeros((len(rows), n), np.float32)
    den = np.zeros((len(rows), n), np.float32)
    for x, mask, w in blocks:
        num += w * (x[rows] @ x.T)
        den += w * np.outer(mask[rows], mask).astype(np.float32)
    sim = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    if shrink > 0:
        sim *= den / (den + shrink)
    sim[np.arange(len(rows)), rows] = 0.0  # an item is not its own neighbour
    return sim


def _fused_pairs(blocks: Sequence[tuple[np.ndarray, np.ndarray, float]], shrink: float):
    """score(rows, cand) -> (r, c) exact fused similarities of the given pairs (the HNSW re-score)."""

    def score(rows: np.ndarray, cand: np.ndarray) -> np.ndarray:
        num = np.zeros(cand.shape, np.float32)
        den = np.zeros(cand.shape, np.float32)
        for x, mask, w in blocks:
            num += w * np.einsum("rd,rcd->rc", x[rows], x[cand])
            den += w * (mask[rows][:, None] & mask[cand]).astype(np.float32)
        sim = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
        return sim * (den / (den + shrink)) if shrink > 0 else sim

    return score


def approximate_fused_knn(
    blocks: Sequence[tuple[np.ndarray, np.ndarray, float]], k: int, shrink: float = 0.0
) -> tuple[sp.csr_matrix, NeighbourSearch]:
    """The fused k-NN graph from HNSW candidates re-scored exactly, with its sampled recall.

    Items are grouped by the set P of modalities they have. Inside one group the fused
    similarity to a query item i is sum_{m in P} w_m c_m(i, j) / W, with W = the weight of the
    modalities both have, the same for every j of the group: so the group's neighbours of i in
    fused order are its nearest rows by inner product between sqrt(w_m)-weighted concatenations
    (unit modality vectors: every row of a group has the same norm, so L2 order is that order).
    Each group gets its own search (HNSW from `ANN_MIN_ITEMS` rows, exact below);
    `CANDIDATE_FACTOR` x k candidates per group are re-scored with the exact fused formula
    (denominators, shrink) and the k best positive ones kept.
    """
    n = blocks[0][0].shape[0]
    joint = np.concatenate([np.sqrt(w) * x for x, _, w in blocks], axis=1).astype(np.float32)
    widths = np.cumsum([0] + [x.shape[1] for x, _, _ in blocks])
    pattern = np.zeros(n, np.int64)  # bit b: the item has modality b
    for b, (_, mask, _) in enumerate(blocks):
        pattern |= mask.astype(np.int64) << b
    queries = np.flatnonzero(pattern > 0)  # an item with no vector at all has no neighbours
    n_cand = int(np.ceil(CANDIDATE_FACTOR * k)) + 1  # + 1: the item itself may come back first
    found = []
    for group in np.unique(pattern[queries]):
        members = np.flatnonzero(pattern == group)
        dims = np.concatenate([np.arange(widths[b], widths[b + 1]) for b in range(len(blocks)) if group >> b & 1])
        got = group_candidates(joint[np.ix_(members, dims)], joint[np.ix_(queries, dims)], n_cand)
        found.append(np.where(got >= 0, members[np.maximum(got, 0)], -1))
    cand = np.full((n, n_cand * len(found)), -1, np.int64)
    cand[queries] = np.concatenate(found, axis=1)
    score = _fused_pairs(blocks, shrink)
    parts = [topk_of_candidates(np.arange(s, min(s + 256, n)), cand[s : s + 256], score, k) for s in range(0, n, 256)]
    r, c, v = (np.concatenate(x) for x in zip(*parts, strict=True))
    graph = sp.csr_matrix((v.astype(np.float32), (r, c)), shape=(n, n), dtype=np.float32)
    graph.sort_indices()
    sample = recall_sample(n)
    recall = sampled_recall(
        [graph.indices[graph.indptr[i] : graph.indptr[i + 1]] for i in sample],
        lambda items: fused_rows(blocks, items, shrink),
        k,
        sample,
    )
    return graph, NeighbourSearch(approximate=True, recall=recall, sample=len(sample))


def fused_similarity(
    blocks: Sequence[tuple[np.ndarray, np.ndarray, float]], k: int, shrink: float = 0.0, search: str = "exact"
) -> sp.csr_matrix | np.ndarray:
    """The fused similarity (no self loops): k-nearest-neighbour CSR, or dense when k == 0.

    Args:
        blocks: per modality (unit vectors (n, d) with zero rows where absent, mask (n,), weight).
        k: neighbours kept per item (positive similarities only); 0 keeps all, as a dense array.
        shrink: the similarity is scaled by overlap / (overlap + shrink), where overlap is the
            summed weight of the shared modalities: pairs compared on fewer modalities count less.
        search: how the k neighbours are found (`mmrec.models.neighbours.use_hnsw`): exact
            blocked pass (O(n^2 d)) or HNSW candidates re-scored exactly (O(n log n)); k > 0 only.
    """
    return fused_knn(blocks, k, shrink, search)[0]


def fused_knn(
    blocks: Sequence[tuple[np.ndarray, np.ndarray, float]], k: int, shrink: float = 0.0, search: str = "exact"
) -> tuple[sp.csr_matrix | np.ndarray, NeighbourSearch]:
    """`fused_similarity` with how its neighbours were found (approximate? sampled recall)."""
    n = blocks[0][0].shape[0]
    if k > 0 and use_hnsw(search, n):
        return approximate_fused_knn(blocks, k, shrink)
    parts = []
    for start in range(0, n, BLOCK):
        sim = fused_rows(blocks, np.arange(start, min(start + BLOCK, n)), shrink)
        parts.append(sim if k == 0 else topk_sparse(sim, k))
    if k == 0:
        return (np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)), NeighbourSearch(False)
    out = sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, 0), dtype=np.float32)
    out.sort_indices()
    return out, NeighbourSearch(False)


@register_model
class ContentKNN(ColdUserFallback, Recommender):
    """Item-item KNN on fused, mean-centred, L2-normalised content features.

    Args:
        modalities: the item features used (each must be provided to `fit`).
        weights: per-modality weight of its cosine in the fused similarity, e.g.
            {"text": 1.0, "image": 0.5}; modalities not named weigh 1. A weight of 0 drops it.
        k: neighbours kept per item (sparse, O(n_items * k)); 0 keeps every similarity, negatives
            included, as a dense n x n matrix (catalogues of at most `DENSE_MAX_ITEMS` items).
        shrink: down-weights pairs compared on fewer (or lighter) modalities (see
            `fused_similarity`); 0 disables.
        search: how the k neighbours are found: "exact" (every pair, O(n_items^2)), "hnsw"
            (HNSW candidates re-scored exactly, O(n log n); the recall against exact search on a
            sample of items is logged and kept in `neighbour_search`), or "auto" (HNSW from
            `mmrec.models.neighbours.ANN_MIN_ITEMS` items). Ignored for k = 0.

    Items without a vector in any used modality have no neighbours and score 0.
    """

    name = "content_knn"

    def __init__(
        self,
        modalities: Sequence[str] = ("text", "image"),
        weights: Mapping[str, float] | None = None,
        k: int = 100,
        shrink: float = 0.0,
        search: str = "auto",
    ) -> None:
        super().__init__()
        self.modalities = list(check_modalities(self.name, modalities))
        self.weights = check_weights(self.name, weights, self.modalities)
        if int(k) < 0:
            raise ModelError(f"content_knn: k must be >= 0 (0 = every item), got {k}")
        if shrink < 0:
            raise ModelError(f"content_knn: shrink must be >= 0, got {shrink}")
        use_hnsw(search, 0)  # validates the name
        self.k = int(k)
        self.shrink = float(shrink)
        self.search = str(search)
        self.neighbour_search: NeighbourSearch | None = None  # set by fit
        # (n_items, n_items), row i = similarities of item i: CSR (k > 0) or dense (k == 0)
        self.similarity: sp.csr_matrix | np.ndarray | None = None

    def weight(self, modality: str) -> float:
        return self.weights.get(modality, 1.0)

    def _fit(self, train: Interactions, valid: sp.csr_matrix | None) -> None:
        if self.k == 0 and train.n_items > DENSE_MAX_ITEMS:
            gb = train.n_items**2 * 4 / 1e9
            raise ModelError(
                f"content_knn: k=0 keeps a dense {train.n_items} x {train.n_items} similarity ({gb:.1f} GB); "
                f"above {DENSE_MAX_ITEMS} items set k (e.g. k: 100 in train.params.content_knn) for a sparse "
                "top-k matrix"
            )
        blocks = []
        for modality in self.modalities:
            matrix = train.require(modality)
            if matrix.shape[0] != train.n_items:
                raise ModelError(
                    f"content_knn: {modality} features have {matrix.shape[0]} rows for {train.n_items} items"
                )
            if self.weight(modality) > 0:
                mask = modality_mask(train, modality)
                blocks.append((centred_unit(matrix, mask), mask, self.weight(modality)))
        self.similarity, self.neighbour_search = fused_knn(blocks, self.k, self.shrink, self.search)
        if self.neighbour_search.approximate:
            log.info(
                "content_knn: %d items, neighbours by HNSW; recall@%d against exact search on %d sampled items: %.3f",
                train.n_items,
                self.k,
                self.neighbour_search.sample,
                self.neighbour_search.recall,
            )

    def _score(self, users: np.ndarray) -> np.ndarray:
        assert self.similarity is not None and self.train_matrix is not None
        history = self.train_matrix[users]  # (B, n_items) sparse
        if isinstance(self.similarity, np.ndarray):
            scores = np.asarray(history @ self.similarity.T, dtype=np.float32)
        else:
            scores = np.asarray((history @ self.similarity.T).todense(), dtype=np.float32)
        return self._fill_cold(scores, users)

    def _score_history(self, rows: sp.csr_matrix) -> np.ndarray:
        assert self.similarity is not None
        out = rows @ self.similarity.T
        return np.asarray(out if isinstance(out, np.ndarray) else out.todense(), dtype=np.float32)

    def score_parts(self, user: int, item: int) -> dict[str, float]:
        return {"content": float(self.score(np.asarray([user]), np.asarray([item]))[0, 0])}

    def item_affinity(self, item: int, others: np.ndarray) -> np.ndarray:
        # score_j = sum over history h of similarity[j, h]: each past item's exact share.
        assert self.similarity is not None
        row = self.similarity[item]
        row = np.asarray(row.todense() if sp.issparse(row) else row, dtype=np.float32).ravel()
        return row[np.asarray(others, np.int64)]

    def _state(self) -> dict[str, np.ndarray]:
        assert self.similarity is not None
        s = self.similarity
        if isinstance(s, np.ndarray):
            return {"sim_dense": s}
        return {"sim_data": s.data, "sim_indices": s.indices, "sim_indptr": s.indptr}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        if "sim_dense" in state:
            self.similarity = np.asarray(state["sim_dense"], dtype=np.float32)
            return
        n = len(state["sim_indptr"]) - 1
        self.similarity = sp.csr_matrix(
            (state["sim_data"].astype(np.float32), state["sim_indices"], state["sim_indptr"]), shape=(n, n)
        )
