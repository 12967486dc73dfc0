"""Multi-process training entry point, launched by `torchrun` (or `mmrec train-ddp`, which calls it).

    torchrun --nproc-per-node 2 -m mmrec.distributed.train --dataset data/raw/synth/dataset.yaml \
        [--params params.yaml] [--workspace .] [--models bpr,lightgcn] [--device cpu|cuda] [--evaluate]

Every process runs the train stage (`mmrec.stages.run_train`) on the existing split; the factor
models (BPR, LightGCN, VBPR, two_tower: everything built on `FactorModel`) train data-parallel
through DDP (`mmrec.distributed.ddp`, installed here as their training driver: the models never
import it), the other models simply train on every rank. Rank 0 writes
the models and, with `--evaluate`, the evaluation report (`run_evaluate`), exactly where the
single-process stages write them, so `mmrec recommend`, the registry and DVC see no difference.

Backend: gloo on CPU, nccl with `--device cuda` (one GPU per process, by `LOCAL_RANK`). The
models train on the device their own `device` hyper-parameter names (params.yaml `train.params`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mmrec.errors import MMRecError

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m mmrec.distributed.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True, type=Path, help="PATH/dataset.yaml")
    ap.add_argument("--params", default=Path("params.yaml"), type=Path)
    ap.add_argument("--workspace", default=Path("."), type=Path)
    ap.add_argument("--root", default=None, type=Path, help="data root overriding dataset.yaml root:")
    ap.add_argument("--models", default=None, help="comma-separated models (default: train.models)")
    ap.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (nccl)")
    ap.add_argument("--evaluate", action="store_true", help="rank 0 also runs the evaluate stage")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from mmrec.context import StageContext
    from mmrec.distributed.ddp import DataParallel, init_from_env, shutdown
    from mmrec.models.training import training_driver
    from mmrec.stages import run_evaluate, run_train

    args = parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("MMREC_LOG_LEVEL", "INFO").upper(),
        format=f"%(asctime)s %(levelname)s [rank {os.environ.get('RANK', '0')}] %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        rank, size, backend = init_from_env(args.device)
        log.info("process %d of %d (backend %s)", rank, size, backend)
        ctx = StageContext.from_files(args.dataset, args.params, args.workspace, args.root)
        names = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
        parallel: list[str] = []  # the models that trained data-parallel (the factor models)

        def driver(name: str, module: nn.Module, device: torch.device) -> DataParallel | None:
            dp = DataParallel.wrap(name, module, device)
            if dp is not None:
                parallel.append(name)
            return dp

        with training_driver(driver):  # the factor models' batches are shared over the ranks
            summary = run_train(ctx, names)
        if rank == 0:
            summary["distributed"] = {"world_size": size, "backend": backend, "data_parallel": parallel}
            if args.evaluate:
                report = run_evaluate(ctx, names)
                summary["evaluate"] = {
                    m: {"valid": r.get("valid"), "test": r.get("test")} for m, r in report["models"].items()
                }
            print(json.dumps(summary, default=str))
    except MMRecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        shutdown()
    return 0


if __name__ == "__main__":  # pragma: no cover - torchrun -m mmrec.distributed.train
    sys.exit(main())
