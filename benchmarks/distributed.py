"""Dask extraction and scoring on a 2-worker local cluster against the single process, in one run.

Phases (each timed in this run; the ratio is what to read, not the absolute seconds):
1. extraction: `--items` synthetic text documents through a real encoder (`--encoder`, default
   `minilm`, the packaged offline weights), single process (`mmrec.extract.extract_modality`,
   torch 1 thread) vs sharded over the cluster (`mmrec.distributed.extract`, 2 worker processes
   x 1 thread). Fresh workspaces and caches for both; encoder loading is inside both timings.
2. per-task overhead: (a) round trip of `--noop` empty tasks, (b) the extraction's own overhead
   per shard: (dask wall - single wall / workers) x workers / shards.
3. scoring: `--users` x `--items-score` synthetic 64-d factors (BPR's scoring path: user @ item.T,
   cold users -> popularity), ~50 seen items masked per user, top-20: single process
   (`write_recommendations`) vs user blocks on the cluster (`write_recommendations_dask`); the
   output files are compared byte for byte. Each side runs in a fresh child process so its
   peak RSS (`ru_maxrss`) is its own; workers report theirs too. The full score matrix would
   be users x items x 4 bytes (20 GB at 100k x 50k): the peaks show it is never built.
   `peak_rss_mb` is sampled during scoring (every 10 ms), `rss_before_scoring_mb` is the process
   with its model and history loaded; workers report `ru_maxrss` (their lifetime peak).

    OMP_NUM_THREADS=1 python benchmarks/distributed.py [--items 2000] [--users 100000] [--items-score 50000]
        [--encoder minilm] [--skip-extraction] [--skip-scoring] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# run as a script, this file's folder is sys.path[0], where its name would shadow the `distributed` package
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

WORKERS = 2
WORDS = [
    "movie",
    "story",
    "family",
    "war",
    "love",
    "city",
    "night",
    "music",
    "light",
    "river",
    "space",
    "game",
    "crime",
    "father",
    "heart",
    "dark",
    "school",
    "king",
    "road",
    "friend",
    "secret",
    "ocean",
    "summer",
    "island",
    "ghost",
    "truth",
    "power",
    "money",
    "dream",
    "fire",
    "winter",
    "train",
    "doctor",
]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def cluster(n: int = WORKERS) -> Any:
    from distributed import Client, LocalCluster

    lc = LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    )
    client = Client(lc)
    client.run(_warm)  # long-lived workers have their imports done: count them as start-up, not work
    return lc, client


def _warm() -> None:
    import torch

    import mmrec.distributed.extract
    import mmrec.distributed.scoring
    import mmrec.encoders.text
    import mmrec.models.bpr
    import mmrec.recommend.writer  # noqa: F401

    torch.set_num_threads(1)


# -- extraction ------------------------------------------------------------------------------------


def text_workspace(root: Path, n: int, seed: int = 0) -> tuple[Any, Any]:
    """A dataset with only validated text items (what the extract stage reads)."""
    import pandas as pd

    from mmrec.data.contract import DatasetSpec
    from mmrec.paths import DatasetPaths

    rng = np.random.default_rng(seed)
    docs = [
        f"title: item {i}\ndescription: " + " ".join(rng.choice(WORDS, size=int(rng.integers(30, 120))))
        for i in range(n)
    ]
    spec = DatasetSpec.model_validate(
        {
            "name": "bench",
            "interactions": {"path": "i.csv", "columns": {"user_id": "u", "item_id": "i", "timestamp": "t"}},
            "items": {"path": "items.csv", "columns": {"item_id": "id"}, "text_fields": {"title": "title"}},
        }
    ).model_copy(update={"resolved_root": str(root)})
    paths = DatasetPaths("bench", root / "ws")
    paths.validated.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"item_id": [f"i{i}" for i in range(n)], "text": docs}).to_parquet(
        paths.validated_table("items"), index=False
    )
    return spec, paths


def bench_extraction(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from mmrec.distributed.extract import extract_modality_dask
    from mmrec.encoders import ExtractParams
    from mmrec.extract import extract_modality

    torch.set_num_threads(1)
    params = ExtractParams.model_validate(
        {"device": "cpu", "progress": False, "workers": 1, "text": {"encoder": args.encoder, "batch_size": 32}}
    )
    tmp = Path(tempfile.mkdtemp(prefix="mmrec-bench-dist-"))
    spec, single = text_workspace(tmp / "single", args.items)
    _, dist = text_workspace(tmp / "dask", args.items)
    t0 = time.perf_counter()
    e1 = extract_modality(spec, single, "text", params)
    single_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    lc, client = cluster()
    startup_s = time.perf_counter() - t0
    try:
        shard = max(1, args.items // args.shards)
        t0 = time.perf_counter()
        e2 = extract_modality_dask(spec, dist, "text", params, client, shard_items=shard)
        dask_s = time.perf_counter() - t0

        def noop(i: int) -> int:
            return i

        client.gather(client.map(noop, range(10)))  # warm
        t0 = time.perf_counter()
        client.gather(client.map(noop, range(args.noop)))
        noop_ms = (time.perf_counter() - t0) / args.noop * 1e3
        worker_rss = client.run(peak_rss_mb)
    finally:
        client.close()
        lc.close()
    same = single.features("text", e1["encoder"]).read_bytes() == dist.features("text", e2["encoder"]).read_bytes()
    overhead_ms = max(0.0, (dask_s - single_s / WORKERS) * WORKERS / e2["shards"] * 1e3)
    return {
        "encoder": e1["encoder"],
        "items": args.items,
        "shards": e2["shards"],
        "single_s": round(single_s, 2),
        "dask_s": round(dask_s, 2),
        "speedup": round(single_s / dask_s, 2),
        "single_items_per_s": round(args.items / single_s, 1),
        "dask_items_per_s": round(args.items / dask_s, 1),
        "cluster_startup_s": round(startup_s, 2),
        "noop_task_ms": round(noop_ms, 2),
        "overhead_per_shard_ms": round(overhead_ms, 1),
        "identical_features": same,
        "encoded": [e1["encoded"], e2["encoded"]],
        "encoder_loads": e2["encoder_loads"],
        "worker_peak_rss_mb": {w: round(v, 0) for w, v in worker_rss.items()},
    }


# -- scoring (each side in a child process: its own peak RSS) --------------------------------------


def synthetic_model(n_users: int, n_items: int, dim: int = 64, per_user: int = 50, seed: int = 0) -> Any:
    import scipy.sparse as sp

    from mmrec.models import create_model

    rng = np.random.default_rng(seed)
    cols = rng.integers(0, n_items, size=n_users * per_user)
    rows = np.repeat(np.arange(n_users), per_user)
    seen = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(n_users, n_items))
    seen.data[:] = 1.0
    model = create_model("bpr", dim=dim)
    model.user_ids = np.array([f"u{i}" for i in range(n_users)], dtype=object)
    model.item_ids = np.array([f"i{i}" for i in range(n_items)], dtype=object)
    model.train_matrix = seen
    model.user_factors = rng.standard_normal((n_users, dim), dtype=np.float32) * 0.1
    model.item_factors = rng.standard_normal((n_items, dim), dtype=np.float32) * 0.1
    return model


class RSSSampler:
    """Peak current RSS of this process while the block runs (sampled every 10 ms), in MB."""

    def __init__(self) -> None:
        import threading

        import psutil

        self.proc, self.peak, self._stop = psutil.Process(), 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> float:
        return self.proc.memory_info().rss / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.01)

    def __enter__(self) -> RSSSampler:
        self.base = self._rss()
        self.peak = self.base
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def score_child(mode: str, users: int, items: int, out: str) -> dict[str, Any]:
    import torch

    from mmrec.params.recommend import RecommendParams
    from mmrec.recommend.writer import write_recommendations

    torch.set_num_threads(1)
    model = synthetic_model(users, items)
    chunk = RecommendParams().chunk_users(items)
    sampler = RSSSampler().__enter__()
    base = sampler.base
    t0 = time.perf_counter()
    if mode == "single":
        summary = write_recommendations(model, out, k=20, batch_size=chunk, exclude=model.train_matrix)
        workers: dict[str, float] = {}
        startup = 0.0
    else:
        from mmrec.distributed.scoring import write_recommendations_dask

        t1 = time.perf_counter()
        lc, client = cluster()
        startup = time.perf_counter() - t1
        try:
            t0 = time.perf_counter()
            summary = write_recommendations_dask(
                model, out, client, k=20, batch_size=chunk, exclude=model.train_matrix, block_users=8 * chunk
            )
            workers = {w: round(v, 0) for w, v in client.run(peak_rss_mb).items()}
        finally:
            client.close()
            lc.close()
    seconds = time.perf_counter() - t0
    sampler.__exit__()
    return {
        "mode": mode,
        "seconds": round(seconds, 2),
        "cluster_startup_s": round(startup, 2),
        "chunk_users": chunk,
        "blocks": summary.get("blocks"),
        "peak_rss_mb": round(sampler.peak, 0),
        "rss_before_scoring_mb": round(base, 0),
        "lifetime_max_rss_mb": round(peak_rss_mb(), 0),
        "worker_peak_rss_mb": workers,
        "rows": summary["rows"],
        "full_matrix_mb": round(users * items * 4 / 2**20, 0),
    }


def bench_scoring(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="mmrec-bench-score-"))
    out: dict[str, Any] = {}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for mode in ("single", "dask"):
        path = tmp / f"{mode}.parquet"
        cmd = [
            sys.executable,
            __file__,
            "--child-score",
            mode,
            "--users",
            str(args.users),
            "--items-score",
            str(args.items_score),
            "--out",
            str(path),
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"scoring child {mode} failed:\n{proc.stderr[-3000:]}")
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["identical_file"] = (tmp / "single.parquet").read_bytes() == (tmp / "dask.parquet").read_bytes()
    out["speedup"] = round(out["single"]["seconds"] / out["dask"]["seconds"], 2)
    out["users"], out["items"] = args.users, args.items_score
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=2000, help="text items to extract")
    ap.add_argument("--shards", type=int, default=16, help="extraction shards")
    ap.add_argument("--encoder", default="minilm")
    ap.add_argument("--noop", type=int, default=500, help="empty tasks for the per-task overhead")
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items-score", type=int, default=50_000)
    ap.add_argument("--skip-extraction", action="store_true")
    ap.add_argument("--skip-scoring", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--child-score", choices=["single", "dask"], help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_score:
        print(json.dumps(score_child(args.child_score, args.users, args.items_score, args.out)))
        return
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()}", flush=True)
    results: dict[str, Any] = {
        "workers": WORKERS,
        "threads_per_worker": 1,
        "cpus": os.cpu_count(),
        "load_average_start": [round(x, 1) for x in os.getloadavg()],
    }
    if not args.skip_extraction:
        results["extraction"] = r = bench_extraction(args)
        print(
            f"extraction {r['encoder']} x {r['items']} items: single {r['single_s']}s, dask {r['dask_s']}s "
            f"({r['shards']} shards) -> speed-up x{r['speedup']}; overhead/shard {r['overhead_per_shard_ms']} ms, "
            f"empty task {r['noop_task_ms']} ms; identical features: {r['identical_features']}",
            flush=True,
        )
    if not args.skip_scoring:
        results["scoring"] = s = bench_scoring(args)
        print(
            f"scoring {s['users']} users x {s['items']} items, top-20: single {s['single']['seconds']}s "
            f"(peak RSS {s['single']['peak_rss_mb']} MB), dask {s['dask']['seconds']}s in {s['dask']['blocks']} blocks "
            f"(driver peak RSS {s['dask']['peak_rss_mb']} MB, workers {s['dask']['worker_peak_rss_mb']}) -> "
            f"speed-up x{s['speedup']}; full matrix would be {s['single']['full_matrix_mb']} MB; "
            f"identical file: {s['identical_file']}",
            flush=True,
        )
    results["load_average_end"] = [round(x, 1) for x in os.getloadavg()]
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
