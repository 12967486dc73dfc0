"""Feature views: what is served per user and per item.

- item content embeddings, one view per modality plus the fused one (`item_<m>_embedding`);
- the champion model's item and user factors (`item_model_embedding`, `user_embedding`);
- item and user statistics (`item_stats`, `user_stats`): daily snapshots, so training sets can
  be joined point-in-time (`get_historical_features`) without seeing the future;
- the nightly top-K per user (`user_recommendations`: item ids and scores, best first).

`ttl=timedelta(0)`: no expiry. A snapshot stays the best known value until the next one (items
without activity keep their last statistics), and embeddings never go stale by age alone.
"""

from datetime import timedelta

from data_sources import (
    item_embedding_sources,
    item_fused_embedding_source,
    item_model_embedding_source,
    item_stats_source,
    user_embedding_source,
    user_recommendations_source,
    user_stats_source,
)
from entities import item, user
from feast import FeatureView, Field
from feast.types import Array, Float32, Int64, String

NO_TTL = timedelta(0)

ITEM_ID = Field(name="item_id", dtype=String)
USER_ID = Field(name="user_id", dtype=String)


def _embedding_view(name: str, source, extra: list[Field], description: str) -> FeatureView:
    return FeatureView(
        name=name,
        entities=[item],
        ttl=NO_TTL,
        schema=[ITEM_ID, Field(name="embedding", dtype=Array(Float32), description="float32 vector"), *extra],
        source=source,
        online=True,
        description=description,
        tags={"kind": "item_embedding"},
    )


item_text_embedding = _embedding_view(
    "item_text_embedding",
    item_embedding_sources["text"],
    [Field(name="encoder", dtype=String)],
    "Item text vectors (title, description, ... through the text encoder).",
)
item_image_embedding = _embedding_view(
    "item_image_embedding",
    item_embedding_sources["image"],
    [Field(name="encoder", dtype=String)],
    "Item image vectors.",
)
item_audio_embedding = _embedding_view(
    "item_audio_embedding",
    item_embedding_sources["audio"],
    [Field(name="encoder", dtype=String)],
    "Item audio vectors.",
)
item_video_embedding = _embedding_view(
    "item_video_embedding",
    item_embedding_sources["video"],
    [Field(name="encoder", dtype=String)],
    "Item video vectors (sampled frames through an image encoder, pooled over time).",
)
item_fused_embedding = _embedding_view(
    "item_fused_embedding",
    item_fused_embedding_source,
    [Field(name="modalities", dtype=Array(String), description="modalities present for this item")],
    "All modalities in one unit vector: cosine = mean of the per-modality cosines, up to normalisation.",
)
item_model_embedding = _embedding_view(
    "item_model_embedding",
    item_model_embedding_source,
    [Field(name="model", dtype=String), Field(name="model_version", dtype=String)],
    "The champion model's item factors (factor models only).",
)

user_embedding = FeatureView(
    name="user_embedding",
    entities=[user],
    ttl=NO_TTL,
    schema=[
        USER_ID,
        Field(name="embedding", dtype=Array(Float32), description="float32 vector"),
        Field(name="model", dtype=String),
        Field(name="model_version", dtype=String),
    ],
    source=user_embedding_source,
    online=True,
    description="The champion model's user factors (factor models only).",
    tags={"kind": "user_embedding"},
)

_STATS = [
    Field(name="interactions", dtype=Int64, description="interactions before the snapshot time"),
    Field(
        name="interactions_window",
        dtype=Int64,
        description="interactions in the window (features.stats_window_days) before it",
    ),
    Field(name="days_since_first", dtype=Float32, description="age: days from the first interaction to the snapshot"),
    Field(name="days_since_last", dtype=Float32, description="recency: days from the last interaction to the snapshot"),
]

item_stats = FeatureView(
    name="item_stats",
    entities=[item],
    ttl=NO_TTL,
    schema=[ITEM_ID, *_STATS],
    source=item_stats_source,
    online=True,
    description="Item popularity and recency, as daily snapshots (point-in-time correct).",
    tags={"kind": "stats"},
)

user_stats = FeatureView(
    name="user_stats",
    entities=[user],
    ttl=NO_TTL,
    schema=[USER_ID, *_STATS],
    source=user_stats_source,
    online=True,
    description="User activity and recency, as daily snapshots (point-in-time correct).",
    tags={"kind": "stats"},
)

user_recommendations = FeatureView(
    name="user_recommendations",
    entities=[user],
    ttl=NO_TTL,
    schema=[
        USER_ID,
        Field(name="item_ids", dtype=Array(String), description="top-K item ids, best first"),
        Field(name="scores", dtype=Array(Float32), description="their scores"),
        Field(name="model", dtype=String),
        Field(name="model_version", dtype=String),
    ],
    source=user_recommendations_source,
    online=True,
    description="The nightly top-K of the champion model per user.",
    tags={"kind": "recommendations"},
)
