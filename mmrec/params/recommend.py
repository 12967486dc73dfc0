"""The `recommend:` section of params.yaml (batch top-K generation) and the names its validators accept.

A leaf module: `mmrec.config` imports it, so it imports nothing above the constants, the errors
and the retrieval metric names (the strategies themselves live in `mmrec.recommend.strategies`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mmrec.constants import DEFAULT_K, MODALITIES
from mmrec.errors import ConfigError
from mmrec.retrieval import METRICS

STRATEGIES = ("model", "popularity", "content", "hybrid")
HYBRID_COMPONENTS = ("model", "popularity", "content")
NORMALISATIONS = ("rank", "minmax")


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown recommendation strategy {strategy!r}; expected one of {list(STRATEGIES)}")
    return strategy


def check_hybrid_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Validated hybrid weights: known components, >= 0, at least one > 0."""
    w = {str(k): float(v) for k, v in weights.items()}
    unknown = sorted(set(w) - set(HYBRID_COMPONENTS))
    if unknown:
        raise ConfigError(
            f"recommend.hybrid.weights: unknown component {unknown}; expected some of {list(HYBRID_COMPONENTS)}"
        )
    if any(v < 0 for v in w.values()) or not any(v > 0 for v in w.values()):
        raise ConfigError(f"recommend.hybrid.weights must be >= 0 with at least one > 0, got {w}")
    return w


class ContentParams(BaseModel):
    """`recommend.content`: the feature space of the `content` strategy (mmrec/recommend/strategies.py).

    Attributes:
        metric: cosine | dot | euclidean | pearson (mmrec/retrieval.py; euclidean = -distance).
        modalities: the modalities compared; empty = every modality whose features exist.
        weights: per-modality weight in the fused similarity (unnamed: 1).
        centre: mean-centre and L2-normalise each modality first (as content_knn does).
    """

    model_config = ConfigDict(extra="forbid")

    metric: str = "cosine"
    modalities: list[str] = Field(default_factory=list)
    weights: dict[str, float] = Field(default_factory=dict)
    centre: bool = True

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if v not in METRICS:
            raise ValueError(f"unknown similarity metric {v!r}; expected one of {list(METRICS)}")
        return v

    @field_validator("modalities")
    @classmethod
    def _modalities(cls, v: list[str]) -> list[str]:
        unknown = [m for m in v if m not in MODALITIES]
        if unknown:
            raise ValueError(f"unknown modality {unknown}; expected some of {list(MODALITIES)}")
        return v


class HybridParams(BaseModel):
    """`recommend.hybrid`: the blend of the `hybrid` strategy (mmrec/recommend/strategies.py).

    Attributes:
        weights: component -> weight, components among model, popularity, content.
        normalise: per-user `rank` (default: robust to the components' unrelated scales) or
            `minmax` normalisation before the weighted sum.
    """

    model_config = ConfigDict(extra="forbid")

    weights: dict[str, float] = Field(default_factory=lambda: {"model": 0.7, "content": 0.3})
    normalise: Literal["rank", "minmax"] = "rank"

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        try:
            return check_hybrid_weights(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


class RecommendParams(BaseModel):
    """The `recommend:` section of params.yaml (batch top-K generation).

    Attributes:
        k: recommendations per user.
        batch_size: users scored per chunk (at most). Memory is about batch_size x n_items x 4
            bytes: 1024 users x 50k items = 200 MB.
        max_chunk_mb: cap on one chunk's score matrix; for large catalogues the chunk shrinks
            below `batch_size` so memory stays bounded whatever the number of items.
        exclude_seen: mask every item the user already interacted with (all validated
            interactions, not only the training part: a user should not be re-shown what they
            already consumed).
        strategy: model (the champion's scores) | popularity | content | hybrid; see
            mmrec/recommend/strategies.py.
        threshold: drop recommendations scoring below this (a user then gets fewer than k);
            None keeps the top k whatever they score. On the strategy's own scale: content =
            the metric's similarity, hybrid = [0, 1].
        content, hybrid: settings of those strategies.
        exclude_items / exclude_items_file: item ids never recommended (file: one id per line
            or a table with an item_id column; relative to the workspace).
        candidates_file: recommend only among these item ids (same formats).
    """

    model_config = ConfigDict(extra="forbid")

    k: int = Field(DEFAULT_K, ge=1)
    batch_size: int = Field(1024, ge=1)
    max_chunk_mb: int = Field(512, ge=1)
    exclude_seen: bool = True
    strategy: str = "model"
    threshold: float | None = None
    content: ContentParams = Field(default_factory=ContentParams)
    hybrid: HybridParams = Field(default_factory=HybridParams)
    exclude_items: list[str] = Field(default_factory=list)
    exclude_items_file: str | None = None
    candidates_file: str | None = None

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v: str) -> str:
        if v not in STRATEGIES:
            raise ValueError(f"unknown recommendation strategy {v!r}; expected one of {list(STRATEGIES)}")
        return v

    def chunk_users(self, n_items: int) -> int:
        """Users per chunk for a catalogue of `n_items`: `batch_size`, shrunk to fit `max_chunk_mb`."""
        return max(1, min(self.batch_size, (self.max_chunk_mb << 20) // max(4 * n_items, 1)))


def recommend_params(params: Any) -> RecommendParams:
    """The `recommend` section of a `Params`, or the defaults when params.yaml has none."""
    section = getattr(params, "recommend", None)
    if section is None:
        return RecommendParams.model_validate({})
    if isinstance(section, RecommendParams):
        return section
    if isinstance(section, BaseModel):
        section = section.model_dump()
    return parse_recommend_params(section)


def parse_recommend_params(section: dict[str, Any]) -> RecommendParams:
    """A `recommend:` mapping validated; bad keys or values are a ConfigError naming them."""
    try:
        return RecommendParams.model_validate(section)
    except ValidationError as exc:
        problems = "; ".join(f"recommend.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid recommend params: {problems}") from exc
