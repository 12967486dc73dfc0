"""MMGraph: LightGCN over the user-item graph plus frozen item-item graphs built from content.

In the FREEDOM / LATTICE family (Zhou & Shen, MM 2023; Zhang et al., MM 2021): for each modality
an item-item k-nearest-neighbour graph is built once from the (mean-centred, L2-normalised)
features and frozen; the per-modality graphs are fused by weight. Item ID embeddings propagated
over the fused item graph are added to the LightGCN representation:

    item_i = LightGCN(E)_i + alpha * sum_j S_ij e_j,    user_u = LightGCN(E)_u

S is row-normalised and its columns are restricted to *warm* items (items with training
interactions), so every item, including one never seen in training, gets a content-driven vector:
the weighted mean of the ID embeddings of its nearest warm neighbours. Cold items' own ID
embeddings are zeroed (they never received a positive gradient). At export a cold item gets a
vector in the space of the warm items' final vectors: by default a ridge map from content to
those vectors, fitted on the warm items (`mmrec.models.content_map`), or the mean of its content
neighbours' vectors (`cold_vectors`).

A modality an item lacks simply contributes no edges for it; the fused row is renormalised over
the modalities the item has, so a missing poster is not a vote for anything.

The score is a dot product of exported factors, and the item-graph term splits by modality
(each S_m is a separate sum), which `score_parts` reports for explanations.
"""

from __future__ import annotations

import functools
import logging
import operator
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from mmrec.constants import SEED
from mmrec.data.interactions import Interactions
from mmrec.errors import ModelError
from mmrec.models.bpr import bpr_loss
from mmrec.models.content_knn import BLOCK, topk_sparse
from mmrec.models.content_map import RidgeMap
from mmrec.models.item_features import centred_unit, check_modalities, check_weights, modality_mask
from mmrec.models.lightgcn import LightGCN, sparse_product
from mmrec.models.neighbours import group_candidates, recall_sample, sampled_recall, topk_of_candidates, use_hnsw
from mmrec.models.registry import register_model
from mmrec.models.training import check_positive

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: how `MMGraph` gives a cold item its vector at export
COLD_VECTORS = ("ridge", "neighbours")


def knn_item_graph(
    features: np.ndarray, mask: np.ndarray, warm: np.ndarray, k: int, search: str = "exact"
) -> sp.csr_matrix:
    """Row-stochastic kNN graph: row i = item i's k most similar warm items (cosine, > 0, no self).

    Args:
        features: (n_items, d) centred unit rows (zero where absent).
        mask: items that have the modality; warm: items with training interactions.
        search: exact (every pair) or HNSW candidates re-scored exactly
            (`mmrec.models.neighbours.use_hnsw`; the sampled recall is logged).
    """
    n = features.shape[0]
    cols = np.flatnonzero(warm & mask)
    if use_hnsw(search, n) and len(cols):
        g = _approximate_graph(features, mask, cols, k)
    else:
        blocks = [
            topk_sparse(_cosine_rows(features, mask, cols, np.arange(s, min(s + BLOCK, n))), k)
            for s in range(0, n, BLOCK)
        ]
        g = sp.vstack(blocks, format="csr")
        g = sp.csr_matrix((g.data, cols[g.indices], g.indptr), shape=(n, n), dtype=np.float32)
    sums = np.asarray(g.sum(axis=1)).ravel()
    scale = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    return sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ g, dtype=np.float32)


def _cosine_rows(features: np.ndarray, mask: np.ndarray, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Cosines of items `rows` to the columns `cols`, (len(rows), len(cols)), self and absent zeroed."""
    sim = features[rows] @ features[cols].T
    self_hit = np.searchsorted(cols, rows)
    ok = (self_hit < len(cols)) & (cols[np.minimum(self_hit, len(cols) - 1)] == rows)
    sim[np.flatnonzero(ok), self_hit[ok]] = 0.0  # no self loops
    sim[~mask[rows]] = 0.0  # an item without this modality has no edges in its graph
    return sim


def _approximate_graph(features: np.ndarray, mask: np.ndarray, cols: np.ndarray, k: int) -> sp.csr_matrix:
    """The kNN graph (unnormalised) from HNSW candidates among `cols`, re-scored exactly."""
    n = features.shape[0]
    queries = np.flatnonzero(mask)
    n_cand = int(np.ceil(1.5 * k)) + 1  # + 1: the item itself, when warm, comes back first
    found = group_candidates(features[cols], features[queries], n_cand)
    cand = np.where(found >= 0, cols[np.maximum(found, 0)], -1)

    def score(rows: np.ndarray, c: np.ndarray) -> np.ndarray:
        return np.einsum("rd,rcd->rc", features[rows], features[c])

    parts = [
        topk_of_candidates(queries[s : s + 1024], cand[s : s + 1024], score, k) for s in range(0, len(queries), 1024)
    ]
    r, c, v = (np.concatenate(x) for x in zip(*parts, strict=True))
    g = sp.csr_matrix((v, (r, c)), shape=(n, n), dtype=np.float32)
    g.sort_indices()

    def exact(items: np.ndarray) -> np.ndarray:
        out = np.zeros((len(items), n), np.float32)
        out[:, cols] = _cosine_rows(features, mask, cols, items)
        return out

    sample = queries[recall_sample(len(queries))]
    recall = sampled_recall([g.indices[g.indptr[i] : g.indptr[i + 1]] for i in sample], exact, k, sample)
    log.info(
        "mm_graph: item graph over %d items by HNSW; recall@%d against exact search on %d sampled items: %.3f",
        n,
        k,
        len(sample),
        recall,
    )
    return g


@register_model
class MMGraph(LightGCN):
    """LightGCN plus frozen multimodal item-item graphs (FREEDOM/LATTICE-style).

    Args:
        modalities: item features the item graphs are built from.
        weights: per-modality weight in the fused item graph (unnamed modalities weigh 1).
        knn_k: neighbours per item in each modality graph.
        knn_search: how the graphs' neighbours are found: exact | hnsw | auto (HNSW from
            `mmrec.models.neighbours.ANN_MIN_ITEMS` items; see `knn_item_graph`).
        item_weight: alpha, the weight of the item-graph term.
        cold_vectors: how an item without training interactions gets its vector at export:
            `ridge` maps its content features onto the warm items' final vectors (a ridge
            regression fitted on the warm items, rows weighted by log(1 + interactions));
            `neighbours` takes the item-graph-weighted mean of its warm neighbours' vectors.
        cold_ridge: the ridge penalty of `cold_vectors: ridge`.
        dim, n_layers, lr, reg, batch_size, max_epochs, eval_every, patience, min_epochs, init_std, seed,
            device, propagation, walks, refresh_every, max_full_steps: as in `LightGCN` (the
            item-graph term is computed for the batch's items in every mode).

    Users without training interactions are scored by popularity.

    Defaults chosen on ml100k-mm validation Recall@20 (temporal split, 10% cold items):
    item_weight 0.5 (0.2301) over 0.25 (0.2219), 1.0 (0.2281) and 2.0 (0.2153); knn_k 10 over 20.
    cold_vectors and cold_ridge on its cold-valid slice (84 items, 219 users), seeds 42 / 43 / 44:
    neighbours .620 / .629 / .626 Recall@20; ridge 10 .760 / .773 / .762 (3: .718 / .741 / .728,
    30: .736 / .754 / .747; unweighted rows .695 / .709 / .695 at 10).
    """

    name = "mm_graph"

    def __init__(
        self,
        modalities: Sequence[str] = ("text", "image"),
        weights: Mapping[str, float] | None = None,
        knn_k: int = 10,
        item_weight: float = 0.5,
        dim: int = 64,
        n_layers: int = 2,
        lr: float = 1e-2,
        reg: float = 1e-4,
        batch_size: int = 4096,
        max_epochs: int = 300,
        eval_every: int = 1,
        patience: int = 10,
        init_std: float = 0.1,
        seed: int = SEED,
        device: str = "cpu",
        min_epochs: int = 0,
        propagation: str = "auto",
        walks: int = 8,
        refresh_every: int = 0,
        knn_search: str = "auto",
        max_full_steps: int = 10,
        cold_vectors: str = "ridge",
        cold_ridge: float = 10.0,
    ) -> None:
        use_hnsw(knn_search, 0)  # validates the name
        super().__init__(
            dim,
            n_layers,
            lr,
            reg,
            batch_size,
            max_epochs,
            eval_every,
            patience,
            init_std,
            seed,
            device,
            min_epochs=min_epochs,
            propagation=propagation,
            walks=walks,
            refresh_every=refresh_every,
            max_full_steps=max_full_steps,
        )
        self.modalities = list(check_modalities(self.name, modalities))
        self.weights = check_weights(self.name, weights, self.modalities)
        check_positive(knn_k=knn_k)
        if item_weight < 0:
            raise ModelError(f"mm_graph: item_weight must be >= 0, got {item_weight}")
        self.knn_k = int(knn_k)
        self.knn_search = str(knn_search)
        self.item_weight = float(item_weight)
        if cold_vectors not in COLD_VECTORS:
            raise ModelError(f"mm_graph: cold_vectors must be one of {COLD_VECTORS}, got {cold_vectors!r}")
        check_positive(cold_ridge=cold_ridge)
        self.cold_vectors = str(cold_vectors)
        self.cold_ridge = float(cold_ridge)
        self.item_parts: dict[str, np.ndarray] = {}  # "collaborative" / modality -> (n_items, dim)
        self._graphs: dict[str, sp.csr_matrix] = {}  # modality -> weighted, renormalised graph
        self._graph_t: dict[str, torch.Tensor] = {}
        self._warm_t: torch.Tensor | None = None
        self._cold_map: RidgeMap | None = None  # cold_vectors: ridge, set during fit
        self._cold_features: dict[str, np.ndarray] = {}  # modality -> cold items' features

    def modality_features(self, train: Interactions) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per modality in use (weight not 0): its centred unit features and its item mask."""
        out = {}
        for m in self.modalities:
            if self.weights.get(m, 1.0) == 0:
                continue
            feats = train.require(m)
            if feats.shape[0] != train.n_items:
                raise ModelError(f"mm_graph: {m} features have {feats.shape[0]} rows for {train.n_items} items")
            mask = modality_mask(train, m)
            out[m] = (centred_unit(feats, mask), mask)
        return out

    def item_graphs(
        self, train: Interactions, features: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    ) -> dict[str, sp.csr_matrix]:
        """Per-modality graphs, pre-weighted so that their sum is the fused row-stochastic graph.

        `features` is `modality_features(train)`, computed here when not given.
        """
        features = self.modality_features(train) if features is None else features
        warm = np.diff(sp.csc_matrix(train.matrix).indptr) > 0
        raw, present = {}, {}
        for m, (centred, mask) in features.items():
            raw[m] = knn_item_graph(centred, mask, warm, self.knn_k, self.knn_search)
            present[m] = self.weights.get(m, 1.0) * (np.diff(raw[m].indptr) > 0)
        total = sum(present.values())
        norm = np.divide(1.0, total, out=np.zeros(train.n_items), where=total > 0).astype(np.float32)
        return {m: sp.csr_matrix(sp.diags(present[m] * norm) @ g, dtype=np.float32) for m, g in raw.items()}

    def _fit(self, train: Interactions, valid: sp.csr_matrix | None) -> None:
        features = self.modality_features(train)  # centred once, for the graphs and the cold map
        self._graphs = self.item_graphs(train, features)
        if self.cold_vectors == "ridge":
            self._fit_content_map(train, features)
        del features  # training keeps only the graphs and the map's rows
        try:
            super()._fit(train, valid)
        finally:
            self._graphs, self._graph_t, self._warm_t = {}, {}, None
            self._cold_map, self._cold_features = None, {}

    def _fit_content_map(self, train: Interactions, features: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """The ridge map from the graphs' modalities (`modality_features`) to item vectors, over the warm items.

        Only the features are fixed here; the targets (the warm items' final vectors) change at
        every export, and `RidgeMap` keeps the factorised system for them.
        """
        degree = np.diff(sp.csc_matrix(train.matrix).indptr)
        warm = degree > 0
        if not features or warm.all() or not warm.any():
            return  # nothing to map from, or to
        blocks = [centred for centred, _ in features.values()]
        self._cold_map = RidgeMap(np.hstack([b[warm] for b in blocks]), np.log1p(degree[warm]), self.cold_ridge)
        self._cold_features = {m: centred[~warm] for m, (centred, _) in features.items()}

    def _build(
        self, matrix: sp.csr_matrix, generator: torch.Generator, device: torch.device
    ) -> dict[str, torch.Tensor]:
        import torch

        params = super()._build(matrix, generator, device)
        warm = (np.diff(sp.csc_matrix(matrix).indptr) > 0).astype(np.float32)
        self._warm_t = torch.from_numpy(warm).to(device)
        self._graph_t = {}
        for m, g in self._graphs.items():
            coo = g.tocoo()
            self._graph_t[m] = torch.sparse_coo_tensor(
                torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64)),
                torch.from_numpy(coo.data),
                size=coo.shape,
                device=device,
                check_invariants=False,
            ).coalesce()
        return params

    def _masked_ego(self) -> torch.Tensor:
        """Ego embeddings with cold items' rows zeroed (untrained noise) before any propagation."""
        import torch

        assert self._warm_t is not None
        ego = self._params["ego"]
        mask = torch.cat([torch.ones(self._n_users, device=ego.device), self._warm_t])[:, None]
        return ego * mask

    def _ego(self) -> torch.Tensor:
        return self._masked_ego()

    def _ego_rows(self, index: torch.Tensor) -> torch.Tensor:
        """Rows of the masked ego table without building it (a cold item's row is zero)."""
        import torch

        assert self._warm_t is not None
        rows = self._rows("ego", index)
        item = index - self._n_users
        keep = torch.where(item >= 0, self._warm_t[item.clamp(min=0)], torch.ones_like(item, dtype=rows.dtype))
        return rows * keep[:, None]

    def _parts(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(users, {"collaborative": LightGCN item term, modality: its item-graph term})."""
        import torch

        n_u = self._n_users
        ego = self._masked_ego()
        emb = self._propagate(ego)
        item_ego = ego[n_u:]
        parts = {"collaborative": emb[n_u:]}
        for m, g in self._graph_t.items():
            parts[m] = self.item_weight * torch.sparse.mm(g, item_ego)
        return emb[:n_u], parts

    def _item_graph_rows(self, items: torch.Tensor) -> torch.Tensor:
        """alpha * sum_m (S_m E)_i for the given items: their rows of S times the ego rows they name.

        Only the batch's rows of S are used (2B x k entries per modality), instead of S @ E over
        the catalogue (n_items x k) in every batch. The modalities' rows are summed into one
        matrix over the distinct items they name, so each neighbour's ego row is gathered once
        per step however many batch items name it (popular neighbours are named thousands of
        times; gathering per entry made the sampled step's sparse gradient 2B x k x modalities
        rows long). S's columns are warm items, whose ego rows are unmasked.
        """
        import torch

        rows = items.cpu().numpy()
        parts = [g[rows] for g in self._graphs.values()]
        sub = sp.csr_matrix(functools.reduce(operator.add, parts)) if parts else None
        if sub is None or not sub.nnz:
            return torch.zeros(items.shape[0], self.dim, device=items.device)
        # the distinct items named and each entry's position among them, by a mark over the
        # catalogue (O(entries + items)) rather than np.unique's sort of every entry, which
        # was 30% of an epoch at 720k interactions (2B x k x modalities entries per step)
        marked = np.zeros(sub.shape[1], dtype=bool)
        marked[sub.indices] = True
        named = np.flatnonzero(marked)
        position = np.cumsum(marked, dtype=np.int64) - 1
        column = position[sub.indices]
        mix = sp.csr_matrix(
            (sub.data.astype(np.float32), column.reshape(-1), sub.indptr), shape=(len(rows), len(named))
        )
        ego = self._rows("ego", torch.from_numpy(named.astype(np.int64) + self._n_users).to(items.device))
        return self.item_weight * sparse_product(mix, ego)

    def _batch_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        import torch

        b = users.shape[0]
        idx = torch.cat([users, pos + self._n_users, neg + self._n_users])
        rows = self._final_rows(idx)  # LightGCN term: full propagation or the sampled estimator
        items = rows[b:] + self._item_graph_rows(torch.cat([pos, neg]))
        loss = bpr_loss(rows[:b], items[:b], items[b:])
        return loss + self.reg * self._ego_penalty(idx, b)

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        u, parts = self._parts()
        return u, functools.reduce(operator.add, parts.values())

    def _export(self) -> None:
        """Export factors; a cold item's vector is built from the warm items' final vectors.

        During training the item-graph term of a cold item only averages ID embeddings, which
        live on a different scale from the propagated warm vectors it competes with at serving
        time. At export, each cold item takes a vector in the warm items' space (LightGCN + item
        graph): the ridge map of its content (`cold_vectors: ridge`) or the S-weighted mean of its
        warm neighbours' vectors (`neighbours`). Either is split by modality for explanations:
        the map's rows for each modality's features, or each modality's graph.
        """
        import torch

        assert self._warm_t is not None
        with torch.no_grad():
            users, parts = self._parts()
            warm = self._warm_t.bool()
            items = functools.reduce(operator.add, parts.values())
            cold_parts = {"collaborative": torch.zeros_like(items[~warm])}
            if self._cold_map is not None:
                mapping = self._cold_map.solve(items[warm].cpu().numpy())
                start = 0
                for m, f in self._cold_features.items():
                    rows = mapping[start : start + f.shape[1]]
                    start += f.shape[1]
                    cold_parts[m] = torch.from_numpy(f @ rows).to(items.device, items.dtype)
            else:
                for m, g in self._graph_t.items():
                    cold_parts[m] = torch.sparse.mm(g, items * warm[:, None].float())[~warm]
            for k in parts:
                parts[k] = parts[k].clone()
                parts[k][~warm] = cold_parts[k]
            items = functools.reduce(operator.add, parts.values())
            self.user_factors = users.detach().cpu().numpy().astype(np.float32)
            self.item_factors = items.detach().cpu().numpy().astype(np.float32)
            self.item_parts = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in parts.items()}

    def score_parts(self, user: int, item: int) -> dict[str, float]:
        """u . (LightGCN item term) is collaborative; u . (S_m E)_i is modality m's share."""
        assert self.user_factors is not None and self.train_matrix is not None
        if not self.train_matrix[user].nnz:
            return {"popularity": float(self.score(np.asarray([user]), np.asarray([item]))[0, 0])}
        u = self.user_factors[user]
        return {k: float(v[item] @ u) for k, v in self.item_parts.items()}

    def _state(self) -> dict[str, np.ndarray]:
        return {**super()._state(), **{f"part_{k}": v for k, v in self.item_parts.items()}}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        super()._load_state(state)
        self.item_parts = {
            k[len("part_") :]: np.asarray(v, np.float32) for k, v in state.items() if k.startswith("part_")
        }
