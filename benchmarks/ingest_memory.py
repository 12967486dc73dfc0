"""Peak memory and time of reading a large interactions CSV, against pandas.read_csv in the same run.

The line-accounting reader (`mmrec.data.reader`) streams the file in 8 MiB blocks and keeps only
the parsed rows; it must not need several times the file's size on top of them. The reference is
`pandas.read_csv(dtype=str)` (the C parser, no per-line accounting) on the same file, which needs
about the same memory for the same string rows. Each measurement runs in a fresh process, so the
peak resident size (ru_maxrss) is its own; the interpreter + imports baseline is subtracted.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ingest_memory.py [--rows 1000000] [--stray-quotes 10]

Prints file MB, then per reader: seconds, peak MB above baseline, peak / file size, rows read;
pandas runs twice: on the file with stray quotes (it silently loses the rows after each) and on a
clean copy (the reference for the ratios mmrec / pandas).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {repo!r})
import pandas as pd
from mmrec.data.contract import InteractionsSpec
from mmrec.data.adapters import read_raw
from pathlib import Path
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
path = Path({path!r})
t = time.perf_counter()
if {which!r} == "mmrec":
    spec = InteractionsSpec(path=path.name, columns={{"user_id": "user_id", "item_id": "item_id", "timestamp": "timestamp"}})
    raw = read_raw(path, spec)
    rows, rejects = len(raw.frame), len(raw.rejects)
else:
    df = pd.read_csv(path, dtype=str, on_bad_lines="skip")
    rows, rejects = len(df), None
secs = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"seconds": secs, "peak_mb": (peak - base) / 1024, "rows": rows, "rejects": rejects}}))
"""


def measure(which: str, path: Path) -> dict:
    code = CHILD.format(repo=str(REPO), path=str(path), which=which)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--stray-quotes", type=int, default=10, help="lines with an unclosed quote, spread evenly")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path, clean = Path(tmp) / "interactions.csv", Path(tmp) / "clean.csv"
        step = max(1, args.rows // max(1, args.stray_quotes))
        with path.open("w") as fh, clean.open("w") as fc:
            for f in (fh, fc):
                f.write("user_id,item_id,timestamp,rating\n")
            for r in range(args.rows):
                quote = '"' if args.stray_quotes and r % step == step // 2 else ""
                fh.write(f"u{r % 50000:05d},{quote}i{(r * 7919) % 20000:05d},{1704067200 + r},{1 + r % 5}\n")
                fc.write(f"u{r % 50000:05d},i{(r * 7919) % 20000:05d},{1704067200 + r},{1 + r % 5}\n")
        mb = path.stat().st_size / 2**20
        print(f"file: {mb:.1f} MB, {args.rows} data lines, {args.stray_quotes} with an unclosed quote")
        res = {
            "mmrec": measure("mmrec", path),
            "pandas": measure("pandas", path),  # what a plain reader does with the stray quotes
            "pandas (clean copy)": measure("pandas", clean),  # the reference: same rows, no accounting
        }
        for w, r in res.items():
            print(
                f"{w:20s} {r['seconds']:6.2f} s  peak {r['peak_mb']:7.1f} MB above baseline  "
                f"peak/file {r['peak_mb'] / mb:4.1f}x  rows {r['rows']}  rejects {r['rejects']}"
            )
        m, p = res["mmrec"], res["pandas (clean copy)"]
        print(
            f"mmrec / pandas on the clean copy: time {m['seconds'] / p['seconds']:.2f}x, peak memory "
            f"{m['peak_mb'] / max(p['peak_mb'], 1e-9):.2f}x"
        )


if __name__ == "__main__":
    main()
