"""How every model's training cost grows with interactions and with catalogue size (issue 15).

Synthetic shops (clustered item content with a text-like and an image-like vector, Zipf item
popularity, users with a few favourite clusters) at 1x, 4x and 16x the base size (items and
interactions grow together, so the density is fixed) and, separately, at 16x the items with the
base's interactions. For every model it prints CPU seconds per epoch (the fastest epoch of a
short run without validation: evaluation excluded; closed-form models: the fit, fastest of 2;
CPU time because wall time on a shared machine measures the neighbours), the
peak RSS above the process's baseline during the fit, and two fitted exponents:

- interactions: slope of log(s/epoch) against log(interactions) over 1x/4x/16x (target <= 1.15);
- items: log(s/epoch at 16x items / at 1x) / log 16 at fixed interactions (target <= 0.3).

Also, in the same run:
- batch top-K users/s of `mmrec.recommend.topk.iter_topk` next to FAISS IndexFlatIP on the same
  factors (`benchmarks/batch_scoring.run_case`; reduced size by default, `--scoring-full` for
  100k users x 100k items);
- the thread-oversubscription check: one training run alone and the same run beside CPU-bound
  neighbour processes (one per usable CPU), threads sized by `mmrec.runtime` (auto) against the
  host's core count; the ratio of wall times is what the neighbour costs.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scaling.py --quick
    .venv/bin/python benchmarks/scaling.py [--models bpr,two_tower] [--scoring-full] [--json out.json]

The last line is `scaling exponents: interactions=<x> items=<y>` (the worst model's each).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from batch_scoring import PeakRSS, random_seen, run_case

MODELS = ["popularity", "itemknn", "bpr", "lightgcn", "content_knn", "vbpr", "two_tower", "mm_graph"]
CLOSED_FORM = {"popularity", "itemknn", "content_knn"}
PER_USER = 20  # mean interactions per user: users = interactions / PER_USER


def _draw(
    rng: np.random.Generator,
    n: int,
    n_users: int,
    cluster: np.ndarray,
    pop: np.ndarray,
    likes: np.ndarray,
    n_likes: np.ndarray,
    clusters: int,
) -> tuple[np.ndarray, np.ndarray]:
    """`n` (user, item) draws: a liked cluster (80%) or the whole catalogue (20%), Zipf inside."""
    n_items = len(cluster)
    order = np.argsort(cluster, kind="stable")
    starts = np.searchsorted(cluster[order], np.arange(clusters + 1))
    cum = np.zeros(n_items)
    for c in range(clusters):  # per-cluster CDF of popularity, for inverse-CDF sampling
        seg = pop[order[starts[c] : starts[c + 1]]]
        cum[starts[c] : starts[c + 1]] = np.cumsum(seg) / max(seg.sum(), 1e-12)
    users = rng.integers(0, n_users, n)
    pick = likes[users, (rng.random(n) * n_likes[users]).astype(int)]
    in_cluster = (rng.random(n) < 0.8) & (starts[pick + 1] > starts[pick])
    items = np.searchsorted(np.cumsum(pop) / pop.sum(), rng.random(n)).clip(0, n_items - 1)
    c = pick[in_cluster]
    # inverse CDF inside the cluster: the keys of cluster c's segment lie in (c, c + 1]
    at = np.searchsorted(cluster[order] + cum, c + rng.random(len(c)), side="left")
    items[in_cluster] = order[np.minimum(at, starts[c + 1] - 1)]
    return users, items


def synthetic_shop(
    n_items: int, n_interactions: int, seed: int = 0, clusters: int = 64, n_users: int | None = None
) -> dict[str, Any]:
    """A shop whose content predicts behaviour, generated in O(items + interactions).

    Items belong to one of `clusters` clusters; their text (64-d) and image (128-d) vectors are
    noisy projections of the cluster centre plus an item offset (8% of items have no image).
    Each user likes 1-3 clusters; an interaction picks a liked cluster (80%) or any item (20%)
    and, within it, an item by Zipf popularity. Exactly `n_interactions` distinct pairs (draws
    are repeated until enough distinct ones exist, then subsampled); 10% of the pairs of users
    with >= 5 items are held out as validation.
    """
    rng = np.random.default_rng(seed)
    n_users = n_users or max(1, n_interactions // PER_USER)
    if n_interactions > 0.5 * n_users * n_items:
        raise ValueError(f"{n_interactions} interactions do not fit {n_users} users x {n_items} items sparsely")
    latent = 16
    centre = rng.standard_normal((clusters, latent)).astype(np.float32)
    cluster = rng.integers(0, clusters, n_items)
    z = centre[cluster] + 0.5 * rng.standard_normal((n_items, latent)).astype(np.float32)
    text = z @ rng.standard_normal((latent, 64)).astype(np.float32) + 0.5 * rng.standard_normal((n_items, 64)).astype(
        np.float32
    )
    image = z @ rng.standard_normal((latent, 128)).astype(np.float32) + rng.standard_normal((n_items, 128)).astype(
        np.float32
    )
    has_image = rng.random(n_items) > 0.08
    image[~has_image] = 0.0
    pop = 1.0 / (1.0 + rng.permutation(n_items)) ** 0.8  # Zipf popularity, random rank
    likes = rng.integers(0, clusters, (n_users, 3))
    n_likes = rng.integers(1, 4, n_users)
    keys = np.zeros(0, np.int64)
    draws = n_interactions
    for _ in range(20):
        u, i = _draw(rng, draws, n_users, cluster, pop, likes, n_likes, clusters)
        keys = np.unique(np.concatenate([keys, u.astype(np.int64) * n_items + i]))
        if len(keys) >= n_interactions:
            break
        draws = max(draws // 2, n_interactions - len(keys)) * 2
    keys = rng.choice(keys, size=min(n_interactions, len(keys)), replace=False)
    m = sp.csr_matrix((np.ones(len(keys), np.float32), (keys // n_items, keys % n_items)), shape=(n_users, n_items))
    coo = m.tocoo()
    held = (rng.random(coo.nnz) < 0.1) & (np.diff(m.indptr)[coo.row] >= 5)
    train = sp.csr_matrix((coo.data[~held], (coo.row[~held], coo.col[~held])), shape=m.shape)
    valid = sp.csr_matrix((coo.data[held], (coo.row[held], coo.col[held])), shape=m.shape)
    return {"train": train, "valid": valid, "text": text, "image": image, "image_mask": has_image}


def interactions_of(shop: dict[str, Any], with_features: bool) -> Any:
    from mmrec.data.interactions import Interactions
    from mmrec.models.item_features import with_features as attach

    m = shop["train"]
    data = Interactions(
        m,
        np.array([f"u{i}" for i in range(m.shape[0])], dtype=object),
        np.array([f"i{i}" for i in range(m.shape[1])], dtype=object),
    )
    if not with_features:
        return data
    return attach(
        data,
        {"text": shop["text"], "image": shop["image"]},
        {"text": np.ones(m.shape[1], bool), "image": shop["image_mask"]},
    )


def model_params(name: str, epochs: int) -> dict[str, Any]:
    if name in CLOSED_FORM:
        return {"modalities": ["text", "image"]} if name == "content_knn" else {}
    params: dict[str, Any] = {"max_epochs": epochs, "eval_every": 10**6, "patience": 10**6}
    if name in ("vbpr", "two_tower", "mm_graph"):
        params["modalities"] = ["text", "image"]
    return params


class epoch_clock:
    """Replace the epoch loop's clock (mmrec.models.training.time.perf_counter) with `clock`.

    The default is the process CPU time: on a shared machine wall time measures the neighbours
    as much as the code; with one thread the process's CPU time is what the work costs
    (docs/scaling.md, "How the per-unit costs were measured"). benchmarks/epoch_instructions.py
    passes a clock that counts its reads. Benchmark-only: the library keeps reporting wall seconds.
    """

    def __init__(self, clock: Callable[[], float] = time.process_time) -> None:
        self.clock = clock

    def __enter__(self) -> Self:
        import types

        from mmrec.models import training

        self._mod, self._saved = training, training.time
        training.time = types.SimpleNamespace(perf_counter=self.clock)  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        self._mod.time = self._saved  # type: ignore[assignment]


def time_model(name: str, shop: dict[str, Any], epochs: int) -> dict[str, Any]:
    """CPU s/epoch (fastest epoch, or fastest of 2 fits for closed-form models), wall fit, peak RSS."""
    from mmrec.models import create_model

    data = interactions_of(shop, with_features=name in ("content_knn", "vbpr", "two_tower", "mm_graph"))
    runs = 2 if name in CLOSED_FORM else 1
    best, fit_s, peak = np.inf, np.inf, 0.0
    model = None
    for _ in range(runs):
        model = create_model(name, **model_params(name, epochs))
        with PeakRSS(interval=0.02) as mem, epoch_clock():
            t, c = time.perf_counter(), time.process_time()
            model.fit(data)  # no validation: evaluation is excluded from the epoch cost
            fit, fit_cpu = time.perf_counter() - t, time.process_time() - c
        peak = max(peak, mem.mb)
        fit_s = min(fit_s, fit)
        epoch_s = [row["seconds"] for row in model.history if "seconds" in row]
        best = min(best, min(epoch_s) if epoch_s else fit_cpu)
    out = {"s_per_epoch": best, "fit_wall_s": fit_s, "peak_rss_mb": peak}
    if name == "two_tower" and model is not None:
        out["tower_rows_last_batch"] = int(getattr(model, "last_tower_rows", 0))
    search = getattr(model, "neighbour_search", None)
    if search is not None:  # content_knn: how its neighbours were found, and their sampled recall
        out["neighbours"] = {"approximate": search.approximate, "recall": search.recall, "sample": search.sample}
    if name in ("lightgcn", "mm_graph") and model is not None:
        out["propagation"] = "sampled" if model.uses_sampling() else "full"
        out["steps_per_epoch"] = int(model.steps_per_epoch)
    return out


def slope(x: list[float], y: list[float]) -> float:
    lx, ly = np.log(np.asarray(x, float)), np.log(np.maximum(np.asarray(y, float), 1e-6))
    return float(np.polyfit(lx, ly, 1)[0])


# -- the neighbour check --------------------------------------------------------------------------


def _spin(stop_at: float) -> None:  # a CPU-bound neighbour (pure Python: no thread pools of its own)
    x = 0
    while time.time() < stop_at:
        for _ in range(10_000):
            x += 1


def _train_once(threads: str, shop_size: tuple[int, int], epochs: int) -> tuple[float, int]:
    """(seconds, threads used) of a two_tower fit in a fresh process with MMREC_THREADS=threads."""
    code = "\n".join(
        [
            "import sys, time",
            f"sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(REPO / 'benchmarks')!r})",
            "from scaling import synthetic_shop, interactions_of",
            "from mmrec.runtime import configure_threads",
            "from mmrec.models import create_model",
            "n = configure_threads(None)",
            f"shop = synthetic_shop({shop_size[0]}, {shop_size[1]}, seed=3)",
            "data = interactions_of(shop, True)",
            f"m = create_model('two_tower', modalities=['text', 'image'], max_epochs={epochs}, eval_every=10**6, "
            + "patience=10**6)",
            "t = time.perf_counter(); m.fit(data); print(time.perf_counter() - t, n)",
        ]
    )
    env = {
        k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    }
    env["MMREC_THREADS"] = threads
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    seconds, used = out.stdout.split()[-2:]
    return float(seconds), int(used)


def _beside_neighbours(threads: str, shop_size: tuple[int, int], epochs: int, n: int) -> tuple[float, int]:
    ctx = mp.get_context("spawn")
    stop_at = time.time() + 3600
    spinners = [ctx.Process(target=_spin, args=(stop_at,), daemon=True) for _ in range(n)]
    for p in spinners:
        p.start()
    try:
        return _train_once(threads, shop_size, epochs)
    finally:
        for p in spinners:
            p.terminate()
            p.join()


def neighbour_check(shop_size: tuple[int, int], epochs: int, repeats: int = 2) -> dict[str, Any]:
    """Wall time alone vs beside one spinning process per usable CPU, auto threads vs host cores.

    Alone and beside alternate `repeats` times and the fastest of each counts, so load that
    other users put on a shared machine during one measurement weighs less.
    """
    from mmrec.runtime import cpu_budget

    cpus = cpu_budget().cpus
    host = os.cpu_count() or 1
    res: dict[str, Any] = {"cpus": cpus, "host_cores": host, "repeats": repeats}
    for label, threads in (("auto", "auto"), ("host_cores", str(host))):
        alone, busy = [], []
        for _ in range(max(1, repeats)):
            alone.append(_train_once(threads, shop_size, epochs))
            busy.append(_beside_neighbours(threads, shop_size, epochs, cpus))
        a, b = min(alone), min(busy)
        res[label] = {
            "alone_s": a[0],
            "beside_neighbour_s": b[0],
            "ratio": b[0] / a[0],
            "threads_alone": a[1],
            "threads_beside": b[1],
            "alone_all": alone,
            "beside_all": busy,
        }
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="0.5k -> 8k items, 12.5k -> 200k interactions")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--epochs", type=int, default=2, help="epochs per timed fit (the fastest one counts)")
    ap.add_argument("--scoring-users", type=int, default=None)
    ap.add_argument("--scoring-items", type=int, default=None)
    ap.add_argument("--scoring-full", action="store_true", help="100k users x 100k items")
    ap.add_argument("--skip-neighbour", action="store_true")
    ap.add_argument("--neighbour-repeats", type=int, default=2, help="alone/beside alternations (fastest counts)")
    ap.add_argument("--skip-scoring", action="store_true")
    ap.add_argument("--skip-models", action="store_true", help="only the scoring and neighbour parts")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    from mmrec.runtime import configure_threads, cpu_budget

    threads = configure_threads(None)
    base_items, base_inter = (500, 12_500) if args.quick else (2_000, 50_000)
    sizes = [(base_items * f, base_inter * f, f"{f}x") for f in (1, 4, 16)] + [
        (base_items * 16, base_inter, "16x items")
    ]
    models = [] if args.skip_models else [m.strip() for m in args.models.split(",") if m.strip()]
    budget = cpu_budget()
    print(
        f"scaling benchmark: {budget.cpus} usable CPUs (affinity {budget.affinity}, quota {budget.quota}, host "
        f"{budget.host}), {threads} threads, load average {os.getloadavg()}",
        flush=True,
    )
    results: dict[str, Any] = {"load_average_start": os.getloadavg(), "threads": threads, "sizes": [], "models": {}}
    shops = {}
    for n_items, n_inter, label in sizes:
        t = time.perf_counter()
        shops[label] = synthetic_shop(n_items, n_inter, seed=1)
        tr = shops[label]["train"]
        results["sizes"].append(
            {"label": label, "items": n_items, "users": tr.shape[0], "train_interactions": int(tr.nnz)}
        )
        print(
            f"  shop {label}: {n_items} items, {tr.shape[0]} users, {tr.nnz} train interactions "
            f"({time.perf_counter() - t:.1f}s to generate)",
            flush=True,
        )
    head = (
        f"{'model':<16} "
        + " ".join(f"{lab + ' s/ep':>14} {'MB':>6}" for *_, lab in sizes)
        + f" {'exp inter':>9} {'exp items':>9}"
    )
    print(head)
    print("-" * len(head), flush=True)
    for name in models:
        rows = {}
        for _n_items, _n_inter, label in sizes:
            rows[label] = time_model(name, shops[label], args.epochs)
        inter = [results["sizes"][i]["train_interactions"] for i in range(3)]
        e_inter = slope(inter, [rows[lab]["s_per_epoch"] for *_, lab in sizes[:3]])
        e_items = float(np.log(rows["16x items"]["s_per_epoch"] / rows["1x"]["s_per_epoch"]) / np.log(16))
        results["models"][name] = {"sizes": rows, "exponent_interactions": e_inter, "exponent_items": e_items}
        print(
            f"{name:<16} "
            + " ".join(f"{rows[lab]['s_per_epoch']:>14.4f} {rows[lab]['peak_rss_mb']:>6.0f}" for *_, lab in sizes)
            + f" {e_inter:>9.2f} {e_items:>9.2f}",
            flush=True,
        )
        if name == "content_knn":
            print(
                "  content_knn neighbours: "
                + ", ".join(
                    f"{lab}: "
                    + (
                        "HNSW, recall {:.3f} on {} sampled items".format(
                            rows[lab]["neighbours"]["recall"], rows[lab]["neighbours"]["sample"]
                        )
                        if rows[lab]["neighbours"]["approximate"]
                        else "exact"
                    )
                    for *_, lab in sizes
                ),
                flush=True,
            )
        if name in ("lightgcn", "mm_graph"):
            print(
                f"  {name} propagation: "
                + ", ".join(
                    f"{lab}: {rows[lab]['propagation']}, {rows[lab]['steps_per_epoch']} steps/epoch"
                    for *_, lab in sizes
                ),
                flush=True,
            )
        if name == "two_tower":
            print(
                "  two_tower item-tower rows in the last (partial) batch, duplicates counted: "
                + ", ".join(f"{lab}: {rows[lab].get('tower_rows_last_batch')} of {n} items" for n, _, lab in sizes)
            )
    print(
        "s/ep: CPU seconds of the fastest epoch without validation (closed-form models: of the fastest fit); "
        "MB: peak RSS above baseline"
    )

    if not args.skip_scoring:
        nu = 100_000 if args.scoring_full else (args.scoring_users or (10_000 if args.quick else 20_000))
        ni = 100_000 if args.scoring_full else (args.scoring_items or (20_000 if args.quick else 50_000))
        rng = np.random.default_rng(0)
        user_f = rng.standard_normal((nu, 64), dtype=np.float32)
        item_f = rng.standard_normal((ni, 64), dtype=np.float32)
        seen = random_seen(nu, ni, 50, rng)
        with PeakRSS() as mem:
            sc = run_case("synthetic", user_f, item_f, seen, 20, 1024, 1)
        results["scoring"] = sc
        print(
            f"batch top-20, {nu} users x {ni} items: mmrec {sc['users_per_s']['mmrec']:.0f} users/s "
            f"(peak +{sc['peak_rss_mb']['mmrec']:.0f} MB), FAISS IndexFlatIP {sc['users_per_s']['faiss_flat_ip']:.0f} "
            f"users/s; ratio {sc['speedup_vs_faiss']:.2f} (mmrec masks seen items, FAISS does not); "
            f"process peak +{mem.mb:.0f} MB",
            flush=True,
        )

    if not args.skip_neighbour:
        size = (base_items * 4, base_inter * 4)
        nb = neighbour_check(size, 2, args.neighbour_repeats)
        results["neighbour"] = nb
        for label in ("auto", "host_cores"):
            r = nb[label]
            print(
                f"neighbour check (two_tower, {size[0]} items, {size[1]} interactions, threads={label}): alone "
                f"{r['alone_s']:.1f}s ({r['threads_alone']} threads), beside {nb['cpus']} CPU-bound process(es) "
                f"{r['beside_neighbour_s']:.1f}s ({r['threads_beside']} threads; fastest of {nb['repeats']}): "
                f"ratio {r['ratio']:.2f} (target <= ~2)",
                flush=True,
            )

    results["load_average_end"] = os.getloadavg()
    worst_inter = max(r["exponent_interactions"] for r in results["models"].values()) if models else float("nan")
    worst_items = max(r["exponent_items"] for r in results["models"].values()) if models else float("nan")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float))
    print(f"load average at the end: {os.getloadavg()}")
    print(f"scaling exponents: interactions={worst_inter:.2f} items={worst_items:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
