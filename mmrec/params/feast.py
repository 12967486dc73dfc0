"""The `features:` section of params.yaml: where the Feast repository and its stores are.

A leaf module (`mmrec.config` imports it): pydantic only.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class FeaturesParams(BaseModel):
    """The `features:` section of params.yaml (Feast).

    Attributes:
        repo: the Feast repository; relative paths are relative to the workspace, and when
            absent there, to this source checkout. None: `<workspace>/feature_repo/` when it
            exists, else the checkout's.
        profile: `sqlite` (embedded default, `feature_store.yaml`) or `redis` (production,
            `feature_store.redis.yaml`); any NAME with a `feature_store.NAME.yaml` works.
        redis_url: the Redis online store for the redis profile (`redis://host:port/db`);
            None keeps the connection string of the profile's yaml.
        project: Feast project; None: `mmrec_<dataset>`.
        stats_from: interactions the statistics summarise: `train` (the split's training part,
            what the models saw) or `all` (every validated interaction).
        stats_window_days: window of the `interactions_window` statistic.
        materialize: run the materialize step after training and after each nightly run.
        point_in_time_training: the train stage also builds the training interactions joined
            with item/user statistics as of each interaction (`get_historical_features`) and
            writes them to `data/<name>/feast/training_set.parquet`.
    """

    model_config = ConfigDict(extra="forbid")

    repo: str | None = None
    profile: str = Field("sqlite", pattern=r"^[a-z][a-z0-9_]*$")
    redis_url: str | None = "redis://127.0.0.1:6379/0"
    project: str | None = None
    stats_from: Literal["train", "all"] = "train"
    stats_window_days: int = Field(30, ge=1)
    materialize: bool = True
    point_in_time_training: bool = False


def features_params(params: Any) -> FeaturesParams:
    """The `features` section of a `Params`, or the defaults when params.yaml has none."""
    section = getattr(params, "features", None)
    if section is None:
        return FeaturesParams.model_validate({})
    if isinstance(section, FeaturesParams):
        return section
    if isinstance(section, BaseModel):
        section = section.model_dump()
    return FeaturesParams.model_validate(section)
