"""The duplicate policy for identical interaction rows (`interactions.duplicates` in dataset.yaml).

In a real purchase log identical rows are data: the same customer bought two of the same article
at the same time (H&M: 9.9% of rows). Quarantining them as `duplicate_row` counted them toward
`validate.max_quarantine_fraction`, so a log with many repeats failed validation as bad data.
The policy is explicit instead, and applied before the row checks:

- `aggregate` (default): one row per group of identical rows, its `weight` the sum of the group's
  weights (each row weighing 1 when the log has no weight column), and `count` the group size;
- `drop`: one row per group, the repeats removed;
- `quarantine`: the strict reading (repeats are logging errors): the repeats are quarantined as
  `duplicate_row` and count toward `validate.max_quarantine_fraction`.

With `aggregate` and `drop` the repeats are reported as `deduplicated` (their own count in validation.json, never
part of `quarantined`), so every data line is accounted for: valid + quarantined + deduplicated
== rows.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import pandas as pd

from mmrec.constants import ROW_HASH, WEIGHT

log = logging.getLogger(__name__)

DuplicatePolicy = Literal["aggregate", "drop", "quarantine"]
#: column holding how many identical rows an aggregated row stands for
COUNT = "count"


def apply_duplicate_policy(frame: pd.DataFrame, policy: DuplicatePolicy) -> tuple[pd.DataFrame, int]:
    """Collapse groups of identical rows (same `row_hash`) into their first row.

    Args:
        frame: the interactions warehouse table (with `row_hash`).
        policy: `aggregate`, `drop` or `quarantine` (unchanged: the row checks quarantine them).

    Returns:
        (frame with one row per group, in the original order; number of rows removed).
    """
    if policy == "quarantine" or ROW_HASH not in frame.columns or frame.empty:
        return frame, 0
    hashes = frame[ROW_HASH]
    repeated = hashes.duplicated(keep="first").to_numpy()
    n = int(repeated.sum())
    if n == 0:
        return frame, 0
    kept = frame.loc[~repeated].copy()
    if policy == "aggregate":
        sizes = hashes.map(hashes.value_counts()).loc[~repeated].to_numpy(dtype=np.int64)
        kept[COUNT] = sizes
        if WEIGHT in kept.columns:
            kept[WEIGHT] = kept[WEIGHT].astype("float64") * sizes  # identical rows: identical weights
        else:
            kept[WEIGHT] = sizes.astype("float64")
    log.info(
        "interactions: %d identical rows %s (interactions.duplicates: %s)",
        n,
        "aggregated into their first occurrence's count/weight" if policy == "aggregate" else "dropped",
        policy,
    )
    return kept.reset_index(drop=True), n
