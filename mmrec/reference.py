"""Our figures next to published reference figures of other toolkits, on the same split.

A reference file (YAML, e.g. benchmarks/reference/ml100k-mm.yaml) records the split it was
measured on (`split.hash`, `split.warm_hash`), the cold slice's random Recall@20 and one row per
reference model with its provenance. `compare` lines a `metrics.json` report up against it: warm
test figures are comparable when the warm hashes match (train/valid/test identical), cold ones
only when the whole split hash matches (same cold items); anything else is printed as not
comparable, never silently compared. `find_reference` picks, among several reference files, the
one measured on the report's split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mmrec.errors import ConfigError

COLUMNS = ("recall@20", "ndcg@20", "cold_recall@20")


def load_reference(path: str | Path) -> dict[str, Any]:
    """Read and check a reference file.

    Raises:
        ConfigError: missing file, bad YAML, or a row without a model name / with a non-numeric figure.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: reference file not found")
    try:
        ref = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    if not isinstance(ref, dict) or not isinstance(ref.get("rows"), list) or not isinstance(ref.get("split"), dict):
        raise ConfigError(f"{p}: expected `split: {{hash, warm_hash, ...}}` and `rows: [...]`")
    if not ref["split"].get("hash"):
        raise ConfigError(f"{p}: split.hash is required (the split the figures were measured on)")
    for i, row in enumerate(ref["rows"], 1):
        if not isinstance(row, dict) or not row.get("model"):
            raise ConfigError(f"{p}: rows[{i}] needs a `model` name")
        bad = [c for c in COLUMNS if c in row and not isinstance(row[c], (int, float))]
        if bad:
            raise ConfigError(f"{p}: rows[{i}] ({row['model']}): {bad} must be numbers")
    return ref


def find_reference(folder: str | Path, metrics: dict[str, Any]) -> Path | None:
    """The reference file in `folder` measured on the report's split, else on its train/valid/test.

    A file with the same split hash (cold figures compare too) wins over one with only the same
    warm hash (warm figures only); files are tried in name order. None when nothing matches.

    Raises:
        ConfigError: a reference file in `folder` that `load_reference` rejects.
    """
    split = metrics.get("split", {})
    warm_match = None
    for path in sorted(Path(folder).glob("*.yaml")):
        ref = load_reference(path)["split"]
        if ref["hash"] == split.get("hash"):
            return path
        if warm_match is None and split.get("warm_hash") and ref.get("warm_hash") == split.get("warm_hash"):
            warm_match = path
    return warm_match


def compare(metrics: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """Which parts of `metrics` (a metrics.json) compare with `ref`, and the rows side by side."""
    split = metrics.get("split", {})
    warm_ok = (bool(split.get("warm_hash")) and split.get("warm_hash") == ref["split"].get("warm_hash")) or split.get(
        "hash"
    ) == ref["split"]["hash"]
    cold_ok = split.get("hash") == ref["split"]["hash"]
    ours = []
    for name, e in metrics.get("models", {}).items():
        cold = e.get("cold", {})
        ours.append(
            {
                "model": f"ours: {name}",
                "toolkit": "mmrec (this run)",
                "recall@20": e.get("test", {}).get("recall@20"),
                "ndcg@20": e.get("test", {}).get("ndcg@20"),
                "cold_recall@20": cold.get("recall@20"),
                "cold_unscored": bool(cold.get("unscored")),
                "cold_lift": (e.get("cold_random_lift") or {}).get("recall@20"),
                "cold_p": (cold.get("p_value") or {}).get("recall@20"),
            }
        )
    return {
        "warm_comparable": warm_ok,
        "cold_comparable": cold_ok,
        "ours": ours,
        "reference": ref["rows"],
        "split": {"ours": split, "reference": ref["split"]},
        "cold_random": ref.get("cold_random_recall@20"),
        # the report's own slice: its ceilings against its own random expectation
        "cold_ceilings": metrics.get("random", {}).get("cold", {}).get("ceilings"),
        "cold_random_ours": (metrics.get("random", {}).get("cold", {}).get("expected") or {}).get("recall@20"),
    }


def format_comparison(cmp: dict[str, Any]) -> str:
    """A fixed-width table: reference rows, then ours, with what is (not) comparable said above it."""
    ours_split = cmp["split"]["ours"]
    ref_split = cmp["split"]["reference"]
    lines = [
        (
            f"reference split {ref_split['hash'][:12]} (warm {str(ref_split.get('warm_hash'))[:12]}); "
            f"this report: split {str(ours_split.get('hash'))[:12]} (warm {str(ours_split.get('warm_hash'))[:12]})"
        ),
        "warm test: "
        + (
            "comparable (same train/valid/test)"
            if cmp["warm_comparable"]
            else "NOT comparable (different train/valid/test): reference rows shown for orientation only"
        ),
        "cold slice: "
        + (
            "comparable (same cold items)"
            if cmp["cold_comparable"]
            else "NOT comparable (different cold items, e.g. a cold_valid part): compare x random instead"
        ),
        "",
    ]
    ceil = cmp.get("cold_ceilings") or {}
    own_random = cmp.get("cold_random_ours")
    if ceil.get("global", {}).get("recall@20") is not None and own_random:
        best, perfect = ceil["global"]["recall@20"], ceil["personal"]["recall@20"]
        lines[-1:-1] = [
            f"cold ceilings of this report's slice: the best global order R@20 {best:.4f} "
            f"({best / own_random:.2f}x random), a perfect personal ranking {perfect:.4f} ({perfect / own_random:.2f}x)"
        ]
    rnd = cmp.get("cold_random")
    head = f"{'model':<52} {'R@20':>7} {'N@20':>7} {'cold R@20':>10} {'x random':>9} {'cold p':>7}"
    lines += [head, "-" * len(head)]

    def num(v: Any, w: int, d: int = 4) -> str:
        return f"{v:>{w}.{d}f}" if isinstance(v, (int, float)) else f"{'-':>{w}}"

    for r in cmp["reference"]:
        lift = r.get("cold_recall@20") / rnd if rnd and isinstance(r.get("cold_recall@20"), (int, float)) else None
        lines.append(
            f"{r['model'][:52]:<52} {num(r.get('recall@20'), 7)} {num(r.get('ndcg@20'), 7)} "
            f"{num(r.get('cold_recall@20'), 10, 3)} {num(lift, 9, 2)} {num(None, 7)}"
        )
    lines.append("-" * len(head))
    for r in cmp["ours"]:
        cold = "unscored" if r["cold_unscored"] else None
        lines.append(
            f"{r['model'][:52]:<52} {num(r['recall@20'], 7)} {num(r['ndcg@20'], 7)} "
            f"{(f'{cold:>10}' if cold else num(r['cold_recall@20'], 10, 3))} {num(r['cold_lift'], 9, 2)} "
            f"{num(r['cold_p'], 7, 3)}"
        )
    return "\n".join(lines)
