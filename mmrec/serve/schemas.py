"""Request and response bodies of the API (they make the OpenAPI spec and validate input)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from mmrec.ids import check_id
from mmrec.serve.settings import ID_MAX_LENGTH, ID_PATTERN, MAX_K, MAX_SESSION_ITEMS

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN, max_length=ID_MAX_LENGTH), AfterValidator(check_id)]
Modality = Literal["fused", "text", "image", "audio", "video"]
MediaModality = Literal["image", "audio", "video"]


class Error(BaseModel):
    """Every 4xx/5xx body: a stable machine-readable `error` and a human `detail`."""

    error: str = Field(
        description="not_found, invalid_request, unauthorized, too_large, unavailable, not_ready, "
        "service_unavailable or internal"
    )
    detail: Any = Field(description="what is wrong and how to fix it")
    kind: str | None = Field(None, description="for not_found: user, item, modality or media")
    id: str | None = Field(None, description="for not_found: the id that was asked for")
    service: str | None = Field(None, description="for service_unavailable: the backend that is down (retry later)")


class Item(BaseModel):
    item_id: str
    title: str
    image_url: str | None = Field(None, description="path of the item's image on this API, when it has one")
    media: list[str] = Field(default_factory=list, description="modalities with a media file")


class RankedItem(Item):
    rank: int
    score: float


class SimilarItem(Item):
    rank: int
    similarity: float


class PartRankedItem(RankedItem):
    part: Literal["nightly", "realtime", "popularity", "content"] | None = Field(
        None, description="for users with recent events: which part placed the item (mmrec/events/strategies.py)"
    )
    realtime: bool | None = Field(None, description="for users with recent events: placed by the real-time fold-in")


class Recommendations(BaseModel):
    user_id: str
    source: Literal["precomputed", "model", "history", "fallback"] = Field(
        description="precomputed: nightly top-K from the online store; model: live scoring; history: a user unknown to "
        "the model scored from their interactions; fallback: a known user without interactions (popularity)"
    )
    version: str = Field(description="registry version of the model that produced them")
    items: list[PartRankedItem]
    strategy: Literal["nightly", "realtime", "popularity", "content"] | None = Field(
        None, description="the strategy that chose the list (the bandit's draw for users with recent events)"
    )
    segment: str | None = Field(None, description="the user segment the bandit learns for (by history length)")
    recent_item_ids: list[str] | None = Field(None, description="the recent events folded in, newest first (excluded)")
    realtime_item_ids: list[str] | None = Field(None, description="items placed by the real-time fold-in")
    impression_id: str | None = Field(None, description="id of the logged impression of this list")


class SessionRequest(BaseModel):
    """Recently seen items of an anonymous or new user, oldest first."""

    # strict: `"k": "5"` and `"k": true` are type errors (422), not silently coerced
    model_config = ConfigDict(extra="forbid", strict=True)

    item_ids: list[Id] = Field(min_length=1, max_length=MAX_SESSION_ITEMS, description="item ids seen in this session")
    k: int | None = Field(
        None, ge=1, le=MAX_K, description="how many recommendations (default: the server's default_k)"
    )


class SessionRecommendations(BaseModel):
    source: Literal["session"]
    version: str
    item_ids: list[str]
    ignored_item_ids: list[str] = Field(
        description="catalogue items the model was not trained on (not used for scoring)"
    )
    items: list[RankedItem]


class Similar(BaseModel):
    item_id: str
    modality: Modality
    version: str
    items: list[SimilarItem]


class History(BaseModel):
    user_id: str
    total: int
    items: list[Item]


class UserEntry(BaseModel):
    user_id: str
    interactions: int


class Users(BaseModel):
    total: int
    users: list[UserEntry]


class SupportingItem(BaseModel):
    """One of the user's past items behind the recommendation, with its title and image."""

    model_config = ConfigDict(extra="allow")

    item_id: str
    affinity: float | None = Field(None, description="how much this item supports the recommendation")


class Explanation(BaseModel):
    model_config = ConfigDict(extra="allow")

    user_id: str
    item_id: str
    score: float
    contributions: dict[str, float] = Field(description="the score split by source (collaborative, text, image, ...)")
    supporting_items: list[SupportingItem]
    version: str


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["ready", "not_ready"]
    version: str | None = None
    features: dict[str, bool] = {}  # optional features enabled on this server: events, search


class Reload(BaseModel):
    action: Literal["loaded", "unchanged", "failed"]
    version: str | None = None
    previous: str | None = None
    error: str | None = None
    seconds: float = 0.0


class Forgotten(BaseModel):
    """DELETE /users/{id}: what the forget removed (counts per store), never the raw id."""

    status: Literal["forgotten", "incomplete"]
    pseudonym: str
    time: str
    known: bool
    removed: dict[str, dict[str, int]]
    failed: dict[str, str] = {}
    reloaded: str
