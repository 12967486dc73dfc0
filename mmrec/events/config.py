"""The `events:` section of params.yaml: the feedback loop's tunables."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: the strategies the bandit chooses among (mmrec/events/strategies.py)
STRATEGIES = ("nightly", "realtime", "popularity", "content")


class EventsParams(BaseModel):
    """How events are stored, folded into recommendations and rewarded.

    Attributes:
        store: where the event log lives: `auto` (the online store's kind: a Redis stream in the
            redis profile, a sqlite WAL table in the embedded one), `sqlite` or `redis`.
        history_length: most recent events kept per user in the online store (older ones only in
            the log): enough for a session's fold-in, bounded so a bot cannot grow a key forever.
        recent_ttl_seconds: events received longer ago than this no longer count as recent (by
            then the nightly run has folded them into the model and its list).
        max_batch: most events one `POST /events` may carry.
        event_types: the `event` values accepted (the interactions contract's vocabulary).
        reward_events: events that count as a success for the impression that showed the item.
        attribution_impressions: a reward is credited to the newest of the user's last N
            impressions that showed the item (older impressions are not credited).
        realtime_weight: share of the real-time fold-in in the `realtime` blend (0: nightly only,
            1: fold-in only); reciprocal-rank fusion, so the lists' score scales do not matter.
        rrf_k: the reciprocal-rank fusion constant (larger: flatter rank weights).
        strategies: the arms of the bandit.
        segments: history-length cut points of the user segments (`[1, 5, 20]`: 0, 1-4, 5-19, 20+
            events known for the user, training history and recent events together).
        prior_alpha/prior_beta: the Beta prior of every arm.
        seed: seed of the bandit's sampler (a fixed seed per process keeps tests reproducible).
    """

    model_config = ConfigDict(extra="forbid")

    store: str = Field("auto", pattern=r"^(auto|sqlite|redis)$")
    history_length: int = Field(50, ge=1, le=10_000)
    recent_ttl_seconds: int = Field(86_400, ge=1)
    max_batch: int = Field(500, ge=1, le=100_000)
    event_types: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase", "rating", "interaction")
    reward_events: tuple[str, ...] = ("click", "add_to_cart", "purchase", "view", "rating", "interaction")
    attribution_impressions: int = Field(10, ge=1, le=1000)
    realtime_weight: float = Field(0.5, ge=0.0, le=1.0)
    rrf_k: float = Field(10.0, gt=0.0)
    strategies: tuple[str, ...] = STRATEGIES
    segments: tuple[int, ...] = (1, 5, 20)
    prior_alpha: float = Field(1.0, gt=0.0)
    prior_beta: float = Field(1.0, gt=0.0)
    seed: int | None = None

    @model_validator(mode="after")
    def _check(self) -> EventsParams:
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown or not self.strategies:
            raise ValueError(f"events.strategies: unknown {unknown} (choose among {list(STRATEGIES)})")
        if list(self.segments) != sorted(set(self.segments)) or any(s < 1 for s in self.segments):
            raise ValueError(f"events.segments {list(self.segments)}: positive, strictly increasing cut points")
        stray = [e for e in self.reward_events if e not in self.event_types]
        if stray:
            raise ValueError(f"events.reward_events {stray} are not in events.event_types")
        return self


def events_params(params: object) -> EventsParams:
    """The `events` section of a `Params` (defaults when it has none)."""
    section = getattr(params, "events", None)
    if isinstance(section, EventsParams):
        return section
    if isinstance(section, BaseModel):
        return EventsParams.model_validate(section.model_dump())
    return EventsParams.model_validate(section or {})
