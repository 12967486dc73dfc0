"""Framework cost of the hot endpoint, in process: ASGI calls without sockets (issue 15).

Drives the app built by `mmrec.serve.app.create_app` over the tiny test fixture (an in-memory
precomputed list, so the store read is a dict look-up and what is left is the web stack) with
hand-made ASGI requests, through the full middleware stack, and prints CPU microseconds per
request for `/health`, the precomputed recommendations through the fast route
(mmrec/serve/hot_path.py) and through the FastAPI route alone (fast route taken out), measured
interleaved in one process so the ratios hold on a loaded machine. It complements
benchmarks/serving.py (sockets, a real online store), which needs a materialised workspace.

    PYTHONPATH=. .venv/bin/python benchmarks/serving_inprocess.py [--requests 3000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_apps():
    from mmrec.serve import hot_path
    from mmrec.serve.app import create_app
    from mmrec.serve.settings import ServeSettings
    from mmrec.serve.state import StateHolder
    from tests.conftest import FIXTURES
    from tests.serving import ListSource, tiny_state

    state = tiny_state(FIXTURES / "tiny" / "dataset.yaml")
    apps = []
    for fast in (True, False):
        holder = StateHolder(ListSource([state]), interval_s=0)
        holder.reload()  # what the lifespan does at startup
        app = create_app(holder, ServeSettings(log_key="bench"), poll=False)
        if not fast:
            app.router.routes[:] = [
                r for r in app.router.routes if not isinstance(getattr(r, "app", None), hot_path.FastRecommendations)
            ]
        apps.append(app)
    return apps


async def call(app, path: str, query: bytes = b"") -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    status = 0

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def run(requests: int, rounds: int) -> dict[str, float]:
    fast, slow = make_apps()
    cases = {
        "health": (fast, "/health", b""),
        "precomputed (fast route)": (fast, "/users/u1/recommendations", b"k=2"),
        "precomputed (FastAPI route)": (slow, "/users/u1/recommendations", b"k=2"),
    }
    for app, path, q in cases.values():
        assert await call(app, path, q) == 200
    best = {name: float("inf") for name in cases}
    for _ in range(rounds):
        for name, (app, path, q) in cases.items():
            start = time.process_time()
            for _ in range(requests):
                await call(app, path, q)
            best[name] = min(best[name], (time.process_time() - start) / requests * 1e6)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    print(f"load average {os.getloadavg()}")
    best = asyncio.run(run(args.requests, args.rounds))
    for name, us in best.items():
        print(f"{name:<30} {us:8.1f} CPU-us/request (fastest of {args.rounds} rounds)")
    h, f, s = best["health"], best["precomputed (fast route)"], best["precomputed (FastAPI route)"]
    print(
        f"precomputed / health CPU: fast route {f / h:.2f}x, FastAPI route {s / h:.2f}x; fast route saves "
        f"{s - f:.0f} us ({1 - f / s:.0%}) per request; load average {os.getloadavg()}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
