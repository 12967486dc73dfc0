"""The "models" page and its API: registry, champion metrics, report figures, last nightly run.

- `GET /models`: the page (static/models.html + models.js; open like `/`, it holds no data),
- `GET /models/overview`: its data as JSON (mmrec/serve/overview.py; API key when one is set),
- `GET /models/figures/{name}`: one PNG of `reports/<name>/figures/` (API key when one is set;
  the page's `<img>` requests carry the session cookie).

A server built without an overview (e.g. over in-memory test states) still answers: the JSON
says there is no registry or report configured, and the page shows that message.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at registration.
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from mmrec.errors import NotFoundError
from mmrec.serve.media import MEDIA_CSP
from mmrec.serve.overview import ModelsOverview

STATIC = Path(__file__).resolve().parent / "static"
#: the page's path (open, like `/`: see mmrec/serve/security.py)
PAGE = "/models"


def unconfigured() -> dict[str, Any]:
    """The overview of a server that has no dataset workspace behind it."""
    message = "this server was started without a dataset workspace (no MLflow registry or reports to show)"
    return {
        "dataset": None,
        "registry": {"status": "missing", "message": message},
        "report": {"status": "missing", "message": message},
        "figures": [],
        "nightly": {"status": "missing", "message": message},
        "cache_ttl_s": 0,
    }


def _scrub_messages(block: Any, scrub: Callable[[str], str]) -> Any:
    """`block` with every `message` string scrubbed (no paths or credentials reach the page)."""
    if isinstance(block, dict):
        return {
            k: scrub(v) if k == "message" and isinstance(v, str) else _scrub_messages(v, scrub)
            for k, v in block.items()
        }
    return block


def models_router(overview: ModelsOverview | None, scrub: Callable[[str], str]) -> Any:
    """The routes of the models page over `overview` (None: nothing configured).

    Args:
        scrub: makes an error message safe for a client (mmrec.serve.app.scrub).
    """
    from fastapi import APIRouter
    from fastapi import Path as PathParam
    from fastapi.responses import FileResponse, JSONResponse

    from mmrec.serve.schemas import Error

    router = APIRouter(tags=["models"])

    @router.get(PAGE, include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "models.html", headers={"cache-control": "no-cache"})

    @router.get(f"{PAGE}/overview")
    def models_overview() -> JSONResponse:
        """The registry's versions and aliases, the champion's metrics, the report's figures and the
        last nightly run (MLflow answers are cached for a few seconds; `registry.read_at` says when)."""
        body = overview.overview() if overview is not None else unconfigured()
        return JSONResponse(_scrub_messages(body, scrub), headers={"cache-control": "no-store"})

    FigureName = Annotated[str, PathParam(max_length=128, description="a PNG file name of reports/<name>/figures")]

    @router.get(
        f"{PAGE}/figures/{{name}}",
        response_class=FileResponse,
        responses={404: {"model": Error}, 200: {"content": {"image/png": {}}}},
    )
    def figure(name: FigureName) -> FileResponse:
        """One figure of the evaluation report (learning curves, ablation)."""
        if overview is None:
            raise NotFoundError("figure", name, "this server has no report folder")
        path, content_type = overview.figure(name)
        return FileResponse(
            path, media_type=content_type, headers={"cache-control": "no-cache", "content-security-policy": MEDIA_CSP}
        )

    return router
