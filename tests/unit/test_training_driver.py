"""The factor models train an `nn.Module` that a driver wraps from outside; models never import `distributed`.

`FactorModel.module()` is the module being trained (parameters by name, forward = batch loss);
`training_driver(factory)` is how a launcher (torchrun: `mmrec.distributed.ddp.DataParallel`)
takes over the batches. The real two-process run is tests/integration/test_ddp.py; here a
single-process driver implementing the same protocol must reproduce the plain loop exactly.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from mmrec.errors import ModelError
from mmrec.models import available_models, create_model
from mmrec.models.registry import get_model_class
from mmrec.models.training import FactorModel, training_driver
from tests.conftest import REPO
from tests.unit.test_models_contract import CONTRACT, tiny_split

FACTOR_MODELS = [name for name in available_models() if issubclass(get_model_class(name), FactorModel)]


def test_the_factor_models_are_found():
    assert {"bpr", "lightgcn", "vbpr", "two_tower", "mm_graph"} <= set(FACTOR_MODELS)


def test_no_model_module_imports_distributed():
    offenders = []
    for path in sorted((REPO / "mmrec" / "models").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):  # function-level imports too
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            offenders += [
                f"{path.name}: {n}" for n in names if n.startswith(("mmrec.distributed", "torch.distributed"))
            ]
    assert not offenders, offenders


class LocalDriver:
    """The `BatchDriver` protocol on one process: every batch whole, sums and values unchanged."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self.batches = self.checks = 0

    def loss(self, users: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> tuple[Any, float]:
        import torch

        self.batches += 1
        out = self.module(*(torch.from_numpy(x) for x in (users, pos, neg)))
        return out, float(out.detach()) * len(users)

    def all_sum(self, value: float) -> float:
        return value

    def on_main(self, fn: Callable[[], float]) -> Callable[[], float]:
        def run() -> float:
            self.checks += 1
            return fn()

        return run


def _params(name: str) -> dict[str, Any]:
    # dense Adam: a driver turns the sparse tables off (DDP all-reduces dense gradients only)
    extra = {"sparse_updates": False} if "sparse_updates" in get_model_class(name).param_names() else {}
    return {**CONTRACT[name], **extra, "max_epochs": 4, "eval_every": 1, "patience": 2}


@pytest.mark.parametrize("name", FACTOR_MODELS)
def test_a_driver_runs_the_batches_and_reproduces_the_plain_loop(name, one_torch_thread):
    from torch import nn

    from mmrec.models.modules import BatchLossModule

    data, valid = tiny_split(1)
    plain = create_model(name, **_params(name)).fit(data, valid)
    drivers: list[LocalDriver] = []

    def factory(model_name: str, module: Any, device: Any) -> LocalDriver:
        assert model_name == name and isinstance(module, BatchLossModule) and isinstance(module, nn.Module)
        assert module.params and all(isinstance(p, nn.Parameter) for p in module.parameters())
        drivers.append(LocalDriver(module))
        return drivers[-1]

    with training_driver(factory):
        driven = create_model(name, **_params(name)).fit(data, valid)
    [driver] = drivers
    n_batches = -(-data.matrix.nnz // _params(name)["batch_size"])
    assert driver.batches == n_batches * driven.epochs and driver.checks == driven.epochs  # eval_every 1
    assert np.array_equal(driven.user_factors, plain.user_factors)
    assert np.array_equal(driven.item_factors, plain.item_factors)
    assert [h["loss"] for h in driven.history] == [h["loss"] for h in plain.history]
    # outside the block the plain loop runs again
    again = create_model(name, **_params(name)).fit(data, valid)
    assert len(drivers) == 1 and np.array_equal(again.item_factors, plain.item_factors)


def test_a_factory_returning_none_leaves_training_single_process(one_torch_thread):
    data, valid = tiny_split(2)
    seen: list[str] = []

    def factory(name: str, module: Any, device: Any) -> None:
        seen.append(name)

    plain = create_model("bpr", **CONTRACT["bpr"]).fit(data, valid)  # sparse tables stay on: no driver
    with training_driver(factory):
        model = create_model("bpr", **CONTRACT["bpr"]).fit(data, valid)
    assert seen == ["bpr"] and np.array_equal(model.item_factors, plain.item_factors)


def test_module_exists_only_while_training():
    model = create_model("bpr", **CONTRACT["bpr"])
    with pytest.raises(ModelError, match="only during fit"):
        model.module()
    model.fit(*tiny_split(0))
    with pytest.raises(ModelError, match="only during fit"):
        model.module()  # the fitted model keeps numpy factors, no torch state


def test_an_empty_batch_has_zero_loss_and_zero_gradients():
    """What a DDP rank computes when its share of a small batch is empty: zeros, every parameter reached."""
    import torch

    from mmrec.models.modules import BatchLossModule

    params = {"user": torch.randn(3, 2), "item": torch.randn(4, 2)}
    before = params["user"].clone()
    module = BatchLossModule(params, lambda u, p, n: (module.params["user"][u] * module.params["item"][p]).sum())
    assert torch.equal(module.params["user"], before)  # initial values kept
    empty = torch.zeros(0, dtype=torch.int64)
    loss = module(empty, empty, empty)
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert all(p.grad is not None and not p.grad.any() for p in module.parameters())
    one = torch.tensor([1])
    assert float(module(one, one, one)) == pytest.approx(float(before[1] @ params["item"][1]))


def test_a_failed_training_leaves_no_torch_state():
    def factory(name: str, module: Any, device: Any) -> None:
        raise RuntimeError("driver refused")

    model = create_model("bpr", **CONTRACT["bpr"])
    with training_driver(factory), pytest.raises(RuntimeError, match="driver refused"):
        model.fit(*tiny_split(0))
    with pytest.raises(ModelError, match="only during fit"):
        model.module()
