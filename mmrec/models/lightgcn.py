"""LightGCN: collaborative filtering by linear propagation over the user-item graph.

He et al., SIGIR 2020. Embeddings E0 of users and items are propagated K times over the
symmetrically normalised bipartite adjacency A_hat = D^-1/2 A D^-1/2 (no weights, no
non-linearity), and the final representation is the mean of E0..EK. Trained with the BPR loss
plus L2 on the batch's ego (layer-0) embeddings.

Speed: A_hat is built once per fit as a torch sparse CSR tensor; each step propagates the full
graph once (the standard formulation). A_hat is symmetric, so the backward pass of A_hat @ X is
A_hat @ grad: a custom autograd function reuses the same CSR tensor instead of letting torch
transpose it at every step.
"""

from __future__ import annotations

import functools
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
def _symmetric_spmm() -> Any:
    """The autograd function A @ X for a symmetric sparse A (built lazily: torch is imported late)."""
    import torch

    class SymmetricSpMM(torch.autograd.Function):
        @staticmethod
        def forward(ctx, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            ctx.adj = adj
            return adj @ x

        @staticmethod
        def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:  # type: ignore[override]
            return None, ctx.adj @ grad  # A^T = A

    return SymmetricSpMM


@register_model
class LightGCN(FactorModel):
    """LightGCN in torch with Adam, early stopping on validation Recall@20.

    Args:
        dim: embedding size.
        n_layers: propagation steps K; the representation is the mean of layers 0..K.
        lr: Adam learning rate.
        reg: weight of the L2 penalty on the batch's ego embeddings.
        batch_size: (user, positive, negative) triples per step; large batches make an epoch a
            few full-graph propagations.
        max_epochs, eval_every, patience, min_epochs: as in `BPR` (best epoch restored).
        init_std: standard deviation of the normal initialisation of the ego embeddings.
        seed: seeds initialisation, shuffling and negative sampling (same seed, same model on CPU).
        device: torch device to train on; the propagated embeddings are cached for scoring.

    Users without training interactions are scored by popularity.

    The defaults were chosen on validation Recall@20 (mean of three seeds) of MovieLens-100K's
    temporal split (`benchmarks/baselines.py`); reg 1e-5..1e-3, lr 0.005..0.02, batch 2048..8192
    and 2 or 3 layers all land within 0.01 of each other there.
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
    ) -> None:
        super().__init__()
        check_positive(dim=dim, init_std=init_std)
        if n_layers < 0:
            raise ModelError(f"lightgcn: n_layers must be >= 0, got {n_layers}")
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
        self._spmm: Any = None  # the autograd Function class, made on first fit
        self._n_users = 0

    def _build(
        self, matrix: sp.csr_matrix, generator: torch.Generator, device: torch.device
    ) -> dict[str, torch.Tensor]:
        import torch

        n_users, n_items = matrix.shape
        self._n_users = n_users
        self._adj = to_torch_csr(normalized_adjacency(matrix), device)
        self._spmm = _symmetric_spmm()
        ego = torch.randn(n_users + n_items, self.dim, generator=generator) * self.init_std
        return {"ego": ego.to(device).requires_grad_()}

    def _propagate(self, ego: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of the layer embeddings, (n_users + n_items, dim), from `ego` (default: the parameters)."""
        assert self._adj is not None and self._spmm is not None
        x = self._params["ego"] if ego is None else ego
        total = x
        for _ in range(self.n_layers):
            x = self._spmm.apply(self._adj, x)
            total = total + x
        return total / (self.n_layers + 1)

    def _batch_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        import torch

        b = users.shape[0]
        # one gather (and one scatter in backward) for users, positives and negatives together
        idx = torch.cat([users, pos + self._n_users, neg + self._n_users])  # (3B,)
        rows = self._propagate()[idx]  # (3B, d)
        loss = bpr_loss(rows[:b], rows[b : 2 * b], rows[2 * b :])
        return loss + self.reg * l2_penalty(self._params["ego"][idx], b)

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self._propagate()
        return emb[: self._n_users], emb[self._n_users :]

    def _fit(self, train: Interactions, valid: sp.csr_matrix | None) -> None:
        try:
            super()._fit(train, valid)
        finally:
            self._adj = None  # the cached factors are all scoring needs
