"""VBPR: BPR whose item representation adds projections of the item's content features.

He & McAuley, AAAI 2016, generalised from one visual feature to any set of modalities:

    x_ui = beta_i + <p_u, q_i> + <theta_u, sum_m E_m f_im> + sum_m <beta'_m, f_im>

p/q are collaborative factors, E_m (d_m -> content_dim) projects modality m's feature f_im
(mean-centred, L2-normalised; zero where the item has no such vector, so a missing modality
contributes nothing rather than a fake "zero" signal), theta_u is the user's taste in content
space and beta'_m a content bias (predicted popularity from content).

Cold items (no training interaction) have untrained q_i and beta_i (only pushed down as
negatives), so they are zeroed: a cold item is scored from its content part alone, which the
projections learned on warm items.

Scoring is a dot product of exported factors [p_u, theta_u, 1] . [q_i, c_i, b_i], so it reuses
`FactorModel` (training loop, early stopping, persistence); features are needed only to fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from mmrec.constants import SEED
from mmrec.data.interactions import Interactions
from mmrec.errors import ModelError
from mmrec.models.bpr import l2_penalty
from mmrec.models.item_features import centred_unit, check_modalities, modality_mask
from mmrec.models.registry import register_model
from mmrec.models.training import FactorModel, check_positive

if TYPE_CHECKING:
    import torch


@register_model
class VBPR(FactorModel):
    """VBPR over any modalities, in torch with Adam and early stopping on validation Recall@20.

    Args:
        modalities: the item features used (each must be provided to `fit`).
        dim: size of the collaborative factors p_u, q_i (0 = content only).
        content_dim: size of the content space (theta_u, E_m outputs).
        lr: Adam learning rate.
        reg: L2 weight on the batch's user/item factors and item biases.
        content_reg: L2 weight on the projections E_m and content biases beta'_m (whole tensors,
            scaled like the batch penalty).
        batch_size, max_epochs, eval_every, patience, min_epochs, sparse_updates: as in `BPR` (best
            epoch restored).
        init_std: standard deviation of the normal initialisation.
        id_dropout: share of the batch's items whose ID factors and bias are dropped in a step
            (DropoutNet-style): the content part must then rank them alone, as it must for cold
            items at serving time. 0 is the original VBPR. On ml100k-mm it did not help
            (cold-slice Recall@20 3.2x random at 0.2, 3.1x at 0.5, against 3.25x at 0).
        seed: seeds initialisation, shuffling and negative sampling (same seed, same model on CPU).
        device: torch device to train on; scoring runs in numpy.

    Users without training interactions are scored by popularity.
    """

    name = "vbpr"
    sparse_tables = ("user", "theta", "item")  # read by row only: lazy Adam on the batch's rows

    def __init__(
        self,
        modalities: Sequence[str] = ("text", "image"),
        dim: int = 64,
        content_dim: int = 64,
        lr: float = 2e-3,
        reg: float = 3e-3,
        content_reg: float = 1e-3,
        batch_size: int = 2048,
        max_epochs: int = 300,
        eval_every: int = 1,
        patience: int = 10,
        init_std: float = 0.01,
        id_dropout: float = 0.0,
        seed: int = SEED,
        device: str = "cpu",
        min_epochs: int = 0,
        sparse_updates: bool = True,
    ) -> None:
        super().__init__()
        self.modalities = list(check_modalities(self.name, modalities))
        if dim < 0:
            raise ModelError(f"vbpr: dim must be >= 0, got {dim}")
        check_positive(content_dim=content_dim, init_std=init_std)
        if reg < 0 or content_reg < 0:
            raise ModelError(f"vbpr: reg and content_reg must be >= 0, got {reg}, {content_reg}")
        self.dim = int(dim)
        self.content_dim = int(content_dim)
        self.lr = float(lr)
        self.reg = float(reg)
        self.content_reg = float(content_reg)
        self.batch_size = int(batch_size)
        self.max_epochs = int(max_epochs)
        self.eval_every = int(eval_every)
        self.patience = int(patience)
        self.min_epochs = int(min_epochs)
        self.sparse_updates = bool(sparse_updates)
        if not 0.0 <= id_dropout < 1.0:
            raise ModelError(f"vbpr: id_dropout must be in [0, 1), got {id_dropout}")
        self.init_std = float(init_std)
        self.id_dropout = float(id_dropout)
        self.seed = int(seed)
        self.device = str(device)
        self._feats: list[np.ndarray] = []  # per modality, centred unit rows (set during fit)
        self._feat_t: list[torch.Tensor] = []
        self._warm: torch.Tensor | None = None
        self._gen: torch.Generator | None = None
        self.content_parts: dict[str, np.ndarray] = {}  # modality -> (n_items, content_dim + 1)

    def _fit(self, train: Interactions, valid: sp.csr_matrix | None) -> None:
        self._feats = []
        for modality in self.modalities:
            matrix = train.require(modality)
            if matrix.shape[0] != train.n_items:
                raise ModelError(f"vbpr: {modality} features have {matrix.shape[0]} rows for {train.n_items} items")
            self._feats.append(centred_unit(matrix, modality_mask(train, modality)))
        try:
            super()._fit(train, valid)
        finally:
            self._feats, self._feat_t, self._warm, self._gen = [], [], None, None

    def _build(
        self, matrix: sp.csr_matrix, generator: torch.Generator, device: torch.device
    ) -> dict[str, torch.Tensor]:
        import torch

        n_users, n_items = matrix.shape

        def randn(*shape: int) -> torch.Tensor:
            return (torch.randn(*shape, generator=generator) * self.init_std).to(device).requires_grad_()

        self._gen = generator  # the id-dropout draws: same seed, same run
        self._feat_t = [torch.from_numpy(f).to(device) for f in self._feats]
        warm = np.diff(sp.csc_matrix(matrix).indptr) > 0
        self._warm = torch.from_numpy(warm.astype(np.float32)).to(device)
        params = {
            "user": randn(n_users, self.dim),
            "item": randn(n_items, self.dim),
            "theta": randn(n_users, self.content_dim),
            "item_bias": torch.zeros(n_items, device=device).requires_grad_(),
        }
        for m, f in zip(self.modalities, self._feats, strict=True):
            params[f"proj_{m}"] = randn(f.shape[1], self.content_dim)
            params[f"cbias_{m}"] = torch.zeros(f.shape[1], device=device).requires_grad_()
        return params

    def _content(self, items: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(content embeddings (n, content_dim), content bias (n,)) of `items` (all when None)."""
        emb: torch.Tensor | None = None
        bias: torch.Tensor | None = None
        for m, f in zip(self.modalities, self._feat_t, strict=True):
            x = f if items is None else f[items]
            e = x @ self._params[f"proj_{m}"]
            b = x @ self._params[f"cbias_{m}"]
            emb = e if emb is None else emb + e
            bias = b if bias is None else bias + b
        assert emb is not None and bias is not None
        return emb, bias

    def _batch_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        b = users.shape[0]
        items = torch.cat([pos, neg])
        p_u, th_u = self._rows("user", users), self._rows("theta", users)
        q, bi = self._rows("item", items), self._params["item_bias"][items]
        c, cb = self._content(items)
        q_used, bi_used = q, bi
        if self.id_dropout > 0:
            keep = (torch.rand(items.shape[0], generator=self._gen) >= self.id_dropout).to(q.device, q.dtype)
            q_used, bi_used = q * keep[:, None], bi * keep
        x = bi_used + cb + (torch.cat([p_u, p_u]) * q_used).sum(-1) + (torch.cat([th_u, th_u]) * c).sum(-1)
        loss = F.softplus(-(x[:b] - x[b:])).mean()
        penalty = l2_penalty(p_u, b) + l2_penalty(th_u, b) + l2_penalty(q, b) + l2_penalty(bi, b)
        content = sum(
            self._params[f"proj_{m}"].square().sum() + self._params[f"cbias_{m}"].square().sum()
            for m in self.modalities
        )
        return loss + self.reg * penalty + self.content_reg * 0.5 * content / b

    def _export(self) -> None:
        import torch

        super()._export()
        # Per-modality item content (projection, content bias) so explanations can split the score.
        with torch.no_grad():
            self.content_parts = {
                m: torch.cat([f @ self._params[f"proj_{m}"], (f @ self._params[f"cbias_{m}"])[:, None]], dim=1)
                .cpu()
                .numpy()
                .astype(np.float32)
                for m, f in zip(self.modalities, self._feat_t, strict=True)
            }

    def score_parts(self, user: int, item: int) -> dict[str, float]:
        """theta_u . E_m f_im + beta'_m . f_im per modality; the rest (p_u . q_i + beta_i) is collaborative."""
        assert self.user_factors is not None and self.item_factors is not None
        total = float(self.score(np.asarray([user]), np.asarray([item]))[0, 0])
        if not self.train_matrix[user].nnz:  # type: ignore[index]
            return {"popularity": total}
        theta = self.user_factors[user, self.dim : self.dim + self.content_dim]
        parts = {m: float(c[item, :-1] @ theta + c[item, -1]) for m, c in self.content_parts.items()}
        return {"collaborative": total - sum(parts.values()), **parts}

    def _state(self) -> dict[str, np.ndarray]:
        return {**super()._state(), **{f"content_{m}": c for m, c in self.content_parts.items()}}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        super()._load_state(state)
        self.content_parts = {
            m: np.asarray(state[f"content_{m}"], np.float32) for m in self.modalities if f"content_{m}" in state
        }

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        assert self._warm is not None
        emb, cbias = self._content()
        n_users = self._params["user"].shape[0]
        ones = torch.ones(n_users, 1, device=emb.device)
        warm = self._warm[:, None]
        users = torch.cat([self._params["user"], self._params["theta"], ones], dim=1)
        bias = self._params["item_bias"] * self._warm + cbias
        items = torch.cat([self._params["item"] * warm, emb, bias[:, None]], dim=1)
        return users, items
