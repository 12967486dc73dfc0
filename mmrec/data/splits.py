"""Train/valid/test splits, the cold-start slices, their TSV export and the split hash.

The newest `cold_item_fraction` of items (by first interaction) never reach training. They are
divided by time once more: the older `cold_valid_fraction` of them form `cold_valid` (for
choosing cold-start settings: content weight, neighbour counts, ID dropout), the newest the
`cold_test` slice, touched once, in evaluation. Every interaction with a cold item, of any
user, is held out of train/valid/test.

The per-user ratio rule reproduces RecBole's `split_by_ratio` exactly (valid and test get
int(ratio * n) rows each, at least one when the ratio would give a fraction, train keeps the
rest and never drops below one row), so numbers compare with that toolkit on the same data.
Ties in time keep the file order (`source_row`), as a stable sort of the raw log would.

Each split is written as plain TSV (`user_id<TAB>item_id<TAB>timestamp`, unix seconds) so any
other toolkit can be run on exactly the same data; the split hash is the sha256 of those files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mmrec.config import SplitParams
from mmrec.constants import ITEM_ID, SOURCE_ROW, SPLIT_PARTS, TIMESTAMP, USER_ID
from mmrec.data.interactions import SplitData, split_data_from_frames
from mmrec.errors import DataError, StageError
from mmrec.io import atomic_dir, write_json
from mmrec.paths import DatasetPaths

SPLIT_COLUMNS = [USER_ID, ITEM_ID, TIMESTAMP]


@dataclass(frozen=True)
class SplitFrames:
    """The parts as DataFrames (user_id, item_id, timestamp as int unix seconds)."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    cold_test: pd.DataFrame
    cold_valid: pd.DataFrame = dataclasses.field(default_factory=lambda: pd.DataFrame(columns=SPLIT_COLUMNS))

    def parts(self) -> dict[str, pd.DataFrame]:
        """Every part, in file order (what is written: cold_valid.tsv too, empty when there is none)."""
        return {
            "train": self.train,
            "valid": self.valid,
            "test": self.test,
            "cold_valid": self.cold_valid,
            "cold_test": self.cold_test,
        }


def ratio_counts(n: int, ratios: tuple[float, float, float]) -> tuple[int, int, int]:
    """Rows for (train, valid, test) out of n, by RecBole's rule."""
    cnt = [int(r * n) for r in ratios]
    cnt[0] = n - sum(cnt[1:])
    for i in range(1, len(ratios)):
        if cnt[0] <= 1:
            break
        if 0 < ratios[-i] * n < 1:
            cnt[-i] += 1
            cnt[0] -= 1
    return cnt[0], cnt[1], cnt[2]


def _to_unix(ts: pd.Series) -> pd.Series:
    """Integer unix seconds, whatever the datetime resolution (pandas 3 defaults to microseconds)."""
    if pd.api.types.is_datetime64_any_dtype(ts):
        return (pd.to_datetime(ts, utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return pd.to_numeric(ts).astype("int64")


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in (USER_ID, ITEM_ID, TIMESTAMP) if c not in df.columns]
    if missing:
        raise DataError(f"interactions lack column(s) {missing} needed for splitting")
    if df[TIMESTAMP].isna().any():
        raise DataError("interactions contain null timestamps; run the validate stage first (it quarantines them)")
    out = pd.DataFrame(
        {
            USER_ID: df[USER_ID].astype(str).to_numpy(),
            ITEM_ID: df[ITEM_ID].astype(str).to_numpy(),
            TIMESTAMP: _to_unix(df[TIMESTAMP]).to_numpy(),
            SOURCE_ROW: (df[SOURCE_ROW].to_numpy() if SOURCE_ROW in df.columns else np.arange(len(df))),
        }
    )
    return out


def cold_items(df: pd.DataFrame, fraction: float) -> np.ndarray:
    """The newest `fraction` of interacted items, by first interaction time (ties: item id)."""
    if fraction <= 0 or df.empty:
        return np.zeros(0, dtype=object)
    first = df.groupby(ITEM_ID, sort=True)[TIMESTAMP].min().reset_index()
    first = first.sort_values([TIMESTAMP, ITEM_ID], kind="stable")
    n_cold = int(round(fraction * len(first)))
    return first[ITEM_ID].to_numpy()[len(first) - n_cold :]


def divide_cold_items(cold: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(cold_valid items, cold_test items) out of `cold` (ordered oldest first, as `cold_items` gives).

    The older `fraction` of the cold items (rounded) validate, the newest test: settings are
    chosen on items that appeared before the ones they are judged on, as in production. With at
    least two cold items and 0 < fraction < 1, each side gets at least one.
    """
    n = len(cold)
    if fraction <= 0 or n == 0:
        return cold[:0], cold
    n_valid = int(round(fraction * n))
    if n >= 2 and fraction < 1:
        n_valid = min(max(n_valid, 1), n - 1)
    return cold[:n_valid], cold[n_valid:]


def _assign_per_user(
    df: pd.DataFrame, order: np.ndarray, ratios: tuple[float, float, float], min_user: int
) -> np.ndarray:
    """Part index (0 train, 1 valid, 2 test) for each row of df, rows taken per user in `order`."""
    d = df.iloc[order]
    users = d[USER_ID].to_numpy()
    # position of each row within its user's ordered rows, and the user's row count
    codes, _ = pd.factorize(users)
    counts = np.bincount(codes)
    # rows of a user are contiguous in `order` (it sorts by user first)
    change = np.r_[True, codes[1:] != codes[:-1]]
    starts = np.empty(len(counts), dtype=np.int64)
    starts[codes[change]] = np.flatnonzero(change)
    pos = np.arange(len(d)) - starts[codes]
    table = np.array([ratio_counts(int(n), ratios) if n >= min_user else (int(n), 0, 0) for n in counts])
    n_train = table[codes, 0]
    n_valid = table[codes, 1]
    part_sorted = np.where(pos < n_train, 0, np.where(pos < n_train + n_valid, 1, 2))
    part = np.empty(len(d), dtype=np.int8)
    part[order] = part_sorted
    return part


def split_interactions(interactions: pd.DataFrame, params: SplitParams) -> SplitFrames:
    """Split a validated interaction log.

    Cold items are removed first (all their rows go to `cold_test`), then the rest is split by
    `params.kind`. Nothing else is filtered: models fall back to popularity for users they never
    saw in training (possible with `global_time`).
    """
    df = _normalise(interactions)
    if df.empty:
        raise DataError("no interactions to split (is the validated interactions table empty?)")
    cold = cold_items(df, params.cold_item_fraction)
    is_cold = df[ITEM_ID].isin(set(cold)).to_numpy()
    cold_valid_ids, _ = divide_cold_items(cold, params.cold_valid_fraction)
    in_cold_valid = df[ITEM_ID].isin(set(cold_valid_ids)).to_numpy()
    cold_valid_df = df[is_cold & in_cold_valid]
    cold_df = df[is_cold & ~in_cold_valid]
    warm = df[~is_cold].reset_index(drop=True)
    if warm.empty:
        raise DataError(f"cold_item_fraction={params.cold_item_fraction} leaves no interactions for training")
    ratios = params.ratios

    if params.kind == "temporal":
        order = np.lexsort((warm[SOURCE_ROW].to_numpy(), warm[TIMESTAMP].to_numpy(), warm[USER_ID].to_numpy()))
        part = _assign_per_user(warm, order, ratios, params.min_user_interactions)
    elif params.kind == "random":
        rng = np.random.default_rng(params.seed)
        noise = rng.permutation(len(warm))
        order = np.lexsort((noise, warm[USER_ID].to_numpy()))
        part = _assign_per_user(warm, order, ratios, params.min_user_interactions)
    elif params.kind == "global_time":
        order = np.lexsort((warm[SOURCE_ROW].to_numpy(), warm[TIMESTAMP].to_numpy()))
        n_train, n_valid, _ = ratio_counts(len(warm), ratios)
        part = np.empty(len(warm), dtype=np.int8)
        part[order] = np.repeat(np.array([0, 1, 2], dtype=np.int8), [n_train, n_valid, len(warm) - n_train - n_valid])
    else:  # pragma: no cover - SplitParams restricts the values
        raise DataError(f"unknown split kind {params.kind!r}")

    def frame(rows: pd.DataFrame) -> pd.DataFrame:
        rows = rows.sort_values([USER_ID, TIMESTAMP, SOURCE_ROW], kind="stable")
        return rows[SPLIT_COLUMNS].reset_index(drop=True)

    return SplitFrames(
        train=frame(warm[part == 0]),
        valid=frame(warm[part == 1]),
        test=frame(warm[part == 2]),
        cold_test=frame(cold_df),
        cold_valid=frame(cold_valid_df),
    )


def _tsv_bytes(df: pd.DataFrame) -> bytes:
    return df[SPLIT_COLUMNS].to_csv(sep="\t", index=False, lineterminator="\n").encode("utf-8")


def split_hash(frames: SplitFrames) -> str:
    """sha256 over the TSV files' bytes, in part order: equal hash, identical split.

    An empty cold_valid is left out, so a split without one keeps the hash it had before
    cold_valid existed (published figures name those hashes).
    """
    h = hashlib.sha256()
    for part, df in frames.parts().items():
        if part == "cold_valid" and df.empty:
            continue
        h.update(part.encode())
        h.update(_tsv_bytes(df))
    return h.hexdigest()


def warm_hash(frames: SplitFrames) -> str:
    """sha256 over train, valid and test only: equal warm hash, identical warm protocol.

    Two splits that differ only in how the cold items are divided (cold_valid vs cold_test)
    have equal warm hashes, so their warm figures compare (benchmarks/multimodal.py uses it).
    """
    h = hashlib.sha256()
    for part in ("train", "valid", "test"):
        h.update(part.encode())
        h.update(_tsv_bytes(getattr(frames, part)))
    return h.hexdigest()


def write_split(frames: SplitFrames, paths: DatasetPaths, kind: str, params: SplitParams) -> str:
    """Write `data/<name>/splits/<kind>/{train,valid,test,cold_valid,cold_test}.tsv` + split.json, atomically."""
    digest = split_hash(frames)
    with atomic_dir(paths.splits(kind)) as tmp:
        for part, df in frames.parts().items():
            (tmp / f"{part}.tsv").write_bytes(_tsv_bytes(df))
        write_json(
            tmp / "split.json",
            {
                "kind": kind,
                "hash": digest,
                "warm_hash": warm_hash(frames),
                "params": params.model_dump(mode="json"),
                "counts": {
                    part: {"rows": len(df), "users": int(df[USER_ID].nunique()), "items": int(df[ITEM_ID].nunique())}
                    for part, df in frames.parts().items()
                },
            },
        )
    return digest


def read_split_frames(paths: DatasetPaths, kind: str) -> tuple[SplitFrames, dict]:
    folder = paths.splits(kind)
    meta_file = folder / "split.json"
    if not meta_file.is_file():
        raise StageError(f"{folder}: no {kind} split found; run `mmrec stage split` first")
    meta = json.loads(meta_file.read_text())
    parts = {}
    for part in SPLIT_PARTS:
        f = folder / f"{part}.tsv"
        if part == "cold_valid" and not f.is_file():  # a split written before cold_valid existed
            parts[part] = pd.DataFrame(
                {USER_ID: pd.Series(dtype=str), ITEM_ID: pd.Series(dtype=str), TIMESTAMP: pd.Series(dtype="int64")}
            )
            continue
        if not f.is_file():
            raise StageError(f"{f}: split file missing; re-run `mmrec stage split`")
        parts[part] = pd.read_csv(f, sep="\t", dtype={USER_ID: str, ITEM_ID: str, TIMESTAMP: "int64"})
    return SplitFrames(**parts), meta


def load_split(paths: DatasetPaths, kind: str, items: pd.Series | np.ndarray | None = None) -> SplitData:
    """Read an exported split back into matrices over one index (items: the whole catalogue)."""
    frames, meta = read_split_frames(paths, kind)
    return split_data_from_frames(
        frames.train,
        frames.valid,
        frames.test,
        frames.cold_test,
        items=items,
        kind=kind,
        split_hash=meta["hash"],
        cold_valid=frames.cold_valid,
    )


def read_split_hash(folder: Path) -> str:
    return json.loads((folder / "split.json").read_text())["hash"]
