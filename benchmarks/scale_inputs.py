"""Per-unit costs that docs/scaling.md scales to 10M users x 1M items: CPU-seconds, FLOPs, bytes, memory.

On a shared machine wall time measures the neighbours as much as the code, so every rate here is
also given per CPU-second of the thread doing the work (`time.thread_time()`; torch, BLAS and
FAISS run on the calling thread with one thread). That is the figure that scales: a dedicated
core delivers it, and N cores deliver N times it for these embarrassingly parallel stages.

- encoders (bare model, inputs decoded and preprocessed beforehand, as in extraction.py): CPU-s
  and FLOPs per item (torch's FlopCounterMode over a real batch), input and output bytes per
  item, resident memory of the loaded model; the decode+preprocess CPU-s per item separately;
- exact top-K scoring (`mmrec.recommend.topk.iter_topk`, seen items masked): CPU-s per user at I
  items and d dims, peak RSS of the chunked scoring;
- ANN (FAISS HNSW, M=32) against exact inner-product top-K on the same factors: build CPU-s per
  item, query CPU-s per user, recall@K.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale_inputs.py --json /tmp/scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from batch_scoring import PeakRSS, factor_model, random_seen
from extraction import BATCH, DEFAULT_DATA, MODALITY_OF, ml100k_items, prepare_all, synth_items


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def clocked(fn: Any) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this thread) of `fn()`."""
    w, c = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - w, time.thread_time() - c


def input_bytes(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode())
    return Path(value).stat().st_size


def encoder_costs(name: str, items: list[tuple[str, Any]], limit: int, num_frames: int) -> dict[str, Any]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mmrec.encoders import create_encoder
    from mmrec.encoders.base import TorchEncoder

    modality = MODALITY_OF[name]
    kwargs: dict[str, Any] = {"device": "cpu", "precision": "fp32"}
    if name == "frames":
        kwargs.update(image_encoder="efficientnet_lite0", num_frames=num_frames)
    if name == "whisper_tiny":
        kwargs["window"] = "full"  # real audio: Whisper's 30 s window
    before = rss_mb()
    encoder = create_encoder(name, **kwargs)
    items = [it for it in items if it[1] is not None][:limit]
    c = time.thread_time()
    prepared, _ = prepare_all(encoder, items)
    decode_cpu = (time.thread_time() - c) / max(len(prepared), 1)
    if modality == "text":
        prepared.sort(key=len)
    bs = BATCH[modality]
    batches = [prepared[i : i + bs] for i in range(0, len(prepared), bs)]
    encoder.encode_batch(batches[0])  # load + warm up
    model_mb = rss_mb() - before
    if isinstance(encoder, TorchEncoder):
        collated = [encoder.collate(b) for b in batches]

        def run() -> None:
            for b in collated:
                encoder._run(b, encoder.precision)

        with FlopCounterMode(display=False) as counter:
            encoder._run(collated[0], encoder.precision)
    else:  # video: frames through the image model, then pooling

        def run() -> None:
            for b in batches:
                encoder.encode_batch(b)

        with FlopCounterMode(display=False) as counter:
            encoder.encode_batch(batches[0])
    flops_per_item = counter.get_total_flops() / len(batches[0])
    wall, cpu = clocked(run)
    n = len(prepared)
    dim = int(getattr(encoder, "dim", 0) or 0)
    row = {
        "encoder": encoder.id,
        "modality": modality,
        "items": n,
        "batch_size": bs,
        "threads": torch.get_num_threads(),
        "cpu_s_per_item": cpu / n,
        "wall_s_per_item": wall / n,
        "cpu_share": cpu / wall if wall else None,
        "decode_cpu_s_per_item": decode_cpu,
        "gflops_per_item": flops_per_item / 1e9,
        "gflops_per_cpu_s": flops_per_item * n / cpu / 1e9 if cpu else None,
        "input_bytes_per_item": float(np.mean([input_bytes(v) for _, v in items])),
        "output_dim": dim,
        "output_bytes_per_item": 4 * dim,
        "model_rss_mb": model_mb,
    }
    print(
        f"{encoder.id:<28} n={n:<4} cpu {row['cpu_s_per_item'] * 1e3:8.1f} ms/item  wall {row['wall_s_per_item'] * 1e3:8.1f} "
        f"ms/item  ({row['cpu_share']:.0%} of a core)  {row['gflops_per_item']:7.2f} GFLOP/item  "
        f"decode {decode_cpu * 1e3:6.1f} ms/item  in {row['input_bytes_per_item'] / 1024:7.1f} KiB  "
        f"out {4 * dim} B  model {model_mb:6.0f} MB",
        flush=True,
    )
    return row


def scoring_costs(users: int, items: int, dim: int, k: int, batch: int) -> dict[str, Any]:
    from mmrec.recommend.topk import iter_topk

    rng = np.random.default_rng(0)
    user_f = rng.standard_normal((users, dim), dtype=np.float32)
    item_f = rng.standard_normal((items, dim), dtype=np.float32)
    seen = random_seen(users, items, 50, rng)
    model = factor_model(user_f, item_f, seen)

    def run() -> None:
        for _ in iter_topk(model, k=k, batch_size=batch, exclude=seen):
            pass

    run_small = factor_model(user_f[:batch], item_f, seen[:batch])  # warm-up
    for _ in iter_topk(run_small, k=k, batch_size=batch, exclude=seen[:batch]):
        pass
    with PeakRSS() as mem:
        wall, cpu = clocked(run)
    flops = 2.0 * users * items * dim
    row = {
        "users": users,
        "items": items,
        "dim": dim,
        "k": k,
        "batch_size": batch,
        "cpu_s_per_user": cpu / users,
        "wall_s_per_user": wall / users,
        "cpu_share": cpu / wall,
        "gflops_per_cpu_s": flops / cpu / 1e9,
        "peak_rss_mb": mem.mb,
    }
    print(
        f"exact top-{k} scoring  {users} users x {items} items x {dim}d: cpu {cpu / users * 1e6:7.1f} us/user  "
        f"wall {wall / users * 1e6:7.1f} us/user  ({row['cpu_share']:.0%} of a core)  "
        f"{row['gflops_per_cpu_s']:.1f} GFLOP/CPU-s  peak +{mem.mb:.0f} MB",
        flush=True,
    )
    return row


def ann_costs(items: int, dim: int, queries: int, k: int) -> dict[str, Any]:
    import faiss

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(1)
    # factors with structure (clusters), as trained ones have; uniform noise is ANN's worst case
    centers = rng.standard_normal((256, dim), dtype=np.float32)
    item_f = centers[rng.integers(0, 256, items)] + 0.5 * rng.standard_normal((items, dim), dtype=np.float32)
    user_f = centers[rng.integers(0, 256, queries)] + 0.5 * rng.standard_normal((queries, dim), dtype=np.float32)
    exact = faiss.IndexFlatIP(dim)
    exact.add(item_f)
    _, truth = exact.search(user_f, k)
    hnsw = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 80
    _build_wall, build_cpu = clocked(lambda: hnsw.add(item_f))
    hnsw.hnsw.efSearch = 128
    holder: dict[str, Any] = {}
    _q_wall, q_cpu = clocked(lambda: holder.setdefault("res", hnsw.search(user_f, k)))
    _, found = holder["res"]
    recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth, strict=True)]))
    _e_wall, e_cpu = clocked(lambda: exact.search(user_f, k))
    row = {
        "items": items,
        "dim": dim,
        "queries": queries,
        "k": k,
        "M": 32,
        "ef_search": 128,
        "build_cpu_s_per_item": build_cpu / items,
        "query_cpu_s_per_user": q_cpu / queries,
        "exact_cpu_s_per_user": e_cpu / queries,
        f"recall_at_{k}": recall,
        "index_bytes_per_item": 4 * dim + 2 * 32 * 4,
    }
    print(
        f"HNSW M=32 ef=128 over {items} items: build {build_cpu / items * 1e6:.0f} us/item, query "
        f"{q_cpu / queries * 1e6:.0f} us/user vs exact {e_cpu / queries * 1e6:.0f} us/user, recall@{k} {recall:.3f}",
        flush=True,
    )
    return row


def training_costs(users: int, items: int, per_user: int, dim: int, epochs: int) -> dict[str, Any]:
    """BPR-MF (the collaborative core the joint-embedding models share): CPU-s per interaction-epoch."""
    import torch

    from mmrec.data.interactions import Interactions
    from mmrec.models import create_model

    rng = np.random.default_rng(2)
    m = random_seen(users, items, per_user, rng)
    data = Interactions(
        m,
        np.array([f"u{i}" for i in range(users)], dtype=object),
        np.array([f"i{i}" for i in range(items)], dtype=object),
    )
    model = create_model("bpr", dim=dim, max_epochs=epochs, eval_every=10**6, patience=10**6)
    torch.manual_seed(0)
    with PeakRSS() as mem:
        wall, cpu = clocked(lambda: model.fit(data))
    n = m.nnz * epochs
    row = {
        "users": users,
        "items": items,
        "interactions": int(m.nnz),
        "epochs": epochs,
        "dim": dim,
        "cpu_s_per_interaction_epoch": cpu / n,
        "wall_s_per_interaction_epoch": wall / n,
        "cpu_share": cpu / wall,
        "peak_rss_mb": mem.mb,
    }
    print(
        f"BPR-MF d={dim}: {m.nnz} interactions x {epochs} epochs: cpu {cpu / n * 1e6:.2f} us/interaction-epoch "
        f"({row['cpu_share']:.0%} of a core), peak +{mem.mb:.0f} MB",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--synth", type=Path, default=Path("/tmp/mmrec-synth"))
    ap.add_argument("--encoders", default="minilm,efficientnet_lite0,whisper_tiny,frames")
    ap.add_argument("--limit", type=int, default=32)
    ap.add_argument("--num-frames", type=int, default=4, help="frames per clip (params.yaml extract.video.num_frames)")
    ap.add_argument("--users", type=int, default=8192)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--parts", default="encoders,scoring,ann,train")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    out: dict[str, Any] = {
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
        "encoders": [],
        "torch": torch.__version__,
        "rss_after_imports_mb": rss_mb(),
    }  # Python + torch + mmrec: every worker pays it
    parts = set(args.parts.split(","))
    if "encoders" in parts:
        media = synth_items(args.synth, n_items=max(args.limit, 64))
        text_image = ml100k_items(args.data)
        sources = {
            "text": text_image["text"],
            "image": text_image["image"],
            "audio": media.get("audio", []),
            "video": media.get("video", []),
        }
        for name in [e for e in args.encoders.split(",") if e]:
            out["encoders"].append(encoder_costs(name, sources[MODALITY_OF[name]], args.limit, args.num_frames))
    if "scoring" in parts:
        out["scoring"] = scoring_costs(args.users, args.items, args.dim, args.k, 1024)
    if "ann" in parts:
        out["ann"] = ann_costs(args.items, args.dim, 2000, args.k)
    if "train" in parts:
        out["train"] = training_costs(20_000, 10_000, 20, args.dim, 2)
    out["load_average_end"] = os.getloadavg()
    print(f"load average during the run: {out['load_average']} -> {out['load_average_end']} on {out['cpus']} CPUs")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
