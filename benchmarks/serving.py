"""Serving latency: the HTTP API under load on loopback, next to the bare Feast online read.

Starts `mmrec serve` for a dataset (after `make demo`: the synthetic shop) in a subprocess on
127.0.0.1, then drives each endpoint with a bounded asyncio HTTP/1.1 keep-alive load generator
at 1 and 32 concurrent clients and prints p50/p95/p99 latency and requests/s. In the same run
and process it times `FeatureStore.get_online_features` for the same users' precomputed top-K
(the read behind GET /users/{id}/recommendations), sequentially and from 32 threads, and prints
the API/bare ratio. Targets (issue 6): p99 < 20 ms for precomputed recommendations at 32
clients on 2 cores; API overhead <= 2x the bare online read.

Every loop is bounded (requests and seconds per cell) and only loopback is ever contacted.
The client runs on the same 2 cores as the server, so the figures include its cost.

    python benchmarks/serving.py --dataset data/raw/synth/dataset.yaml [--profile sqlite|redis]
        [--requests 2000] [--seconds 20] [--json reports/synth/serving_benchmark.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # loopback only


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def pct(lat: list[float]) -> dict[str, float]:
    a = np.asarray(lat) * 1000.0
    if not len(a):
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan")}
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3)}


# -- load generator ---------------------------------------------------------------------------------


def request_bytes(method: str, path: str, body: dict[str, Any] | None, api_key: str | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"]
    if api_key:
        lines.append(f"X-API-Key: {api_key}")
    payload = b""
    if body is not None:
        payload = json.dumps(body).encode()
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def _client(port: int, requests: list[bytes], counter: list[int], limit: int, deadline: float,
                  lat: list[float], statuses: dict[int, int]) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while counter[0] < limit and time.perf_counter() < deadline:
            req = requests[counter[0] % len(requests)]
            counter[0] += 1
            t0 = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            status = int(head[9:12])
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def _load(port: int, requests: list[bytes], clients: int, limit: int, seconds: float) -> dict[str, Any]:
    lat: list[float] = []
    statuses: dict[int, int] = {}
    counter = [0]
    start = time.perf_counter()
    await asyncio.gather(*[_client(port, requests, counter, limit, start + seconds, lat, statuses) for _ in range(clients)])
    wall = time.perf_counter() - start
    return {"n": len(lat), "rps": round(len(lat) / wall, 1), **pct(lat), "statuses": statuses}


def load(port: int, requests: list[bytes], clients: int, limit: int, seconds: float, warmup: int = 50) -> dict[str, Any]:
    asyncio.run(_load(port, requests, min(clients, 4), warmup, seconds))  # warm caches and the pool
    return asyncio.run(_load(port, requests, clients, limit, seconds))


# -- bare online read -------------------------------------------------------------------------------


def bare_reads(store: Any, users: list[str], clients: int, limit: int, seconds: float) -> dict[str, Any]:
    """`get_online_features` for one user's precomputed top-K per call (what the API does per request)."""
    features = ["user_recommendations:item_ids", "user_recommendations:scores",
                "user_recommendations:model", "user_recommendations:model_version"]

    def one(user: str) -> float:
        t0 = time.perf_counter()
        store.get_online_features(features=features, entity_rows=[{"user_id": user}]).to_dict()
        return time.perf_counter() - t0

    for u in users[:50]:
        one(u)
    jobs = [users[i % len(users)] for i in range(limit)]
    start = time.perf_counter()
    deadline = start + seconds
    lat: list[float] = []
    if clients == 1:
        for u in jobs:
            if time.perf_counter() > deadline:
                break
            lat.append(one(u))
    else:
        with ThreadPoolExecutor(clients) as pool:
            lat = list(pool.map(lambda u: one(u) if time.perf_counter() < deadline else 0.0, jobs))
        lat = [x for x in lat if x > 0]
    wall = time.perf_counter() - start
    return {"n": len(lat), "rps": round(len(lat) / wall, 1), **pct(lat)}


# -- server -------------------------------------------------------------------------------------------


def start_server(args: argparse.Namespace, port: int, log_file: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "mmrec.cli", "serve", "--dataset", str(args.dataset), "--port", str(port), "--host", HOST,
           "--workspace", str(args.workspace), "--params", str(args.params), "--reload-interval", "0"]
    if args.profile:
        cmd += ["--profile", args.profile]
    if args.workers > 1:
        cmd += ["--workers", str(args.workers)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if args.api_key:
        env["MMREC_API_KEY"] = args.api_key
    proc = subprocess.Popen(cmd, stdout=log_file.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=REPO)
    deadline = time.time() + args.startup_seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"mmrec serve exited with {proc.returncode}; log: {log_file}\n{log_file.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/ready", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"mmrec serve did not become ready in {args.startup_seconds}s; log: {log_file}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=REPO / "data/raw/synth/dataset.yaml")
    ap.add_argument("--workspace", type=Path, default=Path("."))
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--profile", default=None, help="Feast profile (sqlite, redis); default params.yaml")
    ap.add_argument("--requests", type=int, default=2000, help="requests per (endpoint, clients) cell")
    ap.add_argument("--seconds", type=float, default=20.0, help="time cap per cell")
    ap.add_argument("--clients", default="1,32")
    ap.add_argument("--users", type=int, default=200, help="distinct users/items cycled through")
    ap.add_argument("--workers", type=int, default=1, help="server processes (mmrec serve --workers)")
    ap.add_argument("--api-key", default=None, help="run the server with this MMREC_API_KEY (and send it)")
    ap.add_argument("--startup-seconds", type=float, default=180.0)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    args.workspace = args.workspace.resolve()
    args.dataset = args.dataset.resolve()
    args.params = (args.params if args.params.is_absolute() else Path.cwd() / args.params).resolve()

    import pandas as pd

    from mmrec.context import StageContext
    from mmrec.features import OnlineFeatures

    ctx = StageContext.from_files(args.dataset, args.params, args.workspace)
    recs = pd.read_parquet(ctx.paths.recommendations, columns=["user_id", "item_id"])
    rng = random.Random(0)
    all_users = sorted(recs["user_id"].astype(str).unique())
    users = rng.sample(all_users, min(args.users, len(all_users)))
    items = sorted(recs["item_id"].astype(str).unique())
    sample_items = rng.sample(items, min(args.users, len(items)))
    online = OnlineFeatures.from_context(ctx, args.profile)

    port = free_port()
    log_file = Path(tempfile.mkdtemp(prefix="mmrec-serving-bench-")) / "server.log"
    proc = start_server(args, port, log_file)
    key = args.api_key
    cells = {
        "GET /users/{id}/recommendations (precomputed)": [request_bytes("GET", f"/users/{u}/recommendations?k=20", None, key) for u in users],
        "POST /recommendations (session, 5 items)": [
            request_bytes("POST", "/recommendations", {"item_ids": rng.sample(items, 5), "k": 20}, key) for _ in users],
        "GET /items/{id}/similar (fused)": [request_bytes("GET", f"/items/{i}/similar?k=20&modality=fused", None, key) for i in sample_items],
        "GET /users/{id}/recommendations/{item}/explain": [
            request_bytes("GET", f"/users/{u}/recommendations/{rng.choice(items)}/explain", None, key) for u in users],
        "GET /health": [request_bytes("GET", "/health", None, None)],
    }
    client_counts = [int(c) for c in args.clients.split(",")]
    results: dict[str, Any] = {"dataset": ctx.spec.name, "profile": online.profile, "cpus": os.cpu_count(), "api": {}, "bare": {},
                               "load_average_before": os.getloadavg()[0]}
    try:
        for name, reqs in cells.items():
            for c in client_counts:
                results["api"][f"{name} @{c}"] = load(port, reqs, c, args.requests, args.seconds)
        for c in client_counts:
            results["bare"][f"get_online_features (user top-K) @{c}"] = bare_reads(online.store, users, c, args.requests, args.seconds)
    finally:
        proc.send_signal(signal.SIGINT)  # uvicorn's graceful stop (workers included)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()

    results["load_average_after"] = os.getloadavg()[0]
    print(f"\nserving benchmark: dataset {ctx.spec.name}, online store {online.profile}, {os.cpu_count()} CPUs, "
          f"{args.workers} server worker(s), {len(users)} users cycled, <= {args.requests} requests / {args.seconds:.0f} s per cell, loopback; "
          f"1-min load average {results['load_average_before']:.1f} before, {results['load_average_after']:.1f} after "
          f"(above {os.cpu_count()}: other processes share the cores and the figures are inflated)\n")
    print(f"{'endpoint':<52} {'clients':>7} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'req/s':>8}  statuses")
    rows = [(k, v) for k, v in results["api"].items()] + [(k, v) for k, v in results["bare"].items()]
    for key_, r in rows:
        name, clients = key_.rsplit(" @", 1)
        statuses = ",".join(f"{s}:{n}" for s, n in sorted(r.get("statuses", {}).items())) or "-"
        print(f"{name:<52} {clients:>7} {r['n']:>6} {r['p50']:>8.2f} {r['p95']:>8.2f} {r['p99']:>8.2f} {r['rps']:>8.1f}  {statuses}")
    pre = "GET /users/{id}/recommendations (precomputed)"
    ratios = {}
    for c in client_counts:
        api, bare = results["api"][f"{pre} @{c}"], results["bare"][f"get_online_features (user top-K) @{c}"]
        ratios[c] = {"p50": round(api["p50"] / bare["p50"], 2), "p99": round(api["p99"] / bare["p99"], 2)}
        print(f"\nprecomputed recommendations vs bare get_online_features @{c} clients: "
              f"p50 {api['p50']:.2f} / {bare['p50']:.2f} ms = {ratios[c]['p50']:.2f}x, "
              f"p99 {api['p99']:.2f} / {bare['p99']:.2f} ms = {ratios[c]['p99']:.2f}x")
    top = max(client_counts)
    p99 = results["api"][f"{pre} @{top}"]["p99"]
    print(f"\ntarget p99 < 20 ms for precomputed at {top} clients: {p99:.2f} ms -> {'met' if p99 < 20 else 'NOT met'}")
    print(f"target API overhead <= 2x bare read (p50, 1 client): {ratios[min(client_counts)]['p50']:.2f}x -> "
          f"{'met' if ratios[min(client_counts)]['p50'] <= 2 else 'NOT met'}")
    results["ratios"] = ratios
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"figures written to {args.json}")
    print(f"server log: {log_file}")


if __name__ == "__main__":
    main()
