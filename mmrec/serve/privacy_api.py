"""`DELETE /users/{id}`: the API side of `mmrec forget` (mmrec.privacy.forget).

The route erases the user from every store of the served workspace, appends the audit record and
reloads the serving state at once (force), so this process stops answering for the user before
the response is sent; other workers see the forget list change and reload at their next poll
(`StateHolder` compares the source's `stamp()`). Meanwhile whatever they write of the user to the
event store (buffered impressions, late events) is dropped there by the user's tombstone
(mmrec/events/store.py), so no worker needs telling.

Status: 200 when everything was erased (also for a user that was already forgotten or never
existed: the forget is idempotent, and a client retrying after a timeout must not get an error;
`known` says whether anything held the user); 503 when a store failed (the body names it; the
same request again finishes the job). The API key is checked by GuardMiddleware like every other
non-public route, so a key, when one is set, is required.
"""

from typing import Annotated, Any

from mmrec.ids import check_id
from mmrec.serve.render import json_response
from mmrec.serve.settings import ID_MAX_LENGTH, ID_PATTERN
from mmrec.serve.state import StateHolder


def privacy_router(holder: StateHolder, events: Any = None) -> Any:
    """An APIRouter with `DELETE /users/{user_id}` over `holder`'s workspace."""
    from fastapi import APIRouter, Path
    from fastapi.responses import JSONResponse
    from pydantic import AfterValidator

    from mmrec.serve.schemas import Error, Forgotten

    router = APIRouter(tags=["users"])
    UserId = Annotated[
        str,
        Path(pattern=ID_PATTERN, max_length=ID_MAX_LENGTH, description="a user id, percent-encoded"),
        AfterValidator(check_id),
    ]

    @router.delete(
        "/users/{user_id:id}",
        response_model=Forgotten,
        responses={
            503: {"model": Error, "description": "a store could not be erased; retry"},
            501: {"model": Error, "description": "this server has no workspace to erase in"},
        },
    )
    def forget(user_id: UserId) -> JSONResponse:
        """Forget the user: every store the platform writes, then the served state (idempotent).

        Raw data is not modified; the dataset's forget list (pseudonyms) makes ingest drop the
        user from then on. The audit record (pseudonym, time, counts per store) is appended to
        privacy/<dataset>/audit.jsonl. `mmrec forget` does the same and also scans every file
        for leftovers (seconds), which this route skips to answer fast.
        """
        from mmrec.privacy.forget import forget_user

        ctx = getattr(holder.source, "ctx", None)
        if ctx is None:
            return JSONResponse(
                {"error": "not_implemented", "detail": "this server serves no workspace: run `mmrec forget`"},
                status_code=501,
            )
        if events is not None:  # this worker's buffered impressions go to the store first, then are erased with it
            events.forget(user_id)
        result = forget_user(ctx, user_id, scan=False)
        reload = holder.reload(force=True)
        body: dict[str, Any] = {
            "status": "forgotten" if result.complete else "incomplete",
            "pseudonym": result.pseudonym,
            "time": result.time,
            "known": result.known,
            "removed": result.removed,
            "failed": result.failed,
            "reloaded": reload.action,
        }
        if not result.complete:
            return JSONResponse(
                {
                    "error": "forget_incomplete",
                    "detail": f"stores not erased: {sorted(result.failed)}; send the same request again",
                    **body,
                },
                status_code=503,
            )
        return json_response(body)

    return router
