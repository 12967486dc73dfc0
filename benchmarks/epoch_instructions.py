"""Instructions and simulated cache misses of one training epoch, by data size (issue 15).

`benchmarks/scaling.py` measures CPU seconds per epoch, which mix two things: how much work
an epoch does (the algorithm) and how long each piece of work waits for memory (the caches).
This script separates them. It runs one epoch of a model on the same synthetic shops (1x, 4x,
16x, and 16x items at 1x interactions) under valgrind's callgrind with its cache simulation,
instrumenting only the second epoch (a client request turns instrumentation on when the epoch
starts and off when it ends, so imports, data generation and the first epoch are not
counted), and prints per size:

- instructions executed (Ir) and their fitted exponent against train interactions: the
  algorithm's cost, the same on a quiet or a loaded machine;
- data references, simulated first-level (D1) and last-level (LL) data-cache misses per
  interaction: where the time that instructions do not explain goes.

Needs valgrind, its `valgrind/callgrind.h` header and a C compiler (the client request is a
tiny shared library compiled into a temporary folder); exits 2 naming what is missing. Slow:
valgrind runs the instrumented epoch ~50-100x slower (minutes at 16x).

    .venv/bin/python benchmarks/epoch_instructions.py [--models bpr,lightgcn] [--sizes 1,4,16,16items]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

BASE_ITEMS, BASE_INTERACTIONS = 2_000, 50_000  # benchmarks/scaling.py's 1x shop
TRAINED = ("bpr", "lightgcn", "vbpr", "two_tower", "mm_graph")
HELPER = r"""
#include <valgrind/callgrind.h>
void epoch_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void epoch_end(void) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS_AT("epoch"); }
"""


def compile_helper(folder: Path) -> Path:
    """The client-request library, or SystemExit(2) naming what is missing."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if shutil.which("valgrind") is None or cc is None:
        raise SystemExit("epoch_instructions: needs valgrind and a C compiler on PATH (apt-get install valgrind gcc)")
    src, lib = folder / "helper.c", folder / "libepoch.so"
    src.write_text(HELPER)
    done = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(lib), str(src)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(
            f"epoch_instructions: cannot build the callgrind client request (valgrind-dev headers?):\n{done.stderr}"
        )
    return lib


@contextlib.contextmanager
def second_epoch_instrumented(client: Any) -> Iterator[list[int]]:
    """Patch the epoch loop's clock so that `client.epoch_start()` / `client.epoch_end()` bracket epoch 2.

    `mmrec.models.training.run_epochs` reads its clock once at the start of the run, then at
    each epoch's start and end: the 4th read starts epoch 2, the 5th ends it. Yields the read
    count (a one-element list); `tests/unit/test_epoch_instructions.py` checks the bracket
    against the epochs a real fit runs.
    """
    import scaling

    reads = [0]

    def perf_counter() -> float:
        reads[0] += 1
        if reads[0] == 4:
            client.epoch_start()
        elif reads[0] == 5:
            client.epoch_end()
        return time.perf_counter()

    with scaling.epoch_clock(perf_counter):
        yield reads


def child(model_name: str, size: str, lib: str) -> None:
    """Inside valgrind: build the shop, train 2 epochs, instrument the second."""
    import scaling
    import torch

    from mmrec.models import create_model

    torch.set_num_threads(1)
    factor = 16 if size == "16items" else int(size)
    inter = BASE_INTERACTIONS if size == "16items" else BASE_INTERACTIONS * factor
    shop = scaling.synthetic_shop(BASE_ITEMS * factor, inter, seed=1)
    data = scaling.interactions_of(shop, with_features=model_name in ("vbpr", "two_tower", "mm_graph"))
    model = create_model(model_name, **scaling.model_params(model_name, 2))
    with second_epoch_instrumented(ctypes.CDLL(lib)) as reads:
        model.fit(data)
    if reads[0] < 5:
        raise SystemExit(f"{model_name}: fewer than 2 epochs ran ({reads[0]} clock reads)")
    print(f"train_interactions={data.matrix.nnz}", flush=True)


def totals(path: Path) -> dict[str, int]:
    """Event totals of a callgrind output file."""
    events: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith("totals:"):
            return dict(zip(events, (int(v) for v in line.split()[1:]), strict=True))
    raise ValueError(f"{path}: no totals line")


def measure(model_name: str, size: str, lib: Path, folder: Path) -> dict[str, float]:
    out = folder / f"callgrind.{model_name}.{size}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MMREC_THREADS": "1"}
    env.setdefault("ATEN_CPU_CAPABILITY", "avx2")  # valgrind does not emulate AVX-512
    cmd = ["valgrind", "--tool=callgrind", "--cache-sim=yes", "--instr-atstart=no", f"--callgrind-out-file={out}.%p"]
    cmd += [sys.executable, __file__, "--child", model_name, size, str(lib)]
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{model_name} {size}: valgrind run failed:\n{done.stderr[-3000:]}")
    inter = int(done.stdout.split("train_interactions=")[1].split()[0])
    dumps = sorted(folder.glob(f"callgrind.{model_name}.{size}.*.1"))  # the dump at the epoch's end
    if not dumps:
        raise SystemExit(f"{model_name} {size}: no epoch dump written")
    d = totals(dumps[0])
    return {
        "train_interactions": inter,
        "instructions": d["Ir"],
        "data_refs": d["Dr"] + d["Dw"],
        "d1_misses": d["D1mr"] + d["D1mw"],
        "ll_misses": d["DLmr"] + d["DLmw"],
        "valgrind_s": time.perf_counter() - t,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="bpr,lightgcn")
    ap.add_argument("--sizes", default="1,4,16,16items")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in TRAINED]
    if unknown:
        raise SystemExit(f"epoch_instructions: {unknown} have no epochs; choose from {list(TRAINED)}")
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    bad = [s for s in sizes if s not in ("1", "4", "16", "16items")]
    if bad:
        raise SystemExit(f"epoch_instructions: unknown sizes {bad}; choose from 1, 4, 16, 16items")
    with tempfile.TemporaryDirectory(prefix="mmrec-callgrind-") as tmp:
        folder = Path(tmp)
        lib = compile_helper(folder)
        print(
            f"{'model':<10} {'size':>8} {'train inter.':>12} {'instr. (M)':>11} {'instr./inter.':>13} "
            f"{'D refs/inter.':>13} {'D1 miss/inter.':>14} {'LL miss/inter.':>14} {'valgrind s':>10}",
            flush=True,
        )
        for name in models:
            rows = {}
            for size in sizes:
                r = rows[size] = measure(name, size, lib, folder)
                n = r["train_interactions"]
                print(
                    f"{name:<10} {size:>8} {n:>12} {r['instructions'] / 1e6:>11.1f} {r['instructions'] / n:>13.0f} "
                    f"{r['data_refs'] / n:>13.0f} {r['d1_misses'] / n:>14.1f} {r['ll_misses'] / n:>14.2f} "
                    f"{r['valgrind_s']:>10.0f}",
                    flush=True,
                )
            grid = [s for s in ("1", "4", "16") if s in rows]
            if len(grid) >= 2:
                x = np.log([rows[s]["train_interactions"] for s in grid])
                y = np.log([rows[s]["instructions"] for s in grid])
                print(f"{name}: instructions exponent against interactions {np.polyfit(x, y, 1)[0]:.2f}")
            if "1" in rows and "16items" in rows:
                e = np.log(rows["16items"]["instructions"] / rows["1"]["instructions"]) / np.log(16)
                print(f"{name}: instructions exponent against items (fixed interactions) {e:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
