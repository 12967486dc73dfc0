"""Data-parallel training of the factor models with `torch.distributed` (DDP).

The launcher (mmrec/distributed/train.py) installs `DataParallel.wrap` as the training driver of
the factor models (`mmrec.models.training.training_driver`); each `FactorModel.fit` inside that
block hands it its `module()`, the `nn.Module` of its parameters whose forward is the batch loss,
and DDP wraps that module from outside (nothing private of the model is touched; the models never
import this package). Outside an initialised process group of more than one rank `wrap` returns
None and the single-process loop runs unchanged. Under `torchrun` every process
(rank) builds the same parameters from the same seed, draws the same shuffled epoch of
(user, positive, negative) triples, and takes its contiguous share of every batch; DDP averages
the gradients, each share's loss being scaled by (share size / batch size) x world size so the
average is the gradient of the whole batch's mean loss. Every optimiser step therefore sees the
single-process batch, split over the processes: the trajectory is the single-process one up to
floating-point summation order (and the share-wise draws of models with stochastic regularisers),
which the 2-process test bounds.

Validation (early stopping) runs on rank 0 and its value is broadcast, so every rank stops at
the same epoch and restores the same best weights; only rank 0 writes files.

Backends: gloo on CPU, nccl when the model trains on CUDA (one GPU per process, `LOCAL_RANK`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from mmrec.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)


def world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group; (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True on rank 0 and in any single-process run: the process that writes files."""
    return world()[0] == 0


def init_from_env(device: str = "cpu") -> tuple[int, int, str]:
    """Initialise the process group from torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR...).

    Returns:
        (rank, world size, backend). A run without torchrun's variables stays single-process.

    Raises:
        ConfigError: CUDA asked for but absent, or fewer GPUs than processes on this node.
    """
    import torch
    import torch.distributed as dist

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, "none"
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), dist.get_backend()
    backend = "gloo"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} asked for but CUDA is not available; use device cpu (gloo)")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s): use --nproc-per-node <= that"
            )
        torch.cuda.set_device(local)
        backend = "nccl"
    dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), backend


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _share(n: int, rank: int, size: int) -> slice:
    """This rank's contiguous share of n rows (the first n % size ranks get one more)."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


class DataParallel:
    """DDP around the `nn.Module` a factor model trains (`FactorModel.module()`).

    Implements the `BatchDriver` protocol of mmrec/models/training.py: the model's epoch loop
    asks it for each batch's loss, the epoch's summed loss and the validation value.

    Args:
        module: forward(users, pos, neg) -> mean loss of the batch, zero (still connected to every
            parameter) for an empty batch; its parameters are the ones the model reads.
        device: where the module and the index tensors live.
        rank, size: this process and the world size.
    """

    def __init__(self, module: nn.Module, device: torch.device, rank: int, size: int) -> None:
        import torch
        from torch.nn.parallel import DistributedDataParallel

        self.rank, self.size, self.device = rank, size, device
        ids = (
            [device.index if device.index is not None else torch.cuda.current_device()]
            if device.type == "cuda"
            else None
        )
        # broadcasts rank 0's initial values into the module's own parameters (the model reads
        # those); find_unused_parameters: a model may leave a tensor out of some batches (e.g. a
        # modality absent from every item of the batch)
        self.ddp = DistributedDataParallel(module.to(device), device_ids=ids, find_unused_parameters=True)

    @classmethod
    def wrap(cls, name: str, module: nn.Module, device: torch.device) -> DataParallel | None:
        """A replica when a process group of more than one rank is initialised, else None.

        The signature of a `mmrec.models.training.DriverFactory`: install it with
        `training_driver(DataParallel.wrap)` around the training.
        """
        rank, size = world()
        if size <= 1:
            return None
        log.info("%s: data-parallel training, rank %d of %d", name, rank, size)
        return cls(module, device, rank, size)

    def loss(self, users: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> tuple[torch.Tensor, float]:
        """(this rank's loss to back-propagate, its share of the batch's summed loss)."""
        import torch

        n = len(users)
        sl = _share(n, self.rank, self.size)
        part = sl.stop - sl.start
        weight = part / n * self.size if n else 0.0
        t = [torch.from_numpy(np.ascontiguousarray(x[sl])).to(self.device) for x in (users, pos, neg)]
        # each share's mean loss x (share / batch) x world size: DDP's gradient average is then
        # the gradient of the whole batch's mean loss
        out = self.ddp(*t) * weight
        share = float(out.detach()) / weight * part if part else 0.0  # mean loss of the share x its size
        return out, share

    def all_sum(self, value: float) -> float:
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item())

    def on_main(self, fn: Callable[[], float]) -> Callable[[], float]:
        """`fn` run on rank 0 only, its value broadcast to every rank (same early-stopping decision)."""
        import torch
        import torch.distributed as dist

        def run() -> float:
            value = float(fn()) if self.rank == 0 else 0.0
            t = torch.tensor([value], dtype=torch.float64, device=self.device)
            dist.broadcast(t, src=0)
            return float(t.item())

        return run
