"""Serving latency: the HTTP API under load on loopback, next to the bare online-store read.

Starts `mmrec serve` for a dataset in a subprocess on 127.0.0.1 (one per online-store profile:
`--profile sqlite,redis` measures both side by side), then drives each endpoint with a bounded
asyncio HTTP/1.1 keep-alive load generator at 1 and 32 concurrent clients and prints p50/p95/p99
latency and requests/s. In the same run and process it times the bare online read of the same
users' precomputed top-K (the read behind GET /users/{id}/recommendations) two ways: Feast's
`FeatureStore.get_online_features` (the SDK call) and the online store's own `online_read`
(`mmrec.feast.view_reader.ViewReader`, what the API calls), sequentially and from 32 threads.

The machine may be shared, so every figure is compared with a reference measured in the same
run; the server's CPU time per request is printed too (it barely moves with other load). The run is split into `--rounds` rounds that each visit every (profile, endpoint,
clients) cell in turn: a burst of load from another process then lands on all cells alike
instead of on whichever cell happened to be running. Targets (issue 15):
- precomputed recommendations >= 50% of /health's requests/s at 32 clients;
- precomputed p50 at 1 client <= 2x the bare online read (`get_online_features`);
- session, similar and explain p99 at 32 clients <= 2x the precomputed endpoint's.

Every loop is bounded (requests and seconds per cell) and only loopback is ever contacted.
The client runs on the same cores as the server, so the figures include its cost.

    python benchmarks/serving.py --dataset data/raw/synth/dataset.yaml [--profile sqlite,redis]
        [--requests 2000] [--seconds 20] [--rounds 4] [--json reports/synth/serving_benchmark.json]

The Redis profile needs the store materialised there first (`MMREC__FEATURES__PROFILE=redis
mmrec stage materialize ...`, or `features.profile: redis` in the params file).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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


async def _client(
    port: int,
    requests: list[bytes],
    counter: list[int],
    limit: int,
    deadline: float,
    lat: list[float],
    statuses: dict[int, int],
) -> None:
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
    await asyncio.gather(
        *[_client(port, requests, counter, limit, start + seconds, lat, statuses) for _ in range(clients)]
    )
    return {"lat": lat, "wall": time.perf_counter() - start, "statuses": statuses}


def load(
    port: int, requests: list[bytes], clients: int, limit: int, seconds: float, warmup: int = 50, server: Any = None
) -> dict[str, Any]:
    """One burst of `limit` requests (or `seconds`) from `clients` connections: raw latencies, and
    the CPU seconds the server process (`psutil.Process`, workers included) spent on them."""
    asyncio.run(_load(port, requests, min(clients, 4), warmup, seconds))  # warm caches and the pool
    before = cpu_seconds(server)
    out = asyncio.run(_load(port, requests, clients, limit, seconds))
    return {**out, "cpu": cpu_seconds(server) - before}


def cpu_seconds(server: Any) -> float:
    """User + system CPU time of the server and its worker processes (0 without a server).

    Unlike latency and requests/s, CPU time per request hardly moves when other processes share
    the cores: it is the figure to compare across runs on a busy machine.
    """
    if server is None:
        return 0.0
    import psutil

    total = 0.0
    for proc in [server, *server.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):  # a worker that just exited
            t = proc.cpu_times()
            total += t.user + t.system
    return total


def summarise(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The bursts of one cell (one per round) as one figure: percentiles over all their latencies,
    requests/s as all requests over all the bursts' wall time."""
    lat = [x for p in parts for x in p["lat"]]
    wall = sum(p["wall"] for p in parts)
    statuses: dict[int, int] = {}
    for p in parts:
        for code, n in p.get("statuses", {}).items():
            statuses[code] = statuses.get(code, 0) + n
    out = {"n": len(lat), "rps": round(len(lat) / wall, 1) if wall else 0.0, **pct(lat)}
    if "cpu" in parts[0]:
        out["server_cpu_us"] = round(sum(p["cpu"] for p in parts) / max(len(lat), 1) * 1e6, 1)
    return {**out, "statuses": statuses} if "statuses" in parts[0] else out


# -- bare online read -------------------------------------------------------------------------------

FIELDS = ["item_ids", "scores", "model", "model_version"]


def bare_reads(read: Any, users: list[str], clients: int, limit: int, seconds: float) -> dict[str, Any]:
    """`read(user)` (one user's precomputed top-K, as the API reads it per request): raw latencies."""

    def one(user: str) -> float:
        t0 = time.perf_counter()
        read(user)
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
    return {"lat": lat, "wall": time.perf_counter() - start}


def readers(online: Any) -> dict[str, Any]:
    """The two bare reads: Feast's SDK call and the online store's `online_read` (the API's path)."""
    features = [f"user_recommendations:{f}" for f in FIELDS]
    return {
        "get_online_features (Feast SDK)": lambda u: online.store.get_online_features(
            features=features, entity_rows=[{"user_id": u}]
        ).to_dict(),
        "online_read (ViewReader)": lambda u: online.views_reader.read("user_recommendations", "user_id", [u], FIELDS),
    }


# -- server -------------------------------------------------------------------------------------------


def start_server(
    args: argparse.Namespace, profile: str | None, port: int, log_file: Path, src: Path | None = None
) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "mmrec.cli",
        "serve",
        "--dataset",
        str(args.dataset),
        "--port",
        str(port),
        "--host",
        HOST,
        "--workspace",
        str(args.workspace),
        "--params",
        str(args.params),
        "--reload-interval",
        "0",
    ]
    if profile:
        cmd += ["--profile", profile]
    if args.workers > 1:
        cmd += ["--workers", str(args.workers)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if src is not None:  # serve another checkout's mmrec package (--baseline)
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if args.api_key:
        env["MMREC_API_KEY"] = args.api_key
    # `python -m` puts the working directory first on sys.path: run from the checkout being served
    proc = subprocess.Popen(cmd, stdout=log_file.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=src or REPO)
    deadline = time.time() + args.startup_seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(
                f"mmrec serve exited with {proc.returncode}; log: {log_file}\n{log_file.read_text()[-2000:]}"
            )
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/ready", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"mmrec serve did not become ready in {args.startup_seconds}s; log: {log_file}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)  # uvicorn's graceful stop (workers included)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


PRE = "GET /users/{id}/recommendations (precomputed)"
SESSION = "POST /recommendations (session, 5 items)"
SIMILAR = "GET /items/{id}/similar (fused)"
EXPLAIN = "GET /users/{id}/recommendations/{item}/explain"
HEALTH = "GET /health"
SDK = "get_online_features (Feast SDK)"


def targets(res: dict[str, Any], clients: list[int]) -> list[tuple[str, float, float, bool]]:
    """(target, measured ratio, bound, met) for one profile's figures (see the module docstring)."""
    lo, hi = min(clients), max(clients)
    api, bare = res["api"], res["bare"]
    out = [
        (
            f"precomputed req/s / health req/s @{hi}",
            api[f"{PRE} @{hi}"]["rps"] / api[f"{HEALTH} @{hi}"]["rps"],
            0.5,
            True,
        ),
        (
            f"precomputed p50 / bare get_online_features p50 @{lo}",
            api[f"{PRE} @{lo}"]["p50"] / bare[f"{SDK} @{lo}"]["p50"],
            2.0,
            False,
        ),
    ]
    for name in (SESSION, SIMILAR, EXPLAIN):
        out.append(
            (
                f"{name.split(' (')[0]} p99 / precomputed p99 @{hi}",
                api[f"{name} @{hi}"]["p99"] / api[f"{PRE} @{hi}"]["p99"],
                2.0,
                False,
            )
        )
    return [(t, round(v, 2), b, v >= b if at_least else v <= b) for t, v, b, at_least in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=REPO / "data/raw/synth/dataset.yaml")
    ap.add_argument("--workspace", type=Path, default=Path("."))
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument(
        "--profile",
        default=None,
        help="Feast profile(s), comma-separated (sqlite, redis: side by side); default params.yaml's",
    )
    ap.add_argument(
        "--requests", type=int, default=2000, help="requests per (endpoint, clients) cell, all rounds together"
    )
    ap.add_argument("--seconds", type=float, default=20.0, help="time cap per cell, all rounds together")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds (each visits every cell once)")
    ap.add_argument("--clients", default="1,32")
    ap.add_argument("--users", type=int, default=200, help="distinct users/items cycled through")
    ap.add_argument("--workers", type=int, default=1, help="server processes (mmrec serve --workers)")
    ap.add_argument("--api-key", default=None, help="run the server with this MMREC_API_KEY (and send it)")
    ap.add_argument("--startup-seconds", type=float, default=180.0)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="a checkout of an earlier commit (e.g. `git worktree add /tmp/base main`): its API is served and "
        "measured too, interleaved with this one, for a before/after under the same load",
    )
    args = ap.parse_args()
    args.workspace = args.workspace.resolve()
    args.dataset = args.dataset.resolve()
    args.params = (args.params if args.params.is_absolute() else Path.cwd() / args.params).resolve()

    import pandas as pd

    from mmrec.context import StageContext
    from mmrec.feast.online import OnlineFeatures

    ctx = StageContext.from_files(args.dataset, args.params, args.workspace)
    recs = pd.read_parquet(ctx.paths.recommendations, columns=["user_id", "item_id"])
    rng = random.Random(0)
    all_users = sorted(recs["user_id"].astype(str).unique())
    users = rng.sample(all_users, min(args.users, len(all_users)))
    items = sorted(recs["item_id"].astype(str).unique())
    sample_items = rng.sample(items, min(args.users, len(items)))
    profiles = [p.strip() for p in args.profile.split(",")] if args.profile else [None]
    onlines = {p: OnlineFeatures.from_context(ctx, p) for p in profiles}
    names = {p: onlines[p].profile for p in profiles}

    key = args.api_key
    cells = {
        PRE: [request_bytes("GET", f"/users/{u}/recommendations?k=20", None, key) for u in users],
        SESSION: [
            request_bytes("POST", "/recommendations", {"item_ids": rng.sample(items, 5), "k": 20}, key) for _ in users
        ],
        SIMILAR: [request_bytes("GET", f"/items/{i}/similar?k=20&modality=fused", None, key) for i in sample_items],
        EXPLAIN: [
            request_bytes("GET", f"/users/{u}/recommendations/{rng.choice(items)}/explain", None, key) for u in users
        ],
        HEALTH: [request_bytes("GET", "/health", None, None)],
    }
    client_counts = [int(c) for c in args.clients.split(",")]
    rounds = max(1, args.rounds)
    per_round, secs = max(1, args.requests // rounds), args.seconds / rounds
    results: dict[str, Any] = {
        "dataset": ctx.spec.name,
        "cpus": os.cpu_count(),
        "rounds": rounds,
        "profiles": {},
        "load_average_before": os.getloadavg()[0],
    }
    codes = {"this": None, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    import psutil

    servers: dict[tuple[str, Any], tuple[subprocess.Popen[bytes], int]] = {}
    logs = Path(tempfile.mkdtemp(prefix="mmrec-serving-bench-"))
    raw: dict[tuple[str, str], list[dict[str, Any]]] = {}
    try:
        for code, src in codes.items():
            for p in profiles:
                port = free_port()
                servers[(code, p)] = (start_server(args, p, port, logs / f"server-{code}-{names[p]}.log", src), port)
        for r in range(rounds):
            for p in profiles:
                for code in codes:
                    proc, port = servers[(code, p)]
                    for name, reqs in cells.items():
                        for c in client_counts:
                            raw.setdefault((f"{code}/{names[p]}", f"api|{name} @{c}"), []).append(
                                load(port, reqs, c, per_round, secs, server=psutil.Process(proc.pid))
                            )
                for name, read in readers(onlines[p]).items():
                    for c in client_counts:
                        raw.setdefault((names[p], f"bare|{name} @{c}"), []).append(
                            bare_reads(read, users, c, per_round, secs)
                        )
            print(f"round {r + 1}/{rounds} done (1-min load average {os.getloadavg()[0]:.1f})", flush=True)
    finally:
        for proc, _ in servers.values():
            stop(proc)

    summaries = {key: summarise(parts) for key, parts in raw.items()}
    for code in codes:
        for p in profiles:
            run = f"{code}/{names[p]}" if len(codes) > 1 else names[p]
            results["profiles"][run] = {
                "api": {c.split("|", 1)[1]: v for (who, c), v in summaries.items() if who == f"{code}/{names[p]}"},
                "bare": {c.split("|", 1)[1]: v for (who, c), v in summaries.items() if who == names[p]},
            }
    results["load_average_after"] = os.getloadavg()[0]
    print(
        f"\nserving benchmark: dataset {ctx.spec.name}, online store(s) {', '.join(names.values())}, {os.cpu_count()} CPUs, "
        f"{args.workers} server worker(s), {len(users)} users cycled, <= {args.requests} requests / {args.seconds:.0f} s per cell "
        f"in {rounds} interleaved rounds, loopback; 1-min load average {results['load_average_before']:.1f} before, "
        f"{results['load_average_after']:.1f} after (above {os.cpu_count()}: other processes share the cores and the "
        f"absolute figures are inflated; compare the ratios)\n"
    )
    width = max(len(r) for r in results["profiles"])
    print(
        f"{'store':<{width}} {'endpoint':<52} {'clients':>7} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'req/s':>8} "
        f"{'cpu us':>7}  statuses"
    )
    for profile, res in results["profiles"].items():
        for key_, r in [*res["api"].items(), *res["bare"].items()]:
            name, clients = key_.rsplit(" @", 1)
            statuses = ",".join(f"{s}:{n}" for s, n in sorted(r.get("statuses", {}).items())) or "-"
            cpu = f"{r['server_cpu_us']:>7.0f}" if "server_cpu_us" in r else f"{'-':>7}"
            print(
                f"{profile:<{width}} {name:<52} {clients:>7} {r['n']:>6} {r['p50']:>8.2f} {r['p95']:>8.2f} {r['p99']:>8.2f} "
                f"{r['rps']:>8.1f} {cpu}  {statuses}"
            )
    print()
    met_all = True
    for profile, res in results["profiles"].items():
        if profile.startswith("baseline/"):
            res["targets"] = [
                {"target": t, "ratio": v, "bound": b, "met": m} for t, v, b, m in targets(res, client_counts)
            ]
            for t in res["targets"]:
                print(f"{profile:<{width}} {t['target']:<62} {t['ratio']:>6.2f}")
            continue
        res["targets"] = [{"target": t, "ratio": v, "bound": b, "met": m} for t, v, b, m in targets(res, client_counts)]
        for t in res["targets"]:
            met_all &= t["met"]
            print(
                f"{profile:<{width}} {t['target']:<62} {t['ratio']:>6.2f}  ({'>=' if 'req/s' in t['target'] else '<='} "
                f"{t['bound']:g}) {'met' if t['met'] else 'NOT met'}"
            )
        lo = min(client_counts)
        lean = res["bare"][f"online_read (ViewReader) @{lo}"]["p50"]
        hi = max(client_counts)
        cpu = {n: res["api"][f"{n} @{hi}"].get("server_cpu_us") for n in (PRE, HEALTH)}
        if all(cpu.values()):
            print(
                f"{profile:<{width}} (server CPU per request @{hi}: precomputed {cpu[PRE]:.0f} us, /health {cpu[HEALTH]:.0f} us: "
                f"/health's share {cpu[HEALTH] / cpu[PRE]:.2f}, what req/s would show on a machine with a core to spare)"
            )
        print(
            f"{profile:<{width}} (precomputed p50 / the API's own online_read p50 @{lo}: "
            f"{res['api'][f'{PRE} @{lo}']['p50'] / lean:.2f}x; /health p50 / online_read p50: "
            f"{res['api'][f'{HEALTH} @{lo}']['p50'] / lean:.2f}x)"
        )
    print(f"\nall targets {'met' if met_all else 'NOT all met'}" + (" (by this checkout)" if args.baseline else ""))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"figures written to {args.json}")
    print(f"server logs: {logs}")


if __name__ == "__main__":
    main()
