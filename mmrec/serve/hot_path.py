"""The user-recommendations route without FastAPI's per-request parameter machinery.

`GET /users/{user_id}/recommendations` is the API's hot endpoint (every page view of a known
user). FastAPI spends most of such a request solving its dependencies and validating the path
and query parameters through pydantic (benchmarks/serving.py, docs/scaling.md). This module
puts a plain Starlette route for the same path in front of the FastAPI one; it answers only
requests it can prove valid with the same rules, cheaply:

- the user id passes the shared id rule (`mmrec.ids.id_problem`, and the route's pattern and
  length), `k` is absent or the only query parameter and a plain decimal in [1, MAX_K];
- a model is loaded;
- the method is GET.

Everything else (a bad id, a bad or extra `k`, HEAD, no model yet) is handed to the FastAPI
route itself, so every error body, status and header is produced by the one implementation it
always came from. The answer is the same call (`service.user_recommendations`) rendered by the
same `json_response`; exceptions it raises reach the app's exception handlers unchanged; auth,
guards and the access log are middleware and run for both. The OpenAPI spec lists only
FastAPI's routes, so it is unchanged.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from mmrec.ids import ID_MAX_LENGTH, ID_PATTERN, id_problem
from mmrec.serve import service
from mmrec.serve.render import json_response

if TYPE_CHECKING:
    from mmrec.serve.settings import ServeSettings
    from mmrec.serve.state import StateHolder

PATH = "/users/{user_id:id}/recommendations"
_ID = re.compile(ID_PATTERN)
_K = re.compile(rb"k=([1-9][0-9]{0,2})")


def fast_k(query: bytes, default: int, max_k: int) -> int | None:
    """`k` from a query string when it is trivially valid (absent, or `k=<1..max_k>` alone), else None."""
    if not query:
        return default
    m = _K.fullmatch(query)
    if m is None:
        return None
    k = int(m.group(1))
    return k if k <= max_k else None


def fast_user_id(value: str) -> bool:
    """Whether the FastAPI route would accept `value` as its user id (a subset check: never looser)."""
    return len(value) <= ID_MAX_LENGTH and _ID.fullmatch(value) is not None and id_problem(value) is None


class FastRecommendations:
    """The ASGI app of the fast route (a class, so Starlette does not wrap it as a request handler)."""

    def __init__(self, slow: Any, holder: StateHolder, settings: ServeSettings, max_k: int, events: Any = None) -> None:
        self.slow, self.holder, self.settings, self.max_k = slow, holder, settings, max_k
        self.events = events  # the feedback loop's runtime (mmrec/serve/realtime.py), when enabled

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        user_id = scope["path_params"]["user_id"]
        state = self.holder.state
        k = fast_k(scope.get("query_string", b""), self.settings.default_k, self.max_k)
        if scope["method"] != "GET" or state is None or k is None or not fast_user_id(user_id):
            # not provably valid: the FastAPI route answers (its validation, errors and 405s)
            _, child = self.slow.matches(scope)
            await self.slow.handle({**scope, **child}, receive, send)
            return
        if self.events is not None:  # the same body as the FastAPI route: real-time blend, impressions logged
            body = self.events.recommendations(state, user_id, k)
        else:
            body = service.user_recommendations(state, user_id, k)
        await json_response(body)(scope, receive, send)


def install(app: Any, holder: StateHolder, settings: ServeSettings, max_k: int, events: Any = None) -> None:
    """Put the fast route in front of the FastAPI route for `PATH` (registered before this call).

    `events` is the app's `EventsRuntime` (or None): the fast route answers through it exactly as
    the FastAPI route does, so users with recent events get the real-time blend on both.
    """
    from starlette.routing import Route

    routes = app.router.routes
    at, slow = next((i, r) for i, r in enumerate(routes) if getattr(r, "path", None) == PATH)
    routes.insert(
        at,
        Route(
            PATH,
            FastRecommendations(slow, holder, settings, max_k, events),
            methods=["GET", "HEAD"],
            include_in_schema=False,
        ),
    )
