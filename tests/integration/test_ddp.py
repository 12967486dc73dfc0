"""Two-process DDP training (torchrun, gloo on CPU) gives the single-process metrics.

Both runs train BPR, LightGCN and the two-tower joint-embedding model on the same split with the same seed; the DDP run splits every
batch over the two processes and averages the gradients, so the trajectory is the single-process
one up to floating-point summation order. Stated tolerance: 0.02 absolute on every validation and
test metric (on this catalogue they agree exactly; the margin covers a near-tie swapping after
an all-reduce rounds differently), and the same number of epochs (early stopping agrees).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

TOL = 0.02
METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
PARAMS = """\
split:
  min_user_interactions: 1
train:
  models: [bpr, lightgcn, two_tower]
  params:
    # sparse_updates: false: DDP all-reduces dense gradients (dense Adam), so the single-process
    # run must use dense Adam too for the two trajectories to be the same
    bpr: {dim: 16, lr: 0.02, max_epochs: 12, eval_every: 2, patience: 3, batch_size: 64, sparse_updates: false}
    lightgcn: {dim: 16, lr: 0.02, max_epochs: 8, eval_every: 2, patience: 3, batch_size: 64}
    # history_cache: false: with the per-epoch cached history table (the default) a DDP run drifts
    # from the single-process one (0.25 vs 0.20 valid recall@10 here; see docs/distributed.md),
    # so the exact history path is the one held to single-process equality
    two_tower: {dim: 16, hidden: 16, input_dim: 16, lr: 0.01, max_epochs: 8, eval_every: 2, patience: 3,
                batch_size: 64, id_dropout: 0.0, sparse_updates: false, history_cache: false}
extract:
  text: {encoder: tiny_text}
  image: {encoder: tiny_cnn}
evaluate:
  reference: bpr
  bootstrap_resamples: 10
"""


@pytest.fixture(scope="module")
def split_workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A synthetic catalogue (40 users, 64 items) ingested, validated and split."""
    from mmrec.config import load_params
    from mmrec.data.contract import load_dataset_spec
    from mmrec.data.synth.generate import generate_synthetic
    from mmrec.stages import StageContext, run_stage

    ws = tmp_path_factory.mktemp("ddp") / "single"
    ws.mkdir()
    spec_path = Path(generate_synthetic(ws / "raw", n_users=40, n_items=64, seed=3))
    (ws / "params.yaml").write_text(PARAMS)
    ctx = StageContext(spec=load_dataset_spec(spec_path), params=load_params(ws / "params.yaml"), workspace=ws)
    for stage in ("ingest", "validate", "split", "extract_text", "extract_image"):
        run_stage(stage, ctx)
    return ws, spec_path


def test_two_process_ddp_matches_single_process(split_workspace: tuple[Path, Path], tmp_path: Path):
    from mmrec.config import load_params
    from mmrec.data.contract import load_dataset_spec
    from mmrec.stages import StageContext, run_evaluate, run_train

    ws, spec_path = split_workspace
    ddp_ws = tmp_path / "ddp"
    shutil.copytree(ws, ddp_ws)
    shutil.rmtree(ddp_ws / "artifacts", ignore_errors=True)
    ddp_spec = ddp_ws / spec_path.relative_to(ws)

    ctx = StageContext(spec=load_dataset_spec(spec_path), params=load_params(ws / "params.yaml"), workspace=ws)
    run_train(ctx)
    single = run_evaluate(ctx)["models"]

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MMREC_LOG_LEVEL": "WARNING"}
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "mmrec.distributed.train",
        "--dataset",
        str(ddp_spec),
        "--params",
        str(ddp_ws / "params.yaml"),
        "--workspace",
        str(ddp_ws),
        "--evaluate",
    ]
    proc = subprocess.run(torchrun, env=env, cwd=ddp_ws, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])  # rank 0's summary
    # the factor models really trained through the DDP driver (without it each rank would train
    # the whole batches alone and still match the single-process metrics)
    assert out["distributed"] == {"world_size": 2, "backend": "gloo", "data_parallel": ["bpr", "lightgcn", "two_tower"]}
    report = json.loads((ddp_ws / "reports" / "synth" / "metrics.json").read_text())["models"]
    # two_tower (the joint-embedding model) included: its cross-modal alignment term is computed
    # on each process's share of the batch, so it matches within the tolerance, not exactly.
    for model in ("bpr", "lightgcn", "two_tower"):
        assert report[model]["epochs"] == single[model]["epochs"], model
        for part in ("valid", "test"):
            for m in METRICS:
                a, b = single[model][part][m], report[model][part][m]
                # one user of the 40 flipping a hit moves recall@10 by 0.025: the joint model's
                # per-share alignment term may do that, so it gets one user's worth of slack
                tol = TOL if model != "two_tower" else 1.2 / 40
                assert abs(a - b) <= tol, f"{model} {part} {m}: single {a} vs ddp {b}"
