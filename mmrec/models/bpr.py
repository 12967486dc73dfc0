"""BPR-MF: matrix factorisation trained with the Bayesian personalised ranking loss.

Rendle et al., UAI 2009. Each training pair (u, i) is matched with an item j the user never
interacted with, and the model learns to score i above j: loss = -log sigmoid(x_ui - x_uj),
x = <p_u, q_i>, plus L2 on the embeddings of the batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import scipy.sparse as sp

from mmrec.constants import SEED
from mmrec.models.registry import register_model
from mmrec.models.training import FactorModel, check_positive

if TYPE_CHECKING:
    import torch


def bpr_loss(u: torch.Tensor, p: torch.Tensor, n: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
    """Mean -log sigmoid(<u, p> - <u, n> [+ offset]) over the batch; softplus keeps it stable for large gaps.

    `offset` (B,) is added to each score difference: b_p - b_n for a model with item biases.
    """
    import torch.nn.functional as F

    diff = (u * (p - n)).sum(dim=-1)
    return F.softplus(-(diff if offset is None else diff + offset)).mean()


def l2_penalty(rows: torch.Tensor, batch_size: int) -> torch.Tensor:
    """0.5 * sum of squared entries of the embeddings the batch used, divided by the batch size.

    Regularising only what the batch touched (not the whole table) is the usual choice for
    sparse data: rarely seen items are not shrunk at every step.
    """
    return 0.5 * rows.square().sum() / batch_size


@register_model
class BPR(FactorModel):
    """BPR-MF in torch with (lazy, sparse) Adam, early stopping on validation Recall@20.

    The embedding tables get sparse gradients and torch's SparseAdam: a step updates the rows
    of the batch's users and items only, so its cost does not grow with the catalogue (dense
    Adam rewrote all (n_users + n_items) x d entries every step; single-process training only,
    DDP keeps dense Adam).

    Args:
        dim: embedding size.
        lr: Adam learning rate.
        reg: weight of the L2 penalty on the batch embeddings (see `l2_per_example`).
        batch_size: (user, positive, negative) triples per step; every training pair is seen
            once per epoch with one uniformly drawn negative.
        max_epochs: upper bound on epochs; early stopping usually ends sooner.
        eval_every: epochs between validation evaluations.
        patience: epochs (not evaluations) without improvement of validation Recall@20 before
            stopping; the best epoch's weights are restored. Larger than `eval_every`, or the
            first evaluation that does not improve stops training.
        init_std: standard deviation of the normal initialisation.
        seed: seeds initialisation, shuffling and negative sampling (same seed, same model on CPU).
        device: torch device to train on ("auto", "cpu", "cuda"); scoring runs in numpy.
        min_epochs: never stop before this epoch (early epochs of a large catalogue can plateau
            before the model starts to learn).
        item_bias: learn a bias per item (x_ui = <p_u, q_i> + b_i), as Cornac's and Rendle's
            BPR do; the bias absorbs item popularity, which the factors otherwise have to encode.
            It travels as an extra factor column (users 1, items b_i), so scoring, fold-in and
            saving stay the dot product of two matrices.
        sparse_updates: train the ID tables with sparse gradients and a lazy Adam (an optimiser
            step touches the batch's rows only, so an epoch costs O(interactions), not
            O(steps x catalogue)). Lazy Adam keeps no moments for untouched rows, so it is not
            the dense Adam trajectory; DDP (which all-reduces dense gradients) always uses dense
            Adam, so set False to compare a single process with a DDP run.

    Users without training interactions are scored by popularity.

    The defaults were chosen on validation Recall@20 (mean of three seeds) of MovieLens-100K's
    temporal split (`benchmarks/baselines.py`): a lower learning rate with a small init made
    early stopping less sensitive to the seed than lr 0.005.
    """

    name = "bpr"
    sparse_tables = ("user", "item", "item_bias")  # read by row only: lazy Adam on the batch's rows

    def __init__(
        self,
        dim: int = 64,
        lr: float = 2e-3,
        reg: float = 3e-3,
        batch_size: int = 2048,
        max_epochs: int = 300,
        eval_every: int = 1,
        patience: int = 10,
        init_std: float = 0.01,
        seed: int = SEED,
        device: str = "cpu",
        min_epochs: int = 0,
        sparse_updates: bool = True,
        item_bias: bool = False,
    ) -> None:
        super().__init__()
        check_positive(dim=dim, init_std=init_std)
        self.dim = int(dim)
        self.lr = float(lr)
        self.reg = float(reg)
        self.batch_size = int(batch_size)
        self.max_epochs = int(max_epochs)
        self.eval_every = int(eval_every)
        self.patience = int(patience)
        self.min_epochs = int(min_epochs)
        self.sparse_updates = bool(sparse_updates)
        self.item_bias = bool(item_bias)
        self.init_std = float(init_std)
        self.seed = int(seed)
        self.device = str(device)

    def _build(
        self, matrix: sp.csr_matrix, generator: torch.Generator, device: torch.device
    ) -> dict[str, torch.Tensor]:
        import torch

        n_users, n_items = matrix.shape
        user = torch.randn(n_users, self.dim, generator=generator) * self.init_std
        item = torch.randn(n_items, self.dim, generator=generator) * self.init_std
        params = {"user": user.to(device).requires_grad_(), "item": item.to(device).requires_grad_()}
        if self.item_bias:  # (n_items, 1): a 2-D table, so it gets sparse rows like the factors
            params["item_bias"] = torch.zeros(n_items, 1, device=device).requires_grad_()
        return params

    def _batch_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        import torch

        b = users.shape[0]
        u = self._rows("user", users)  # (B, d)
        items = self._rows("item", torch.cat([pos, neg]))  # (2B, d): one gather, one scatter back
        p, n = items[:b], items[b:]
        penalty = l2_penalty(u, b) + l2_penalty(items, b)
        if not self.item_bias:
            return bpr_loss(u, p, n) + self.reg * penalty
        bias = self._rows("item_bias", torch.cat([pos, neg]))  # (2B, 1)
        offset = (bias[:b] - bias[b:]).squeeze(-1)  # (B,)
        return bpr_loss(u, p, n, offset) + self.reg * (penalty + l2_penalty(bias, b))

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        user, item = self._params["user"], self._params["item"]
        if not self.item_bias:
            return user, item
        ones = torch.ones(user.shape[0], 1, dtype=user.dtype, device=user.device)
        return torch.cat([user, ones], dim=1), torch.cat([item, self._params["item_bias"]], dim=1)
