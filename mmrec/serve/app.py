"""The FastAPI application: routes, error bodies, the API key and the web page.

`create_app(holder, settings)` wires a `StateHolder` (which owns the model, index, catalogue
and online-store reader) to HTTP. Route handlers are thin: they validate input, take the current
state once and call mmrec/serve/service.py.

Threading: the hot, sub-millisecond handlers (precomputed recommendations, similar items, item
and user look-ups, probes, dependencies) are `async def` and run on the event loop: their work
is short and CPU-bound, so a hop to the thread pool would only add latency (and with the GIL,
no parallelism). Handlers that score the model over the catalogue (sessions, explanations) run
on the loop too while the model has at most `ServeSettings.inline_max_items` items (a scoring
pass is then a fraction of a millisecond, less than the hop to a thread and back, and 32 pool
threads contending for the GIL only stretch the tail) and in the thread pool above that, so a
large catalogue never stalls the loop. Reload is `def` (seconds of I/O).

Data routes answer pre-rendered JSON bytes (mmrec/serve/render.py): orjson, each item's record
serialised once per serving state; their `response_model` still documents the schema.

Error bodies are always `{"error": ..., "detail": ...}`; a 500 says only that something failed
and the request id to look for in the server log, never a traceback or a file path.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at registration,
# and they name classes imported inside create_app (fastapi stays a lazy import).
import logging
import re
from contextlib import asynccontextmanager
from pathlib import Path as FsPath
from typing import Annotated, Any

from mmrec.errors import MMRecError, ModelError, NotFoundError, ServiceUnavailable
from mmrec.ids import check_id
from mmrec.serve import hot_path, service
from mmrec.serve.guards import BrowserGuards
from mmrec.serve.media import MEDIA_CSP
from mmrec.serve.models_api import models_router
from mmrec.serve.overview import ModelsOverview
from mmrec.serve.paths import IdConvertor  # noqa: F401 - registers the `id` path convertor
from mmrec.serve.render import json_response
from mmrec.serve.schemas import (
    Error,
    Explanation,
    Health,
    History,
    Item,
    MediaModality,
    Modality,
    Ready,
    Recommendations,
    Reload,
    SessionRecommendations,
    SessionRequest,
    Similar,
    Users,
)
from mmrec.serve.security import API_KEY_COOKIE, API_KEY_HEADER, GuardMiddleware, is_open, session_token
from mmrec.serve.settings import ID_MAX_LENGTH, ID_PATTERN, MAX_K, ServeSettings
from mmrec.serve.state import ServingState, StateHolder

log = logging.getLogger(__name__)

STATIC = FsPath(__file__).resolve().parent / "static"
#: absolute paths (two or more segments) are cut out of any message that reaches a client
_PATH_RE = re.compile(r"(?:[A-Za-z]:)?(?:/[\w.+@-]+){2,}/?")
#: the user-info part of any URI (`postgresql://user:pass@`, `redis://:pass@`, `s3://KEY:SECRET@`)
_URI_CREDENTIALS_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s?#]*@")  # up to the last `@` of the authority
#: `password=...` style pairs (DSNs, query strings)
_SECRET_PAIR_RE = re.compile(r"(?i)\b(password|passwd|pwd|secret|token|api_key|access_key)=([^\s&;,'\"]+)")


def scrub(message: str) -> str:
    """A message safe to show a client: no credentials in URIs, no file-system paths, bounded length."""
    message = _URI_CREDENTIALS_RE.sub(r"\1***@", message)
    message = _SECRET_PAIR_RE.sub(r"\1=***", message)
    return _PATH_RE.sub("<path>", message)[:500]


def create_app(
    holder: StateHolder,
    settings: ServeSettings | None = None,
    poll: bool = True,
    overview: ModelsOverview | None = None,
    events: Any = None,
    search_encoders: Any = None,
) -> Any:
    """The API over `holder`'s states.

    Args:
        holder: owns the current `ServingState` and reloads it.
        settings: limits and secrets (`ServeSettings.from_env()` when None).
        poll: start `holder`'s background poll for a new champion while the app runs.
        overview: the models page's registry and reports (mmrec/serve/overview.py); None: the
            page says none is configured.
        events: an `EventsRuntime` (mmrec/serve/realtime.py): adds `POST /events` and real-time
            recommendations for users with recent events; None: neither.
        search_encoders: the dataset's query encoders (`mmrec.search.QueryEncoders`) for /search;
            None answers its requests with 503.
    """
    from fastapi import FastAPI, Path, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from pydantic import AfterValidator
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from mmrec.serve.search_api import search_body_limit, search_router

    settings = settings or ServeSettings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # FastAPI's lifespan protocol
        if holder.state is None:
            holder.reload()
        if poll:
            holder.start()
        try:
            yield
        finally:
            holder.stop()
            if events is not None:
                events.close()

    app = FastAPI(
        title="mmrec",
        version="1",
        summary="Multimodal recommendations: precomputed and real-time top-K, similar items per modality, explanations.",
        lifespan=lifespan,
        responses={401: {"model": Error}, 422: {"model": Error}, 503: {"model": Error}},
        docs_url=None,  # served below from local assets (no CDN script on this origin)
        redoc_url=None,
    )
    # inner: Host allow-list, cross-site POSTs, HEAD, Cache-Control and ids in paths (guards.py);
    # outer: API key, body size, request id, access log and security headers (security.py)
    app.add_middleware(
        BrowserGuards, allowed_hosts=settings.allowed_hosts, api_key_set=settings.api_key is not None, open_path=is_open
    )
    app.add_middleware(
        GuardMiddleware,
        max_body_bytes=settings.max_body_bytes,
        log_key=settings.log_key,
        api_key=settings.api_key,
        body_limits=search_body_limit(),
    )

    # -- errors -----------------------------------------------------------------------------
    def error(status: int, code: str, detail: Any, **extra: Any) -> JSONResponse:
        return JSONResponse(
            {"error": code, "detail": detail, **{k: v for k, v in extra.items() if v is not None}}, status_code=status
        )

    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        return error(404, "not_found", scrub(str(exc)), kind=exc.kind, id=exc.key)

    @app.exception_handler(ModelError)
    async def _unavailable(request: Request, exc: ModelError) -> JSONResponse:
        return error(409, "unavailable", scrub(str(exc)))

    @app.exception_handler(ServiceUnavailable)
    async def _service_down(request: Request, exc: ServiceUnavailable) -> JSONResponse:
        # a dependency (the online store) is down: retryable, and the next request reconnects
        log.warning("request %s: %s", request.scope.get("state", {}).get("request_id"), exc)
        response = error(503, "service_unavailable", scrub(str(exc)), service=exc.service)
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(MMRecError)
    async def _mmrec(request: Request, exc: MMRecError) -> JSONResponse:
        log.warning("request %s failed: %s", request.scope.get("state", {}).get("request_id"), exc)
        return error(409, "unavailable", scrub(str(exc)))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": scrub(str(e.get("msg", ""))), "type": e.get("type")}
            for e in exc.errors()[:20]
        ]
        return error(422, "invalid_request", problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {
            400: "bad_request",
            401: "unauthorized",
            404: "not_found",
            405: "method_not_allowed",
            413: "too_large",
            503: "not_ready",
        }
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        return JSONResponse(
            {"error": codes.get(exc.status_code, "http_error"), "detail": scrub(detail)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    # Any other exception is a bug: GuardMiddleware logs it and answers a bare 500 with the request id.

    # -- dependencies -------------------------------------------------------------------------
    # (the API key is checked by GuardMiddleware, before routing)
    def current() -> ServingState:
        from fastapi import HTTPException

        state = holder.state
        if state is None:
            raise HTTPException(503, "no model loaded yet; see /ready")
        return state

    async def scored(fn: Any, state: ServingState, *args: Any) -> Any:
        """`fn(state, *args)` on the loop for small catalogues, in the thread pool for large ones."""
        n_items = getattr(state.model, "n_items", 0) or 0
        if n_items <= settings.inline_max_items:
            return fn(state, *args)
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(fn, state, *args)

    # ids: any id the pipeline accepts (mmrec/ids.py), one percent-encoded path segment each
    UserId = Annotated[
        str,
        Path(pattern=ID_PATTERN, max_length=ID_MAX_LENGTH, description="a user id, percent-encoded"),
        AfterValidator(check_id),
    ]
    ItemId = Annotated[
        str,
        Path(pattern=ID_PATTERN, max_length=ID_MAX_LENGTH, description="an item id, percent-encoded"),
        AfterValidator(check_id),
    ]
    K = Annotated[int | None, Query(ge=1, le=MAX_K, description=f"how many items (default {settings.default_k})")]
    not_found: dict[int | str, dict[str, Any]] = {
        404: {"model": Error, "description": "unknown user or item (the body names it)"}
    }
    conflict: dict[int | str, dict[str, Any]] = {
        409: {"model": Error, "description": "the served model cannot do this (e.g. no explanations)"}
    }

    # -- probes ------------------------------------------------------------------------------
    @app.get("/health", response_model=Health, tags=["probes"])
    async def health() -> dict[str, Any]:
        """Liveness: the process answers (no dependency is checked)."""
        return {"status": "ok"}

    @app.get("/ready", response_model=Ready, tags=["probes"], responses={503: {"model": Ready}})
    def ready() -> JSONResponse:
        """Readiness: a model, index and catalogue are loaded (and which version), and the online
        store answers (a deleted, replaced or corrupt store makes this 503 until it is fixed)."""
        state = holder.state
        body: dict[str, Any] = {"status": "ready" if state else "not_ready"}
        # optional features this server has, so the page asks only for what exists
        body["features"] = {"events": events is not None, "search": search_encoders is not None}
        ok = state is not None
        if state is not None:
            body.update(state.describe())
            store_error = _store_problem(state)
            if store_error is not None:
                ok = False
                body["status"] = "not_ready"
                body["store_error"] = scrub(store_error)
        if holder.last_error:
            body["last_reload_error"] = scrub(holder.last_error)
        response = JSONResponse(body, status_code=200 if ok else 503)
        if not ok:
            response.headers["Retry-After"] = "5"
        return response

    # -- recommendations ---------------------------------------------------------------------
    @app.get(
        "/users/{user_id:id}/recommendations",
        response_model=Recommendations,
        tags=["recommendations"],
        responses=not_found,
    )
    async def user_recommendations(user_id: UserId, k: K = None) -> JSONResponse:
        """Top-k for a user: the nightly precomputed list from the online store, else live scoring.

        Users the model was not trained on are scored from their history (or get popularity when
        they have none); a user no source knows is a 404.
        """
        if events is not None:  # users with recent events: real-time (mmrec/serve/realtime.py)
            return json_response(events.recommendations(current(), user_id, k or settings.default_k))
        return json_response(service.user_recommendations(current(), user_id, k or settings.default_k))

    @app.post(
        "/recommendations",
        response_model=SessionRecommendations,
        tags=["recommendations"],
        responses={**not_found, **conflict, 413: {"model": Error}},
    )
    async def session_recommendations(body: SessionRequest) -> JSONResponse:
        """Real-time top-k for a session: the items seen so far, scored by the champion's `score_history`."""
        return json_response(
            await scored(service.session_recommendations, current(), body.item_ids, body.k or settings.default_k)
        )

    @app.get(
        "/users/{user_id:id}/recommendations/{item_id:id}/explain",
        response_model=Explanation,
        tags=["recommendations"],
        responses={**not_found, **conflict},
    )
    async def explain(user_id: UserId, item_id: ItemId) -> JSONResponse:
        """Why the item is recommended to the user: score parts per source and the user's items behind it."""
        return json_response(await scored(service.explain_pair, current(), user_id, item_id))

    if events is not None:
        from mmrec.serve.events_api import router as events_router

        app.include_router(events_router(events, current, UserId))

    # -- items and users -----------------------------------------------------------------------
    @app.get("/items/{item_id:id}/similar", response_model=Similar, tags=["items"], responses=not_found)
    async def similar(item_id: ItemId, k: K = None, modality: Modality = "fused") -> JSONResponse:
        """Nearest items in one modality's embedding space (text, image, audio, video) or the fused one."""
        return json_response(service.similar_items(current(), item_id, k or settings.default_k, modality))

    @app.get("/items/{item_id:id}", response_model=Item, tags=["items"], responses=not_found)
    async def item(item_id: ItemId) -> JSONResponse:
        """Title and media of one item (from the warehouse items table)."""
        return JSONResponse(current().catalog.item(item_id).to_dict())

    @app.get("/users", response_model=Users, tags=["users"])
    async def users(
        prefix: Annotated[str, Query(max_length=ID_MAX_LENGTH, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$")] = "",
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> JSONResponse:
        """Users whose id starts with `prefix`, in id order (the page's user picker)."""
        catalog = current().catalog
        return JSONResponse({"total": catalog.n_users, "users": catalog.users(prefix, limit, offset)})

    @app.get("/users/{user_id:id}/history", response_model=History, tags=["users"], responses=not_found)
    async def history(user_id: UserId, limit: Annotated[int | None, Query(ge=1, le=500)] = None) -> JSONResponse:
        """The user's most recent interactions, newest first."""
        return JSONResponse(service.user_history(current(), user_id, limit or settings.history_limit))

    @app.get(
        "/media/items/{item_id:id}/{modality}",
        tags=["items"],
        response_class=FileResponse,
        responses={**not_found, 200: {"content": {"image/*": {}, "audio/*": {}, "video/*": {}}}},
    )
    async def media(item_id: ItemId, modality: MediaModality) -> FileResponse:
        """The item's media file, typed by its content (image/png, audio/wav, video/mp4, ...).

        Only files the catalogue resolved inside the dataset folder, still inside it now, in a
        recognised media format and within the image pixel limit are served (mmrec/serve/media.py).
        """
        path, content_type = current().catalog.servable_media(item_id, modality)
        return FileResponse(
            path,
            media_type=content_type,
            headers={"cache-control": "max-age=3600", "content-security-policy": MEDIA_CSP},
        )

    # -- operations ----------------------------------------------------------------------------
    @app.post("/admin/reload", response_model=Reload, tags=["operations"], responses={415: {"model": Error}})
    def reload(force: bool = False) -> JSONResponse:
        """Load the current champion now (the background poll does the same every few seconds).

        `force=true` reloads even an unchanged version, reopening the online store (after it was
        replaced or repaired). Needs `Content-Type: application/json` or the X-API-Key header, which
        a cross-site form cannot send.
        """
        result = holder.reload(force=force)
        body = result.to_dict()
        if body.get("error"):
            body["error"] = scrub(body["error"])
        return JSONResponse(body, status_code=200 if result.action != "failed" else 503)

    @app.post("/session", status_code=204, tags=["operations"], responses={401: {"model": Error}})
    def session(request: Request) -> Response:
        """Trade the API key (X-API-Key header) for the page's session cookie.

        The cookie is HttpOnly and SameSite=Strict and holds a digest of the key, not the key: no
        script (of this page or another port of the host) can read it, cross-site requests do not
        carry it, and `<img>` requests of the page are authenticated by it. Without an API key
        configured there is nothing to trade (204, no cookie).
        """
        response = Response(status_code=204)
        if settings.api_key is not None:
            response.set_cookie(
                API_KEY_COOKIE,
                session_token(settings.api_key).decode(),
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
                path="/",
            )
        return response

    @app.delete("/session", status_code=204, tags=["operations"])
    def end_session() -> Response:
        """Forget the page's session cookie."""
        response = Response(status_code=204)
        response.delete_cookie(API_KEY_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    app.include_router(search_router(holder, settings, search_encoders, scrub))  # GET/POST /search (search_api.py)

    # -- the web pages -----------------------------------------------------------------------
    app.include_router(models_router(overview, scrub))  # /models and its data (models_api.py)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    from mmrec.serve.privacy_api import privacy_router

    app.include_router(privacy_router(holder, events))  # DELETE /users/{id} (mmrec forget)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _docs(app, StaticFiles)
    # the hot endpoint without FastAPI's per-request parameter solving, for provably valid
    # requests only; anything else still reaches user_recommendations above (hot_path.py)
    hot_path.install(app, holder, settings, MAX_K, events)

    def openapi() -> dict[str, Any]:
        """The generated spec plus the API key scheme on every operation GuardMiddleware protects."""
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            spec = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            spec.setdefault("components", {})["securitySchemes"] = {
                "apiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": API_KEY_HEADER,
                    "description": f"needed when the server sets MMREC_API_KEY (the page uses the {API_KEY_COOKIE} cookie)",
                },
            }
            if settings.api_key is not None:
                for path, ops in spec.get("paths", {}).items():
                    if not is_open(path):
                        for op in ops.values():
                            op["security"] = [{"apiKey": []}]
                            op.setdefault("responses", {})["401"] = {
                                "description": "missing or wrong API key",
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                            }
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _store_problem(state: ServingState) -> str | None:
    """Why the state's online store cannot be read now (its reader's `check()`), or None."""
    check = getattr(state.recs, "check", None)
    if check is None:
        return None
    try:
        check()
    except MMRecError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - any failure of the probe means not ready
        return f"{type(exc).__name__}: {exc}"
    return None


def _docs(app: Any, static_files: Any) -> None:
    """/docs with swagger-ui served from this server (the `swagger-ui-bundle` package), no CDN.

    Without the package there is no /docs page (the spec stays at /openapi.json): loading a
    script from a CDN onto the API's origin would hand that CDN the page.
    """
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        log.info("swagger-ui-bundle is not installed: no /docs page (the spec is at /openapi.json)")
        return
    from fastapi.openapi.docs import get_swagger_ui_html

    app.mount("/docs-assets", static_files(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Any:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="mmrec API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )
