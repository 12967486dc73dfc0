"""HTTP routes of the feedback loop: `POST /events`, a user's recent events, the bandit's state.

Mounted by `create_app` when an `EventsRuntime` is given (`mmrec serve` always gives one). The
API key, body-size limit and access log of the app apply (GuardMiddleware sits before routing).
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at registration.
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from mmrec.serve.realtime import EventsRuntime
from mmrec.serve.schemas import Id, Item
from mmrec.serve.state import ServingState

#: the most events one request may carry (the contract; `events.max_batch` may lower it)
MAX_EVENT_BATCH = 1000


class EventIn(BaseModel):
    """One interaction, as the interactions contract has it, plus a client-chosen unique id."""

    model_config = ConfigDict(extra="forbid", strict=True)

    event_id: Id = Field(description="unique per event: a retried post of the same id is stored once")
    user_id: Id
    item_id: Id = Field(description="an item of the served catalogue")
    event: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="view, click, add_to_cart, purchase, rating or interaction (events.event_types)"
    )
    timestamp: str | float | int | None = Field(
        None, description="ISO-8601 (UTC when no offset) or seconds since the epoch; default: the time received"
    )


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENT_BATCH)


class EventsAccepted(BaseModel):
    accepted: int = Field(description="events stored now")
    duplicates: int = Field(description="events whose event_id was already stored (ignored: posts are idempotent)")
    rewarded: int = Field(description="events credited to an earlier impression of the item (bandit reward)")
    forgotten: int = Field(
        0,
        description="events of users forgotten (DELETE /users/{id}, `mmrec forget`): not stored, for good; "
        "a person who comes back gets a new user id",
    )


class RecentEvent(Item):
    event_id: str
    event: str
    timestamp: float


class RecentEvents(BaseModel):
    user_id: str
    items: list[RecentEvent] = Field(description="the user's recent events, newest first, with the items' records")


def router(runtime: EventsRuntime, current: Callable[[], ServingState], user_id_type: Any) -> Any:
    """The routes over `runtime`; `current()` gives the serving state (503 while none is loaded)."""
    from fastapi import APIRouter, Query
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    api = APIRouter(tags=["events"])
    params = runtime.params

    @api.post(
        "/events",
        status_code=202,
        response_model=EventsAccepted,
        responses={422: {"description": "a row is invalid (the body names its index and field)"}},
    )
    async def post_events(body: EventBatch) -> JSONResponse:
        """Append interactions to the event log and the users' recent histories.

        The batch is refused as a whole (422, every bad row and field listed) when any row is
        invalid: unknown item, event type outside `events.event_types`, timestamp unparsable or
        outside the validation range, an id repeated with different content. Idempotent by
        `event_id`. The user's next recommendations reflect the events.
        """
        from mmrec.events.schema import check_events
        from mmrec.validation.suites import timestamp_bounds

        state = current()
        if len(body.events) > params.max_batch:
            return JSONResponse(
                {
                    "error": "invalid_request",
                    "detail": [
                        {
                            "loc": ["body", "events"],
                            "msg": f"{len(body.events)} events in one post; at most {params.max_batch} "
                            "(events.max_batch): split the batch",
                            "type": "too_long",
                        }
                    ],
                },
                status_code=422,
            )
        rows = [e.model_dump() for e in body.events]
        lo, hi = timestamp_bounds(runtime.validate)  # the warehouse validation's range, now
        events, problems = check_events(
            rows,
            lambda i: i in state.catalog or i in state.item_pos,
            params.event_types,
            (lo.timestamp(), hi.timestamp()),
        )
        if problems:
            return JSONResponse(
                {"error": "invalid_request", "detail": [p.to_dict() for p in problems[:50]]}, status_code=422
            )
        # the store write may wait for another worker's lock: off the event loop
        result = await run_in_threadpool(runtime.record, events)
        return JSONResponse(
            {
                "accepted": result.accepted,
                "duplicates": result.duplicates,
                "rewarded": result.rewarded,
                "forgotten": result.forgotten,
            },
            status_code=202,
        )

    @api.get("/users/{user_id:id}/events", response_model=RecentEvents)
    async def recent_events(user_id: user_id_type, limit: Annotated[int, Query(ge=1, le=500)] = 20) -> JSONResponse:
        """The user's recent events (the page's "you just viewed" strip), newest first."""
        state = current()
        recent = runtime.store.recent(user_id, limit)
        described = {d["item_id"]: d for d in state.catalog.describe(list(dict.fromkeys(e.item_id for e in recent)))}
        items = [
            {**described[e.item_id], "event_id": e.event_id, "event": e.event, "timestamp": e.timestamp} for e in recent
        ]
        return JSONResponse({"user_id": user_id, "items": items})

    @api.get("/events/bandit", tags=["operations"])
    async def bandit() -> JSONResponse:
        """The bandit's state: per user segment and strategy, impressions, rewards and Beta posterior."""
        return JSONResponse({"strategies": list(params.strategies), "segments": runtime.posteriors()})

    return api
