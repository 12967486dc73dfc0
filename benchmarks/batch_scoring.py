"""Batch top-K scoring speed: mmrec's chunked path against FAISS `IndexFlatIP` exact search.

Both run in the same process on the same float32 embeddings with the same thread count,
alternating repetitions (best time kept) so load from other processes hits both alike:
- mmrec: `mmrec.recommend.topk.iter_topk` over a factor model (BPR-MF's scoring: user @ item.T,
  cold users filled with popularity), seen items masked, `torch.topk` per chunk. It does strictly
  more work than FAISS here, which does not mask seen items.
- FAISS: `IndexFlatIP.search(users, k)`, exact maximum inner product.
Also printed: peak RSS increase during each method (sampled every 5 ms), and the overlap of the
two top-K lists on unmasked scoring (must be ~1.0: both are exact).

Cases:
- synthetic: random 64-d factors, 50k items, `--users` users (default 20k so the default run is
  short; `--users 100000` is the full 100k x 50k case), ~50 seen items per user.
- ml100k: the real ml100k-mm interactions (943 users x 1682 items) for the seen-item mask, random
  64-d factors (speed does not depend on what the factors learned).

    OMP_NUM_THREADS=2 python benchmarks/batch_scoring.py [--case synthetic|ml100k|all] [--users N] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml100k-mm"


class PeakRSS:
    """Peak resident memory above the level at entry, sampled in a thread."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRSS:
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def mb(self) -> float:
        return (self.peak - self.base) / 2**20


def factor_model(user_f: np.ndarray, item_f: np.ndarray, seen: sp.csr_matrix) -> Any:
    """A BPR-MF model holding the given factors (no training): the production scoring path."""
    from mmrec.models import create_model

    model = create_model("bpr", dim=user_f.shape[1])
    model.user_ids = np.array([f"u{i}" for i in range(user_f.shape[0])], dtype=object)
    model.item_ids = np.array([f"i{i}" for i in range(item_f.shape[0])], dtype=object)
    model.train_matrix = seen
    model.user_factors, model.item_factors = user_f, item_f
    return model


def random_seen(n_users: int, n_items: int, per_user: int, rng: np.random.Generator) -> sp.csr_matrix:
    cols = rng.integers(0, n_items, size=n_users * per_user)
    rows = np.repeat(np.arange(n_users), per_user)
    m = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(n_users, n_items))
    m.data[:] = 1.0
    return m


def ml100k_seen(data: Path) -> sp.csr_matrix:
    import pandas as pd

    raw = pd.read_csv(data / "ratings.csv", dtype={"user_id": str, "movie_id": str})
    u = pd.Index(sorted(raw.user_id.unique())).get_indexer(raw.user_id)
    i = pd.Index(sorted(raw.movie_id.unique())).get_indexer(raw.movie_id)
    m = sp.csr_matrix((np.ones(len(raw), np.float32), (u, i)), shape=(u.max() + 1, i.max() + 1))
    m.data[:] = 1.0
    return m


def run_case(
    name: str, user_f: np.ndarray, item_f: np.ndarray, seen: sp.csr_matrix, k: int, batch: int, repeat: int
) -> dict[str, Any]:
    import faiss

    from mmrec.recommend.topk import iter_topk

    model = factor_model(user_f, item_f, seen)
    n = user_f.shape[0]

    def ours() -> None:
        for _ in iter_topk(model, k=k, batch_size=batch, exclude=seen):
            pass

    index = faiss.IndexFlatIP(item_f.shape[1])
    index.add(item_f)

    def flat() -> None:
        index.search(user_f, k)

    timings: dict[str, list[float]] = {"mmrec": [], "faiss_flat_ip": []}
    peaks: dict[str, float] = {"mmrec": 0.0, "faiss_flat_ip": 0.0}
    fns: dict[str, Callable[[], None]] = {"mmrec": ours, "faiss_flat_ip": flat}
    for _ in range(repeat):
        for key, fn in fns.items():  # alternate, so background load affects both
            with PeakRSS() as mem:
                t = time.perf_counter()
                fn()
                timings[key].append(time.perf_counter() - t)
            peaks[key] = max(peaks[key], mem.mb)

    # exactness check on unmasked scoring for a sample of users
    sample = np.arange(min(n, 2000))
    mine = np.concatenate([idx for _, idx, _ in iter_topk(model, users=sample, k=k, batch_size=batch, exclude=None)])
    cold = np.diff(seen.indptr)[sample] == 0  # cold users get popularity from mmrec, not from FAISS
    _, theirs = index.search(user_f[sample], k)
    overlap = np.mean([len(set(a) & set(b)) / k for a, b, c in zip(mine, theirs, cold, strict=True) if not c])

    best = {key: min(v) for key, v in timings.items()}
    res = {
        "case": name,
        "users": n,
        "items": item_f.shape[0],
        "dim": item_f.shape[1],
        "k": k,
        "batch_size": batch,
        "seen_per_user": round(seen.nnz / n, 1),
        "users_per_s": {key: round(n / s, 1) for key, s in best.items()},
        "seconds": {key: round(s, 3) for key, s in best.items()},
        "peak_rss_mb": {key: round(v, 1) for key, v in peaks.items()},
        "speedup_vs_faiss": round(best["faiss_flat_ip"] / best["mmrec"], 3),
        "topk_overlap_unmasked": round(float(overlap), 4),
    }
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", choices=["synthetic", "ml100k", "all"], default="all")
    ap.add_argument("--users", type=int, default=20_000, help="synthetic users (100000 for the full case)")
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    opts = ap.parse_args()

    import faiss
    import torch

    torch.set_num_threads(opts.threads)
    faiss.omp_set_num_threads(opts.threads)
    rng = np.random.default_rng(0)
    results = []
    if opts.case in ("synthetic", "all"):
        user_f = rng.standard_normal((opts.users, opts.dim), dtype=np.float32)
        item_f = rng.standard_normal((opts.items, opts.dim), dtype=np.float32)
        seen = random_seen(opts.users, opts.items, 50, rng)
        results.append(run_case("synthetic", user_f, item_f, seen, opts.k, opts.batch_size, opts.repeat))
    if opts.case in ("ml100k", "all"):
        if (opts.data / "ratings.csv").is_file():
            seen = ml100k_seen(opts.data)
            user_f = rng.standard_normal((seen.shape[0], opts.dim), dtype=np.float32)
            item_f = rng.standard_normal((seen.shape[1], opts.dim), dtype=np.float32)
            results.append(run_case("ml100k", user_f, item_f, seen, opts.k, opts.batch_size, max(opts.repeat, 5)))
        else:
            print(f"ml100k: {opts.data / 'ratings.csv'} not found; skipped")

    print(f"threads: torch {torch.get_num_threads()}, faiss {faiss.omp_get_max_threads()}; best of repeats")
    head = (
        f"{'case':<10} {'users':>7} {'items':>6} {'mmrec users/s':>14} {'faiss users/s':>14} {'ratio':>6} "
        f"{'mmrec MB':>9} {'faiss MB':>9} {'overlap':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        print(
            f"{r['case']:<10} {r['users']:>7} {r['items']:>6} {r['users_per_s']['mmrec']:>14.0f} "
            f"{r['users_per_s']['faiss_flat_ip']:>14.0f} {r['speedup_vs_faiss']:>6.2f} {r['peak_rss_mb']['mmrec']:>9.0f} "
            f"{r['peak_rss_mb']['faiss_flat_ip']:>9.0f} {r['topk_overlap_unmasked']:>8.3f}"
        )
    print("ratio = mmrec users/s / FAISS users/s (mmrec also masks seen items; FAISS does not)")
    if opts.out:
        from mmrec.io import write_json

        write_json(opts.out, {"threads": opts.threads, "results": results})


if __name__ == "__main__":
    main()
