"""The torch side of the factor models: their trainable parameters and batch loss as one `nn.Module`.

A `FactorModel` (mmrec/models/training.py) keeps numpy factors for scoring and builds torch
tensors only while it trains. `BatchLossModule` holds those tensors as the parameters of a proper
`nn.Module` whose `forward` is the model's batch loss, so whatever drives the training loop (the
single-process optimiser, or a data-parallel wrapper such as `mmrec.distributed.ddp`) works on
the module from outside: `DistributedDataParallel(model.module())` needs nothing private of the
model, and the model never imports the driver.

Kept in its own module because it imports torch at import time (to subclass `nn.Module`); the
model modules import it inside `fit`, so `import mmrec.models` stays light.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

#: a model's loss of one batch of (user, positive item, negative item) index tensors
BatchLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class BatchLossModule(nn.Module):
    """A factor model's trainable tensors (`params`, by name) and its loss of a batch (`forward`).

    The parameters are registered in an `nn.ParameterDict`, so `parameters()`, `state_dict()`,
    `.to(device)` and DDP's gradient all-reduce see every one of them; the model reads the same
    `nn.Parameter` objects by name in its loss, so a wrapper that broadcasts or averages them
    changes what the model computes without the model knowing.

    Args:
        params: name -> initial tensor (the model's `_build`); each becomes an `nn.Parameter`
            sharing its storage (the initial values are kept bit for bit).
        loss: the model's batch loss, reading its parameters from `params`.
    """

    def __init__(self, params: Mapping[str, torch.Tensor], loss: BatchLoss) -> None:
        super().__init__()
        self.params = nn.ParameterDict(
            {name: t if isinstance(t, nn.Parameter) else nn.Parameter(t.detach()) for name, t in params.items()}
        )
        self._loss = loss

    def forward(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """Mean loss of the batch; an empty batch gives a zero that still reaches every parameter.

        The zero case is what a data-parallel rank computes when its share of a small batch is
        empty: it must still take part in the gradient all-reduce, with zero gradients.
        """
        if users.numel() == 0:
            return sum((p.sum() for p in self.params.values()), torch.zeros((), device=users.device)) * 0.0
        return self._loss(users, pos, neg)
