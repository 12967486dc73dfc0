"""Dask-distributed extraction and nightly scoring, through the Prefect flows, against a real Prefect API.

The cluster is what production runs on, scaled down: a `LocalCluster` of 2 worker *processes*
with 1 thread each (so a Prefect task on a worker must reach a real API server: `prefect_api`,
PostgreSQL-backed). Results must be identical to the single-process run: the feature files byte
for byte, the recommendations file byte for byte.

The fault: a worker process is SIGKILLed while it is inside a forward pass; the flow still
finishes, and every item was encoded exactly once (per-item encoder calls logged by the workers).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

distributed = pytest.importorskip("distributed", reason="the [dask] extra")
from distributed.diagnostics.plugin import WorkerPlugin  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.services]

MODALITIES = ("text", "image", "audio", "video")
PARAMS = """\
extract:
  device: cpu
  progress: false
  workers: 1
  checkpoint_items: {checkpoint}
  text: {{encoder: tiny_text, batch_size: 4}}
  image: {{encoder: tiny_cnn, batch_size: 4}}
  audio: {{encoder: logmel, batch_size: 4}}
  video: {{encoder: frames, image_encoder: tiny_cnn, num_frames: 2, batch_size: 2}}
split:
  min_user_interactions: 1
train:
  models: [popularity, bpr]
  params:
    bpr: {{dim: 8, lr: 0.05, max_epochs: 6, eval_every: 2, patience: 2}}
recommend:
  k: 5
  batch_size: 8
orchestrate:
  task_runner: {runner}
  dask_workers: 2
  dask_processes: true
  dask_address: {address}
  shard_items: 8
  score_block_users: 16
  retries: 0
  retry_delay_seconds: 0
"""


def write_params(
    ws: Path, runner: str = "threads", address: str | None = None, checkpoint: int = 512, name: str = "params.yaml"
) -> str:
    path = ws / name
    path.write_text(PARAMS.format(runner=runner, address=address or "null", checkpoint=checkpoint))
    return str(path)


@pytest.fixture(scope="module")
def synth_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic catalogue with all four modalities (40 users, 64 items)."""
    from mmrec.data.synth.generate import generate_synthetic

    out = tmp_path_factory.mktemp("synth") / "raw"
    generate_synthetic(out, n_users=40, n_items=64, seed=7)
    return out


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for key in list(os.environ):
        if key.startswith("MMREC__"):
            monkeypatch.delenv(key)


def _workspace(root: Path, raw: Path) -> tuple[str, Path]:
    """A workspace with its own copy of the raw data (so no cache or output is shared)."""
    root.mkdir(parents=True)
    shutil.copytree(raw, root / "raw")
    return str(root / "raw" / "dataset.yaml"), root


def _run(flow_fn: Any, dataset: str, params: str, ws: Path) -> Any:
    return flow_fn(dataset, params, str(ws))


def _features(ws: Path) -> dict[str, bytes]:
    files = sorted((ws / "data" / "synth" / "features").glob("*/*.parquet"))
    return {str(f.relative_to(ws)): f.read_bytes() for f in files}


def test_pipeline_and_nightly_on_dask_match_single_process(use_prefect_api: str, synth_raw: Path, tmp_path: Path):
    from mmrec.encoders import read_features
    from mmrec_flows.nightly import run_nightly
    from mmrec_flows.training import run_training

    # single process: the default thread runner
    ds_a, ws_a = _workspace(tmp_path / "single", synth_raw)
    state = _run(run_training, ds_a, write_params(ws_a, "threads"), ws_a)
    assert state.is_completed(), state.message
    # a temporary LocalCluster of 2 worker processes, started by the flow's DaskTaskRunner
    ds_b, ws_b = _workspace(tmp_path / "dask", synth_raw)
    params_b = write_params(ws_b, "dask")
    state = _run(run_training, ds_b, params_b, ws_b)
    assert state.is_completed(), state.message
    result = state.result()

    fa, fb = _features(ws_a), _features(ws_b)
    assert sorted(fa) == sorted(fb) and len(fa) == len(MODALITIES)
    for rel in fa:
        a, b = read_features(ws_a / rel), read_features(ws_b / rel)
        assert a.item_ids == b.item_ids, rel
        # equal up to float32 rounding: a Dask worker process sizes its BLAS/FFT thread pool
        # differently from the single process, which reorders sums (the audio log-mel filterbank)
        np.testing.assert_allclose(a.matrix, b.matrix, rtol=1e-5, atol=1e-5, err_msg=str(rel))
        if np.array_equal(a.matrix, b.matrix):  # the file itself is deterministic given its values
            assert fa[rel] == fb[rel], f"{rel}: same values but different bytes"
    used: set[str] = set()
    for m in ("text", "image"):  # every one of 64 items encoded once, in 8 shards
        entry = result["extraction"][m]
        assert entry["shards"] == 8 and 1 <= len(entry["workers"]) <= 2, entry
        assert entry["encoded"] + entry["cached"] + entry["missing"] + entry["failed"] == 64
        assert set(entry["encoder_loads"].values()) == {1}, entry["encoder_loads"]  # one encoder per worker
        used |= set(entry["workers"])
    # both workers took shards. Per modality this is not guaranteed: shards are dealt round-robin
    # as a loose restriction, so an idle worker takes a busy one's (a loaded CI machine ran all
    # of one modality's shards on one worker while the other was busy with another modality's)
    assert len(used) == 2, used

    # nightly on the dask workspace's champion: single process, then user blocks on Dask
    state = _run(run_nightly, ds_b, write_params(ws_b, "threads", name="params-threads.yaml"), ws_b)
    assert state.is_completed(), state.message
    rec = ws_b / "data" / "synth" / "recommendations" / "latest.parquet"
    single = rec.read_bytes()
    single_summary = state.result()
    rec.unlink()
    state = _run(run_nightly, ds_b, params_b, ws_b)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["blocks"] == 3 and summary["users"] == 40, summary  # 16-user blocks
    assert rec.read_bytes() == single
    for key in ("users", "users_covered", "rows", "items_recommended", "score", "top1_score"):
        assert summary[key] == single_summary[key], key


# -- fault: a worker killed inside a forward pass ------------------------------------------------

SLOW_S = 0.4


class SlowCountingEncoder(WorkerPlugin):
    """Worker plugin: `tiny_text` sleeps in each forward pass and logs what it encoded, per call.

    Lines `start <pid>` and `end <pid> <item digest>...` are appended to `log` (O_APPEND, one
    write per line): an item whose `end` line exists was encoded by a call that completed.
    """

    name = "slow-counting-encoder"
    idempotent = True

    def __init__(self, log: str) -> None:
        self.log = log

    def setup(self, worker: Any) -> None:
        from mmrec.encoders.tiny import TinyTextEncoder

        log = self.log
        original = TinyTextEncoder.__dict__.get("_mmrec_original_encode_batch") or TinyTextEncoder.encode_batch
        TinyTextEncoder._mmrec_original_encode_batch = original

        def write(line: str) -> None:
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)

        def encode_batch(enc: Any, prepared: Any) -> Any:
            write(f"start {os.getpid()}")
            time.sleep(SLOW_S)
            out = original(enc, prepared)
            digests = [hashlib.sha1(np.asarray(p).tobytes()).hexdigest()[:12] for p in prepared]
            write(f"end {os.getpid()} " + " ".join(digests))
            return out

        TinyTextEncoder.encode_batch = encode_batch


def _read_log(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.is_file() else []


@pytest.fixture
def cluster() -> Iterator[Any]:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as lc,
        Client(lc) as client,
    ):
        yield client


def test_worker_killed_mid_extraction_every_item_encoded_once(
    use_prefect_api: str, synth_raw: Path, tmp_path: Path, cluster: Any
):
    from mmrec.stages import run_stage
    from mmrec_flows.runners import make_task_runner, orchestrate_params
    from mmrec_flows.tasks import load_context, run_args
    from mmrec_flows.training import extract_features

    ds, ws = _workspace(tmp_path / "ws", synth_raw)
    address = cluster.scheduler.address
    params = write_params(ws, "dask", address=address, checkpoint=4)  # commit every batch
    args = run_args(ds, params, ws)
    ctx = load_context(args)
    for stage in ("ingest", "validate"):
        run_stage(stage, ctx)
    log = tmp_path / "encode.log"
    cluster.register_plugin(SlowCountingEncoder(str(log)))

    killed: list[int] = []
    done = threading.Event()

    def killer() -> None:
        """Kill the worker that starts a forward pass after 3 passes completed (it is asleep in it)."""
        while not done.is_set() and not killed:
            lines = _read_log(log)
            if sum(1 for r in lines if r[0] == "end") >= 3:
                open_calls = Counter(r[1] for r in lines if r[0] == "start")
                open_calls.subtract(Counter(r[1] for r in lines if r[0] == "end"))
                busy = [int(pid) for pid, n in open_calls.items() if n > 0]
                if busy:
                    os.kill(busy[0], signal.SIGKILL)
                    killed.append(busy[0])
                    return
            time.sleep(0.02)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    op = orchestrate_params(ctx.params)
    try:
        state = extract_features.with_options(task_runner=make_task_runner(op))(["text"], args, True, return_state=True)
    finally:
        done.set()
        thread.join(timeout=5)
    assert killed, "no worker was killed: the test did not exercise the fault"
    assert state.is_completed(), state.message

    entry = state.result()["text"]
    ends = [r for r in _read_log(log) if r[0] == "end"]
    calls = Counter(d for r in ends for d in r[2:])
    n_text = entry["items"] - entry["missing"] - entry["failed"]
    assert len(calls) == n_text == 64, (len(calls), n_text)
    assert set(calls.values()) == {1}, {d: n for d, n in calls.items() if n != 1}  # exactly once each
    # the killed worker's committed batches were reused, not redone; only its interrupted one ran again
    starts = [r for r in _read_log(log) if r[0] == "start"]
    assert len(starts) == len(ends) + 1  # the one forward pass the kill interrupted
    from mmrec.encoders import read_features

    feats = read_features(Path(entry["output"]))
    assert len(feats.item_ids) == 64 and np.isfinite(feats.matrix).all()
