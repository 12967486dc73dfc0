"""LightGCN: collaborative filtering by linear propagation over the user-item graph.

He et al., SIGIR 2020. Embeddings E0 of users and items are propagated K times over the
symmetrically normalised bipartite adjacency A_hat = D^-1/2 A D^-1/2 (no weights, no
non-linearity), and the final representation is the mean of E0..EK. Trained with the BPR loss
plus L2 on the batch's ego (layer-0) embeddings.

Speed: A_hat is built once per fit as a torch sparse CSR tensor. Each step propagates the
full graph once (the standard formulation; `propagation: full`, or `auto`). A_hat is
symmetric, so the backward pass of A_hat @ X is A_hat @ grad: a custom autograd function reuses
the same CSR tensor instead of letting torch transpose it at every step.

At a fixed batch size that costs (interactions / batch) x edges per epoch: quadratic in the
data. So the batch grows with the data instead: an epoch is at most `max_full_steps` full-graph
steps (batch = max(batch_size, interactions / max_full_steps)), i.e. O(interactions + edges).
Much of a step's cost is the propagation, which does not depend on the batch, so the larger
batch costs far less than the steps it replaces; the learning rate follows the square-root
rule for Adam. On validation (MovieLens-100K and a synthetic shop of 180k interactions) this
kept Recall@20 within the seeds' spread and reached it in less CPU time at the larger size; at
720k interactions it cost .0024 of it for 3.4x less CPU (docs/scaling.md, "LightGCN: a bounded
number of full steps per epoch").

`propagation: sampled` computes only the batch's nodes instead, with the control-variate
estimator of VR-GCN (Chen, Zhu & Song, ICML 2018) and random-walk samples of the layers:

    F_v = (E_v + H_v + sum_l mean_walks w_l (E - E~)[x_l]) / (K + 1),   H = sum_l A_hat^l E~

E~ is a snapshot of the ego table and H its exact propagation, refreshed every few steps (one
full propagation per refresh, without gradient); x_l is the l-th node of a random walk from v
(uniform neighbour at each hop) and w_l = prod over its hops of A_hat[x, y] * deg(x), so
E[w_l (E - E~)[x_l]] = (A_hat^l (E - E~))_v. The forward is exact right after a refresh and
unbiased in between; the gradient with respect to E is unbiased (its expectation is the
full-graph gradient's A_hat^l-transposed sum) and touches only the batch's nodes and the walks'
nodes, so the ego table trains with sparse gradients and lazy Adam. A step costs
O(batch x walks x K x d) and the refreshes are spaced so that they cost no more than the steps:
an epoch is O(interactions + edges) too, but with a far higher constant (a walk row costs ~40x
an edge of the CSR product), so `auto` no longer picks it: it is kept as an explicit option.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from mmrec.constants import SEED
from mmrec.data.interactions import Interactions
from mmrec.errors import ModelError
from mmrec.models.bpr import bpr_loss, l2_penalty
from mmrec.models.registry import register_model
from mmrec.models.training import FactorModel, check_positive

if TYPE_CHECKING:
    import torch


def normalized_adjacency(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """D^-1/2 A D^-1/2 of the bipartite graph [[0, R], [R^T, 0]], users first then items.

    Nodes without edges (users or items absent from training) have degree 0 and get an
    all-zero row, so they keep only their ego embedding.
    """
    r = sp.csr_matrix(matrix, dtype=np.float32)
    r.data[:] = 1.0
    adj = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)
    deg = np.asarray(adj.sum(axis=1)).ravel()
    with np.errstate(divide="ignore"):
        inv_sqrt = np.where(deg > 0, 1.0 / np.sqrt(deg), 0.0).astype(np.float32)
    d = sp.diags(inv_sqrt)
    out = sp.csr_matrix(d @ adj @ d, dtype=np.float32)
    out.sort_indices()
    return out


def to_torch_csr(matrix: sp.csr_matrix, device: torch.device) -> torch.Tensor:
    """A scipy CSR as a torch sparse CSR tensor (CSR @ dense is torch's fastest CPU spmm).

    Indices are int32 when they fit: the CPU kernel (MKL) works in int32 and would otherwise
    convert both index arrays on every product.
    """
    import torch

    index_dtype = np.int32 if matrix.nnz < np.iinfo(np.int32).max else np.int64

    with warnings.catch_warnings():
        # "CSR support is in beta" / "invariant checks disabled": scipy already built a valid CSR
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr.astype(index_dtype)),
            torch.from_numpy(matrix.indices.astype(index_dtype)),
            torch.from_numpy(matrix.data.astype(np.float32)),
            size=matrix.shape,
            device=device,
        )


@functools.cache
def _sparse_product_function() -> Any:
    """The autograd function M @ X for a constant sparse M whose transpose M^T is given (built
    lazily: torch is imported late). A symmetric M (LightGCN's A_hat) is passed as its own
    transpose, so no step transposes it."""
    import torch

    class SparseProduct(torch.autograd.Function):
        @staticmethod
        def forward(ctx, m: torch.Tensor, m_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            ctx.m_t = m_t
            return m @ x

        @staticmethod
        def backward(ctx, grad: torch.Tensor) -> tuple[None, None, torch.Tensor]:
            return None, None, ctx.m_t @ grad

    return SparseProduct


def sparse_product(matrix: sp.csr_matrix, x: torch.Tensor) -> torch.Tensor:
    """`matrix @ x` with gradient to `x`, for a per-step constant scipy CSR `matrix`.

    Its transpose is built by scipy (O(nnz)) rather than by torch's sparse autograd, and both
    are CSR: torch's fastest CPU sparse-dense product.
    """
    return _sparse_product_function().apply(
        to_torch_csr(matrix, x.device), to_torch_csr(sp.csr_matrix(matrix.T), x.device), x
    )


#: propagation modes: the whole graph every step, or the batch's nodes with sampled walks.
#: `auto` is `full`: with the steps per epoch bounded (`max_full_steps`) the exact epoch is
#: O(edges), and it measured cheaper than the sampled one at every size benchmarks/scaling.py
#: covers (2k-32k items, 45k-720k interactions, CPU); the name stays so configurations keep working.
PROPAGATIONS = ("auto", "full", "sampled")


def random_walks(
    adj: sp.csr_matrix, nodes: np.ndarray, walks: int, length: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """`walks` random walks of `length` hops from each node, with their importance weights.

    Each hop moves to a uniform random neighbour y of x and multiplies the weight by
    A[x, y] * deg(x), so weight * value[node at hop l] is an unbiased estimate of
    (A^l value)[start]. A node without neighbours ends the walk's contribution (weight 0).

    Returns:
        (positions, weights), each (length, len(nodes) * walks): hop l of walk j from node i
        at column i * walks + j.
    """
    indptr, indices, data = adj.indptr, adj.indices, adj.data
    x = np.repeat(np.asarray(nodes, np.int64), walks)
    w = np.ones(len(x), np.float32)
    positions = np.empty((length, len(x)), np.int64)
    weights = np.empty((length, len(x)), np.float32)
    for hop in range(length):
        start = indptr[x]
        deg = indptr[x + 1] - start
        edge = start + (rng.random(len(x)) * deg).astype(np.int64)
        alive = deg > 0
        edge = np.where(alive, edge, 0)  # any valid slot; its weight is zeroed below
        w = w * np.where(alive, data[edge] * deg, 0.0).astype(np.float32)
        x = np.where(alive, indices[edge], x)
        positions[hop], weights[hop] = x, w
    return positions, weights


@register_model
class LightGCN(FactorModel):
    """LightGCN in torch with Adam, early stopping on validation Recall@20.

    Args:
        dim: embedding size.
        n_layers: propagation steps K; the representation is the mean of layers 0..K.
        lr: Adam learning rate.
        reg: weight of the L2 penalty on the batch's ego embeddings.
        batch_size: (user, positive, negative) triples per step, at least (see max_full_steps).
        max_epochs, eval_every, patience, min_epochs: as in `BPR` (best epoch restored).
        init_std: standard deviation of the normal initialisation of the ego embeddings.
        seed: seeds initialisation, shuffling and negative sampling (same seed, same model on CPU).
        device: torch device to train on; the propagated embeddings are cached for scoring.
        propagation: "full" (or "auto") propagates the whole graph every step (exact, O(edges)
            per step); "sampled" computes only the batch's nodes with control variates and
            random walks (module docstring; O(batch x walks) per step).
        walks: random walks per batch node and step ("sampled").
        refresh_every: steps between refreshes of the propagated snapshot ("sampled"); 0 spaces
            them so that their cost matches the steps' (edges / (3 x batch_size x walks)).
        max_full_steps: full-graph steps per epoch at most (0: no bound). Where
            interactions / batch_size would need more, the batch grows to
            ceil(interactions / max_full_steps) and lr by the square root of that growth, so
            an epoch costs at most that many propagations: linear in the data instead of
            quadratic at a fixed batch size (docs/scaling.md). Not applied to sampled steps,
            whose cost is O(batch) already.

    Users without training interactions are scored by popularity.

    The defaults were chosen on validation Recall@20 (mean of three seeds) of MovieLens-100K's
    temporal split (`benchmarks/baselines.py`); reg 1e-5..1e-3, lr 0.005..0.02, batch 2048..8192
    and 2 or 3 layers all land within 0.01 of each other there. `max_full_steps` 10 came out
    within the seeds' spread of unbounded steps there (.2225 against .2238, four seeds) and is
    the default for what it saves on larger data; examples/ml100k-mm keeps the unbounded steps.
    """

    name = "lightgcn"

    def __init__(
        self,
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
        max_full_steps: int = 10,
    ) -> None:
        super().__init__()
        check_positive(dim=dim, init_std=init_std, walks=walks)
        if max_full_steps < 0:
            raise ModelError(f"{self.name}: max_full_steps must be >= 0 (0: no bound), got {max_full_steps}")
        if n_layers < 0:
            raise ModelError(f"lightgcn: n_layers must be >= 0, got {n_layers}")
        if propagation not in PROPAGATIONS:
            raise ModelError(f"{self.name}: propagation must be one of {PROPAGATIONS}, got {propagation!r}")
        if refresh_every < 0:
            raise ModelError(f"{self.name}: refresh_every must be >= 0 (0: automatic), got {refresh_every}")
        self.propagation = str(propagation)
        self.walks = int(walks)
        self.refresh_every = int(refresh_every)
        self.max_full_steps = int(max_full_steps)
        self.dim = int(dim)
        self.n_layers = int(n_layers)
        self.lr = float(lr)
        self.reg = float(reg)
        self.batch_size = int(batch_size)
        self.max_epochs = int(max_epochs)
        self.eval_every = int(eval_every)
        self.patience = int(patience)
        self.min_epochs = int(min_epochs)
        self.init_std = float(init_std)
        self.seed = int(seed)
        self.device = str(device)
        self._adj: torch.Tensor | None = None
        self._n_users = 0
        # sampled propagation: the adjacency (scipy, for walks), the snapshot E~ and H, the step
        self._sampled = False
        self._adj_np: sp.csr_matrix | None = None
        self._snapshot: tuple[torch.Tensor, torch.Tensor] | None = None
        self._step = 0
        self._refresh = 1
        self._walk_rng = np.random.default_rng(self.seed)

    def uses_sampling(self) -> bool:
        """Whether a fit computes sampled steps (`propagation: sampled` with layers to propagate)."""
        return self.propagation == "sampled" and self.n_layers > 0

    def _step_settings(self, n_pairs: int) -> tuple[int, float]:
        """At most `max_full_steps` full-graph steps per epoch: the batch grows with the data.

        The learning rate grows with the square root of the batch's growth, the scaling rule
        for Adam (Malladi et al., NeurIPS 2022): without it, ten times fewer steps per epoch
        need more epochs and validation Recall@20 came out lower (docs/scaling.md).
        """
        if self._sampled or not self.max_full_steps:
            return self.batch_size, self.lr
        batch = max(self.batch_size, math.ceil(n_pairs / self.max_full_steps))
        return batch, self.lr * math.sqrt(batch / self.batch_size)

    def _build(
        self, matrix: sp.csr_matrix, generator: torch.Generator, device: torch.device
    ) -> dict[str, torch.Tensor]:
        import torch

        n_users, n_items = matrix.shape
        self._n_users = n_users
        adj = normalized_adjacency(matrix)
        self._adj = to_torch_csr(adj, device)
        self._sampled = self.uses_sampling()
        self._adj_np = adj if self._sampled else None
        self._snapshot, self._step = None, 0
        self._refresh = self.refresh_every or max(1, math.ceil(adj.nnz / (3 * self.batch_size * self.walks)))
        self._walk_rng = np.random.default_rng(self.seed)
        # sampled steps read the ego table by rows only: sparse gradients and lazy Adam (the
        # FactorModel mechanism); an instance value, since the mode is decided per training set
        vars(self)["sparse_tables"] = ("ego",) if self._sampled else ()
        ego = torch.randn(n_users + n_items, self.dim, generator=generator) * self.init_std
        return {"ego": ego.to(device).requires_grad_()}

    def _ego(self) -> torch.Tensor:
        """The ego table propagation starts from (the parameters; subclasses may mask rows)."""
        return self._params["ego"]

    def _ego_rows(self, index: torch.Tensor) -> torch.Tensor:
        """Rows of `_ego()` through the (sparse-gradient while sampling) row lookup."""
        return self._rows("ego", index)

    def _propagate(self, ego: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of the layer embeddings, (n_users + n_items, dim), from `ego` (default: the parameters)."""
        assert self._adj is not None
        spmm = _sparse_product_function()
        x = self._params["ego"] if ego is None else ego
        total = x
        for _ in range(self.n_layers):
            x = spmm.apply(self._adj, self._adj, x)  # A_hat is symmetric: its own transpose
            total = total + x
        return total / (self.n_layers + 1)

    def _refresh_snapshot(self) -> None:
        """E~ = the ego table now, H = sum_l A_hat^l E~ (one full propagation, no gradient)."""
        import torch

        assert self._adj is not None
        with torch.no_grad():
            ego = self._ego().detach().clone()
            x, layers = ego, torch.zeros_like(ego)
            for _ in range(self.n_layers):
                x = self._adj @ x
                layers += x
        self._snapshot = (ego, layers)

    def _sampled_rows(self, index: torch.Tensor) -> torch.Tensor:
        """Final representations of nodes `index` by the control-variate walk estimator."""
        import torch

        assert self._adj_np is not None
        if self._snapshot is None or self._step % self._refresh == 0:
            self._refresh_snapshot()
        assert self._snapshot is not None
        self._step += 1
        stale, layers = self._snapshot
        nodes, inverse = torch.unique(index, return_inverse=True)
        n, f, hops = int(nodes.shape[0]), self.walks, self.n_layers
        positions, weights = random_walks(self._adj_np, nodes.cpu().numpy(), f, hops, self._walk_rng)
        where = torch.from_numpy(positions.reshape(-1)).to(index.device)
        rows = self._ego_rows(torch.cat([nodes, where]))  # (n + hops * n * f, d)
        delta = (rows[n:] - stale[where]) * torch.from_numpy(weights.reshape(-1, 1)).to(rows.device)
        walked = delta.view(hops, n, f, -1).sum(dim=(0, 2)) / f
        final = (rows[:n] + layers[nodes] + walked) / (hops + 1)
        return final[inverse]

    def _final_rows(self, index: torch.Tensor) -> torch.Tensor:
        """Final (propagated) representations of nodes `index`, (len(index), dim)."""
        if self._sampled:
            return self._sampled_rows(index)
        return self._propagate(self._ego()).index_select(0, index)

    def _ego_penalty(self, idx: torch.Tensor, b: int) -> torch.Tensor:
        """`l2_penalty` of the ego rows the batch names (`idx`, repeats counted).

        A full step computes it over the table, each row weighted by how often the batch names
        it: the same value without gathering 3 x batch rows and scattering their gradient back,
        which was the costliest part of a large step (docs/scaling.md). A sampled step keeps the
        row lookup, whose gradient must stay sparse.
        """
        if self._sampled:
            return l2_penalty(self._rows("ego", idx), b)
        import torch

        ego = self._params["ego"]
        counts = torch.bincount(idx, minlength=ego.shape[0]).to(ego.dtype)
        return 0.5 * torch.dot(counts, ego.square().sum(dim=1)) / b

    def _batch_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        import torch

        b = users.shape[0]
        # one gather (and one scatter in backward) for users, positives and negatives together
        idx = torch.cat([users, pos + self._n_users, neg + self._n_users])  # (3B,)
        rows = self._final_rows(idx)  # (3B, d)
        loss = bpr_loss(rows[:b], rows[b : 2 * b], rows[2 * b :])
        return loss + self.reg * self._ego_penalty(idx, b)

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self._propagate()
        return emb[: self._n_users], emb[self._n_users :]

    def _fit(self, train: Interactions, valid: sp.csr_matrix | None) -> None:
        try:
            super()._fit(train, valid)
        finally:
            # the cached factors are all scoring needs
            self._adj, self._adj_np, self._snapshot = None, None, None
