"""Pieces every epoch-trained model shares: seeding, negative sampling, the early-stopping loop.

Kept out of the model classes so BPR-MF, LightGCN and later multimodal models train and stop
the same way, and a fix to the loop (or the sampler) reaches all of them at once.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import scipy.sparse as sp

from mmrec.data.interactions import Interactions
from mmrec.errors import ConfigError, ModelError
from mmrec.models.base import Recommender, popularity_scores

if TYPE_CHECKING:
    import torch

    from mmrec.models.modules import BatchLossModule

logger = logging.getLogger(__name__)

#: the validation metric early stopping watches (a key of `evaluate_scores`' result)
STOP_K = 20
STOP_METRIC = f"recall@{STOP_K}"


#: what each validation check of `run_epochs` is reported to: callback(epoch, value), or None
_EVALUATION_CALLBACK: contextvars.ContextVar[Callable[[int, float], None] | None] = contextvars.ContextVar(
    "mmrec_evaluation_callback", default=None
)


class TrainingPruned(Exception):
    """Raised by an evaluation callback to end a training run early (a tuner pruning a trial).

    Not an `MMRecError`: nothing is wrong, the caller that installed the callback asked for the
    stop and catches it. The model is left unfitted (its fit did not complete).

    Attributes:
        epoch: the epoch whose validation check triggered the stop.
        value: that check's validation metric.
    """

    def __init__(self, epoch: int, value: float) -> None:
        super().__init__(
            f"training stopped by the evaluation callback at epoch {epoch} (valid {STOP_METRIC} {value:.4f})"
        )
        self.epoch = epoch
        self.value = value


@contextlib.contextmanager
def evaluation_callback(callback: Callable[[int, float], None]) -> Iterator[None]:
    """Report every validation check of the models trained inside the block to `callback`.

    `callback(epoch, value)` runs after each check of `run_epochs` (the per-epoch validation
    curve that early stopping watches) and may raise `TrainingPruned` to end the training. This
    is the hook a hyper-parameter search prunes through (mmrec/tuning) without the models knowing
    about it; a context variable rather than a constructor argument, so every epoch-trained model
    supports it and a saved model's parameters stay pure hyper-parameters.
    """
    token = _EVALUATION_CALLBACK.set(callback)
    try:
        yield
    finally:
        _EVALUATION_CALLBACK.reset(token)


class BatchDriver(Protocol):
    """Runs the batches of a factor model's training on several processes (data parallelism).

    What a driver factory installed with `training_driver` returns for one training run; the
    epoch loop of `FactorModel` calls it instead of computing each batch's loss itself. The
    implementation lives with the launcher (`mmrec.distributed.ddp.DataParallel`); the models
    only know this protocol, so they never import `mmrec.distributed`.
    """

    def loss(self, users: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> tuple[torch.Tensor, float]:
        """(this process's loss to back-propagate, its share of the batch's summed loss)."""
        ...

    def all_sum(self, value: float) -> float:
        """`value` summed over the processes (the epoch's total loss)."""
        ...

    def on_main(self, fn: Callable[[], float]) -> Callable[[], float]:
        """`fn` run on one process, its value shared by all (same early-stopping decision)."""
        ...


#: builds the driver of one training run from (model name, the model's `module()`, device); it
#: returns None to leave that run single-process
DriverFactory = Callable[[str, "BatchLossModule", "torch.device"], BatchDriver | None]

_TRAINING_DRIVER: contextvars.ContextVar[DriverFactory | None] = contextvars.ContextVar(
    "mmrec_training_driver", default=None
)


@contextlib.contextmanager
def training_driver(factory: DriverFactory) -> Iterator[None]:
    """Train the factor models fitted inside the block through the driver `factory` returns.

    The launcher of a multi-process run (mmrec/distributed/train.py under torchrun) installs
    `DataParallel.wrap` here; outside such a block, and whenever the factory returns None,
    training is the plain single-process loop. A context variable, like `evaluation_callback`:
    the models' hyper-parameters stay pure, and the dependency points from the launcher to the
    models, never back.
    """
    token = _TRAINING_DRIVER.set(factory)
    try:
        yield
    finally:
        _TRAINING_DRIVER.reset(token)


def seeded_generators(seed: int) -> tuple[np.random.Generator, torch.Generator]:
    """A numpy generator (sampling, shuffling) and a torch generator (initialisation) from one seed.

    Explicit generators rather than the global seeds: two models trained in one process do not
    disturb each other's random streams, and nothing global changes as a side effect of `fit`.
    """
    import torch

    gen = torch.Generator()
    gen.manual_seed(int(seed))
    return np.random.default_rng(int(seed)), gen


def positive_pairs(matrix: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) of every stored entry, int64, in CSR order."""
    m = sp.csr_matrix(matrix)
    users = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    return users, m.indices.astype(np.int64)


class NegativeSampler:
    """Uniform negatives that the user never interacted with, drawn in vectorised rounds.

    All negatives are drawn at once, the ones that hit a positive are found by binary search over
    the sorted positive keys (user * n_items + item) and redrawn; with sparse data a handful of
    rounds leaves none. A user who interacted with every item cannot get a negative.
    """

    def __init__(self, matrix: sp.csr_matrix, max_rounds: int = 100) -> None:
        users, items = positive_pairs(matrix)
        self.n_items = int(matrix.shape[1])
        self.keys = np.sort(users * self.n_items + items)
        self.max_rounds = max_rounds
        full = np.flatnonzero(np.diff(sp.csr_matrix(matrix).indptr) >= self.n_items)
        self._full_users = set(full.tolist())

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.n_items + items
        pos = np.searchsorted(self.keys, keys)
        pos = np.minimum(pos, len(self.keys) - 1)
        return self.keys[pos] == keys if len(self.keys) else np.zeros(len(keys), dtype=bool)

    def sample(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One negative item per entry of `users` (int64 array)."""
        users = np.asarray(users, dtype=np.int64)
        neg = rng.integers(0, self.n_items, size=len(users), dtype=np.int64)
        bad = np.flatnonzero(self.is_positive(users, neg))
        for _ in range(self.max_rounds):
            if len(bad) == 0:
                return neg
            neg[bad] = rng.integers(0, self.n_items, size=len(bad), dtype=np.int64)
            bad = bad[self.is_positive(users[bad], neg[bad])]
        stuck = sorted(set(users[bad].tolist()) & self._full_users)
        if stuck:
            raise ModelError(f"users {stuck[:5]} interacted with every item; no negative item exists for them")
        return neg  # pragma: no cover - needs > max_rounds unlucky draws on a non-full user


def bpr_batches(
    users: np.ndarray, items: np.ndarray, sampler: NegativeSampler, batch_size: int, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One epoch of (user, positive, negative) triples: every training pair once, shuffled."""
    order = rng.permutation(len(users))
    neg = sampler.sample(users[order], rng)
    for start in range(0, len(order), batch_size):
        sl = slice(start, start + batch_size)
        idx = order[sl]
        yield users[idx], items[idx], neg[sl]


def fill_cold_users(scores: np.ndarray, users: np.ndarray, is_cold: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """Replace the rows of users without training history by the popularity scores, in place.

    A model has learned nothing about such users (their embeddings are still the random
    initialisation, their history row is empty), so the most popular items are the honest guess.
    """
    cold_rows = np.flatnonzero(is_cold[users])
    if len(cold_rows):
        scores[cold_rows] = popularity[None, :]
    return scores


class ColdUserFallback:
    """Mixin for Recommenders: `_fill_cold` gives users without training history popularity scores.

    The cold mask and popularity are derived from `train_matrix` (which `fit` and `load` both
    set) and cached per matrix object (identity), so nothing extra is saved and no reset is needed.
    """

    train_matrix: sp.csr_matrix | None
    _cold_cache: tuple[sp.csr_matrix, np.ndarray, np.ndarray] | None = None

    def _fill_cold(self, scores: np.ndarray, users: np.ndarray) -> np.ndarray:
        m = self.train_matrix
        assert m is not None
        if self._cold_cache is None or self._cold_cache[0] is not m:
            csr = sp.csr_matrix(m)
            self._cold_cache = (m, np.diff(csr.indptr) == 0, popularity_scores(csr))
        _, is_cold, popularity = self._cold_cache
        return fill_cold_users(scores, users, is_cold, popularity)


@dataclass
class EarlyStopping:
    """Stop when the watched validation metric has not improved for `patience` epochs.

    Patience counts epochs, not evaluations, so `eval_every` does not multiply it (with
    `eval_every: 5, patience: 3` counted in evaluations, training ran 15 epochs past the best
    and stopped at the first check on real catalogues). Training never stops before
    `min_epochs`.

    Attributes:
        patience: epochs without improvement tolerated (measured from the best epoch).
        min_epochs: no stop before this epoch.
        best: best metric so far, best_epoch: its epoch, best_state: a copy of the weights then.
    """

    patience: int
    min_epochs: int = 0
    best: float = -np.inf
    best_epoch: int = 0
    best_state: Any = None

    def update(self, epoch: int, value: float, snapshot: Callable[[], Any]) -> bool:
        """Record an evaluation at `epoch`; returns True when training should stop."""
        if value > self.best:
            self.best, self.best_epoch, self.best_state = value, epoch, snapshot()
            return False
        return epoch - self.best_epoch >= self.patience and epoch >= self.min_epochs


def run_epochs(
    train_epoch: Callable[[int], float],
    evaluate: Callable[[], float] | None,
    snapshot: Callable[[], Any],
    restore: Callable[[Any], None],
    epochs: int,
    eval_every: int,
    patience: int,
    min_epochs: int = 0,
    name: str = "model",
) -> tuple[list[dict[str, float]], int, int]:
    """The shared epoch loop with early stopping on validation and best-epoch restore.

    Each evaluation logs one INFO line (epoch, loss, validation metric, best so far, seconds per
    epoch, ETA to `epochs`) and reports progress (`mmrec.progress`) under `train-<name>`, and is
    passed to the callback of `evaluation_callback` when one is installed (which may raise
    `TrainingPruned`).

    Args:
        train_epoch: runs epoch `e` (1-based) and returns its mean loss.
            History rows hold `seconds` (training) and `eval_seconds` apart, so speed is
            compared on training time alone, as RecBole logs it.
        evaluate: returns the validation metric (higher is better); None trains all `epochs`.
        snapshot/restore: copy the weights out / put a copy back (best epoch restore).
        patience: epochs without improvement before stopping (see `EarlyStopping`).
        min_epochs: never stop before this epoch.
        name: the model's name, for the log and the progress key.

    Returns:
        (history, epochs run, best epoch). Without validation the best epoch is the last one.
    """
    from mmrec.progress import format_duration, report

    if epochs < 1 or eval_every < 1 or patience < 1 or min_epochs < 0:
        raise ModelError(
            f"epochs, eval_every and patience must be >= 1 and min_epochs >= 0, got {epochs}, {eval_every}, "
            f"{patience}, {min_epochs}"
        )
    history: list[dict[str, float]] = []
    on_check = _EVALUATION_CALLBACK.get()
    stopper = EarlyStopping(patience, min_epochs)
    epoch = 0
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        loss = float(train_epoch(epoch))
        row: dict[str, float] = {"epoch": epoch, "loss": loss}
        if not np.isfinite(loss):
            raise ModelError(f"training diverged at epoch {epoch} (loss {loss}); lower the learning rate")
        row["seconds"] = time.perf_counter() - start  # training only, as toolkits report it
        stop = False
        checkpoint = epoch % eval_every == 0 or epoch == epochs
        if evaluate is not None and checkpoint:
            start = time.perf_counter()
            value = float(evaluate())
            row[f"valid_{STOP_METRIC}"] = value
            row["eval_seconds"] = time.perf_counter() - start
            stop = stopper.update(epoch, value, snapshot)
            if on_check is not None:
                on_check(epoch, value)  # may raise TrainingPruned
        history.append(row)
        if checkpoint:
            per_epoch = (time.perf_counter() - started) / epoch
            valid = (
                f", valid {STOP_METRIC} {row[f'valid_{STOP_METRIC}']:.4f} (best {stopper.best:.4f} at epoch "
                f"{stopper.best_epoch})"
                if f"valid_{STOP_METRIC}" in row
                else ""
            )
            logger.info(
                "%s epoch %d/%d: loss %.4f%s, %.2f s/epoch, at most %s left",
                name,
                epoch,
                epochs,
                loss,
                valid,
                per_epoch,
                format_duration(per_epoch * (epochs - epoch)),
            )
            report(f"train-{name}", epoch, epochs, f"epoch {epoch}/{epochs}, loss {loss:.4f}{valid}")
        else:
            logger.debug("epoch %d: %s", epoch, row)
        if stop:
            logger.info(
                "%s: early stop at epoch %d (no improvement for %d epochs); best epoch %d restored",
                name,
                epoch,
                epoch - stopper.best_epoch,
                stopper.best_epoch,
            )
            break
    report(f"train-{name}", epochs, epochs, f"done: {epoch} epochs")
    if evaluate is None:
        return history, epoch, epoch
    restore(stopper.best_state)
    return history, epoch, stopper.best_epoch


def validation_metric(
    score_fn: Callable[[np.ndarray], np.ndarray], valid: sp.csr_matrix, train: sp.csr_matrix
) -> float:
    """Validation Recall@20 with the training items masked (the protocol of `mmrec.evaluate`).

    A catalogue of fewer than 20 items is ranked whole (recall@n_items), which is what
    Recall@20 means there.
    """
    from mmrec.evaluate import evaluate_scores

    k = min(STOP_K, valid.shape[1])
    return float(evaluate_scores(score_fn, valid, exclude=train, ks=(k,))[f"recall@{k}"])


def check_positive(**values: float) -> None:
    """Raise a ModelError naming every hyper-parameter that must be > 0 but is not."""
    bad = {k: v for k, v in values.items() if not v > 0}
    if bad:
        raise ModelError(f"hyper-parameters must be > 0: {bad}")


class FactorModel(ColdUserFallback, Recommender):
    """Base of the models that score by a dot product of user and item factors, trained with BPR.

    Subclasses build their torch parameters in `_build`, give the loss of a batch of
    (user, positive, negative) triples in `_batch_loss` and the factors to score with in
    `_factors`; this class owns the optimiser, the epoch loop with early stopping on validation
    Recall@20 (best epoch restored), scoring, cold users and persistence.

    While it trains, the parameters and the batch loss are one `nn.Module` (`module()`, a
    `BatchLossModule`); a data-parallel driver (`training_driver`) wraps that module from
    outside, so the models know nothing of `torch.distributed`.

    Users with no training interactions get the popularity scores: their factors never
    received a gradient, so they are noise.
    """

    # set by the subclass constructors; declared here for the type checker
    lr: float
    batch_size: int
    max_epochs: int
    eval_every: int
    patience: int
    seed: int
    device: str

    #: 2-D parameters the batch loss reads only by row (`_rows`): they get sparse gradients and a
    #: lazy Adam (torch SparseAdam), so an optimiser step touches the batch's rows, not the
    #: whole (n_users + n_items) x d table: the per-step cost stops growing with the catalogue
    sparse_tables: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        super().__init__()
        self.user_factors: np.ndarray | None = None  # (n_users, d) float32
        self.item_factors: np.ndarray | None = None  # (n_items, d) float32
        # the trainable tensors by name while training (the ParameterDict of `module()`); empty otherwise
        self._params: dict[str, torch.Tensor] = {}
        self._module: BatchLossModule | None = None
        self._sparse_on = False
        self.steps_per_epoch = 0  # optimiser steps per epoch of the last fit

    def module(self) -> BatchLossModule:
        """The `nn.Module` being trained: the parameters (by name) and `forward` = the batch loss.

        Exists only during `fit` (what a `training_driver` factory receives); the fitted model
        scores with numpy factors and keeps no torch state.

        Raises:
            ModelError: outside training.
        """
        if self._module is None:
            raise ModelError(f"{self.name}: no torch module outside training (module() exists only during fit)")
        return self._module

    def _rows(self, name: str, index: torch.Tensor) -> torch.Tensor:
        """Rows `index` of parameter `name` (a sparse-gradient lookup while training sparse tables)."""
        import torch.nn.functional as F

        table = self._params[name]
        if not (self._sparse_on and name in self.sparse_tables) or table.dim() != 2:
            return table[index]
        return F.embedding(index, table, sparse=True)

    # -- hooks ------------------------------------------------------------------------------
    @abstractmethod
    def _build(
        self, matrix: sp.csr_matrix, generator: torch.Generator, device: torch.device
    ) -> dict[str, torch.Tensor]:
        """Create the trainable tensors (leaf tensors with requires_grad) for this training set."""

    @abstractmethod
    def _batch_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """Loss of one batch of (user, positive item, negative item) index tensors."""

    def _epoch_start(self, epoch: int) -> None:
        """Hook before each epoch's batches (e.g. refresh a cached table); nothing by default."""

    def _step_settings(self, n_pairs: int) -> tuple[int, float]:
        """(triples per step, learning rate) for a training set of `n_pairs` interactions.

        `batch_size` and `lr` by default. A hook for models whose step costs O(graph) rather
        than O(batch): they bound the steps per epoch by growing the batch with the data, and
        the learning rate with it (LightGCN's `max_full_steps`).
        """
        return self.batch_size, self.lr

    @abstractmethod
    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(user factors, item factors) the current parameters score with (no grad needed)."""

    # -- training -----------------------------------------------------------------------------
    def _fit(self, train: Interactions, valid: sp.csr_matrix | None) -> None:
        try:
            self._train(train, valid)
        finally:  # also after an error or a pruned trial: no torch state outlives the training
            self._params, self._module, self._sparse_on = {}, None, False

    def _train(self, train: Interactions, valid: sp.csr_matrix | None) -> None:
        import torch

        check_positive(lr=self.lr, batch_size=self.batch_size)
        rng, generator = seeded_generators(self.seed)
        from mmrec.runtime import resolve_device, to_device

        try:
            device = torch.device(resolve_device(self.device))
        except (RuntimeError, ConfigError) as exc:
            raise ModelError(f"{self.name}: bad device {self.device!r} ({exc}); use 'auto', 'cpu' or 'cuda'") from exc
        matrix = sp.csr_matrix(train.matrix)
        from mmrec.models.modules import BatchLossModule

        self._module = BatchLossModule(self._build(matrix, generator, device), self._batch_loss)
        module = self._module
        self._params = dict(module.params.items())  # the module's own Parameters, read by name in the hooks
        # a driver installed by the launcher (torchrun: DDP, each process a share of every batch)
        factory = _TRAINING_DRIVER.get()
        dp = factory(self.name, self._module, device) if factory is not None else None
        # DDP all-reduces dense gradients: sparse tables only in a single process
        wants_sparse = bool(self.sparse_tables) and bool(getattr(self, "sparse_updates", True))
        if dp is not None and wants_sparse:
            logger.warning(
                "%s: sparse_updates is ignored under DDP (dense Adam on every rank); set "
                "sparse_updates: false to reproduce this run in a single process",
                self.name,
            )
        self._sparse_on = dp is None and wants_sparse
        sparse = [v for k, v in self._params.items() if self._sparse_on and k in self.sparse_tables]
        dense = [v for k, v in self._params.items() if not (self._sparse_on and k in self.sparse_tables)]
        users, items = positive_pairs(matrix)
        if len(users) == 0:
            raise ModelError(f"{self.name}: the training matrix has no interactions")
        sampler = NegativeSampler(matrix)
        batch_size, lr = self._step_settings(len(users))
        self.steps_per_epoch = math.ceil(len(users) / batch_size)
        if batch_size != self.batch_size:
            logger.info(
                "%s: batch %d -> %d triples (lr %.3g -> %.3g) so that an epoch of %d interactions is %d steps",
                self.name,
                self.batch_size,
                batch_size,
                self.lr,
                lr,
                len(users),
                self.steps_per_epoch,
            )
        optimisers = ([torch.optim.Adam(dense, lr=lr)] if dense else []) + (
            [torch.optim.SparseAdam(sparse, lr=lr)] if sparse else []
        )

        def train_epoch(epoch: int) -> float:
            self._epoch_start(epoch)
            total = 0.0
            for u, p, n in bpr_batches(users, items, sampler, batch_size, rng):
                if dp is not None:
                    loss, share = dp.loss(u, p, n)
                else:
                    # pinned + non-blocking on CUDA: the index copies overlap the previous step
                    loss = module(
                        to_device(torch.from_numpy(u), device),
                        to_device(torch.from_numpy(p), device),
                        to_device(torch.from_numpy(n), device),
                    )
                    share = float(loss.detach()) * len(u)
                for optimiser in optimisers:
                    optimiser.zero_grad(set_to_none=True)
                loss.backward()
                for optimiser in optimisers:
                    optimiser.step()
                total += share
            return (total if dp is None else dp.all_sum(total)) / len(users)

        def evaluate() -> float:
            self._export()
            return validation_metric(self._score, valid, matrix)

        def snapshot() -> dict[str, torch.Tensor]:
            return {k: v.detach().clone() for k, v in self._params.items()}

        def restore(state: dict[str, torch.Tensor]) -> None:
            with torch.no_grad():
                for k, v in state.items():
                    self._params[k].copy_(v)

        self.history, self.epochs, self.best_epoch = run_epochs(
            train_epoch,
            (evaluate if dp is None else dp.on_main(evaluate)) if valid is not None and valid.nnz else None,
            snapshot,
            restore,
            self.max_epochs,
            self.eval_every,
            self.patience,
            min_epochs=getattr(self, "min_epochs", 0),
            name=self.name,
        )
        self._sparse_on = False
        self._export()  # scoring needs the numpy factors only; `_fit` frees the torch state

    def _export(self) -> None:
        import torch

        with torch.no_grad():
            u, i = self._factors()
            self.user_factors = u.detach().to("cpu", torch.float32).numpy().copy()
            self.item_factors = i.detach().to("cpu", torch.float32).numpy().copy()

    # -- inference ----------------------------------------------------------------------------
    def _score(self, users: np.ndarray) -> np.ndarray:
        assert self.user_factors is not None and self.item_factors is not None
        scores = self.user_factors[users] @ self.item_factors.T  # (B, n_items)
        return self._fill_cold(scores, users)

    #: ridge strength of the fold-in, relative to the mean eigenvalue of Q^T Q (see _score_history)
    fold_in_reg: ClassVar[float] = 1.0

    def _fold_in(self, rows: sp.csr_matrix) -> np.ndarray:
        """User vectors for unseen users: ridge regression of their history row on the item factors.

        p = argmin ||Q p - r||^2 + lam ||p||^2 over all items, r the binary history: the user
        vector whose scores best reproduce "these items and not the others" (PureSVD/ALS
        fold-in). It needs no training code, so it works for every dot-product model alike.
        """
        assert self.item_factors is not None
        rhs = np.asarray(rows @ self.item_factors, dtype=np.float64)  # (n, d)
        return (rhs @ self._item_derived("fold_in", self._fold_in_operator)).astype(np.float32)

    def _fold_in_operator(self, q: np.ndarray) -> np.ndarray:
        """(Q^T Q + lam I)^-1, (d, d): O(n_items d^2) to build, so built once, not per request.

        An explicit inverse is safe here: lam is the mean eigenvalue of Q^T Q, so the system's
        condition number is at most d + 1; a request then costs one (n, d) x (d, d) product.
        """
        from scipy.linalg import cho_factor, cho_solve

        q = q.astype(np.float64)
        gram = q.T @ q
        lam = self.fold_in_reg * max(float(np.trace(gram)) / max(gram.shape[0], 1), 1e-6)
        eye = np.eye(gram.shape[0])
        return cho_solve(cho_factor(gram + lam * eye), eye)  # symmetric: p = rhs @ inv

    def _item_derived(self, name: str, build: Callable[[np.ndarray], Any]) -> Any:
        """`build(item_factors)`, kept until `item_factors` is replaced (fit, load).

        Serving calls `score_history` and `item_affinity` per request; what they derive from the
        whole item matrix (the fold-in system, the item norms) must not be recomputed each time.
        The cache holds the very array it was built from, so a new one is never served stale.
        """
        cache = self.__dict__.setdefault("_derived", {})
        hit = cache.get(name)
        if self.item_factors is None:
            raise ModelError(f"{self.name}: no item factors (not fitted or loaded)")
        if hit is None or hit[0] is not self.item_factors:
            hit = cache[name] = (self.item_factors, build(self.item_factors))
        return hit[1]

    def _score_history(self, rows: sp.csr_matrix) -> np.ndarray:
        assert self.item_factors is not None
        return self._fold_in(rows) @ self.item_factors.T

    def item_affinity(self, item: int, others: np.ndarray) -> np.ndarray:
        assert self.item_factors is not None
        q = self.item_factors
        norms = self._item_derived("norms", lambda f: np.linalg.norm(f, axis=1) + 1e-12)
        others = np.asarray(others, np.int64)
        return (q[others] @ q[item]) / (norms[others] * norms[item])

    def _state(self) -> dict[str, np.ndarray]:
        assert self.user_factors is not None and self.item_factors is not None
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.user_factors = np.asarray(state["user_factors"], dtype=np.float32)
        self.item_factors = np.asarray(state["item_factors"], dtype=np.float32)
