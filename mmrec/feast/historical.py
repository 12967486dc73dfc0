"""Historical (point-in-time) reads: training sets joined with the features as of each interaction's time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from mmrec.constants import ITEM_ID, TIMESTAMP, USER_ID
from mmrec.data.splits import read_split_frames
from mmrec.errors import DataError
from mmrec.feast import tables as ft
from mmrec.feast.export import export_tables
from mmrec.feast.store import apply, feature_store
from mmrec.params.feast import features_params

if TYPE_CHECKING:
    from mmrec.context import StageContext


def historical_features(
    ctx: StageContext, entity_df: pd.DataFrame, features: Sequence[str] | str, full_feature_names: bool = True
) -> pd.DataFrame:
    """`get_historical_features`: each row of `entity_df` joined with feature values as of its time.

    Args:
        entity_df: `user_id` and/or `item_id` plus `event_timestamp` (UTC).
        features: `view:feature` references, or a feature service name.
    """
    fp = features_params(ctx.params)
    if "event_timestamp" not in entity_df.columns:
        raise DataError(f"entity_df needs an 'event_timestamp' column; got {list(entity_df.columns)}")
    store = feature_store(ctx.paths, fp)
    refs: Any = store.get_feature_service(features) if isinstance(features, str) else list(features)
    return store.get_historical_features(
        entity_df=entity_df, features=refs, full_feature_names=full_feature_names
    ).to_df()


def point_in_time_training_set(ctx: StageContext) -> pd.DataFrame:
    """The training interactions, each joined with item and user statistics as of its timestamp.

    A statistic stamped at time s aggregates only interactions before s, and Feast only joins
    rows with s <= the interaction's time, so no row sees its own or any later interaction.
    Exports the statistics and applies the repo first (the offline store needs nothing else).

    Feast is asked once per distinct (key, timestamp) and the answers are merged back onto the
    interactions: the Dask/file offline store collapses entity rows sharing a key and timestamp
    (feast-dev/feast#6787) and drops an entity row whose key only has rows after its time, so
    the result is aligned here instead. Before a key's first snapshot it had no interactions:
    counts are 0 and the day columns NaN.
    """
    export_tables(ctx, parts=("stats",))
    apply(ctx)
    frames, _ = read_split_frames(ctx.paths, ctx.params.split.kind)
    train = frames.train
    out = pd.DataFrame(
        {
            USER_ID: train[USER_ID].astype(str).to_numpy(),
            ITEM_ID: train[ITEM_ID].astype(str).to_numpy(),
            "event_timestamp": pd.to_datetime(train[TIMESTAMP].to_numpy(), unit="s", utc=True),
        }
    )
    for view, key in (("item_stats", ITEM_ID), ("user_stats", USER_ID)):
        entity_df = out[[key, "event_timestamp"]].drop_duplicates().reset_index(drop=True)
        got = historical_features(ctx, entity_df, [f"{view}:{f}" for f in ft.STAT_FIELDS])
        cols = [f"{view}__{f}" for f in ft.STAT_FIELDS]
        got = got[[key, "event_timestamp", *cols]].drop_duplicates([key, "event_timestamp"])
        got["event_timestamp"] = pd.to_datetime(got["event_timestamp"], utc=True)
        out = out.merge(got, on=[key, "event_timestamp"], how="left")
        for c in cols[:2]:
            out[c] = out[c].fillna(0).astype("int64")
    return out.sort_values(["event_timestamp", USER_ID, ITEM_ID], kind="stable").reset_index(drop=True)
