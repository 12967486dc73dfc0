"""`GET /search` (text) and `POST /search` (an image): items ranked in the learned joint space.

The routes live here, as an APIRouter that `create_app` includes; the ranking is
mmrec/search.py. Which model answers:
- the serving champion, when it has a cross-modal projection (a `two_tower` with text and image);
- else the declared search model (`MMREC_SEARCH_ALIAS`, a registry alias such as `search`, loaded
  once per registry version next to the champion), when one is configured;
- else 409 `no_joint_space` saying so: silently answering from the items' own text would look
  like cross-modal search and not be it.

Uploads: `POST /search` takes the raw image bytes as the body with its real `Content-Type`
(image/jpeg, image/png, image/webp, image/gif, image/bmp; not a simple content type, so a
cross-site page cannot send one without a CORS preflight, which this server never grants). The
body limit of this path is `MMREC_SEARCH_MAX_IMAGE_BYTES` (GuardMiddleware refuses more with 413
before reading it); decoding refuses more than `MMREC_SEARCH_MAX_PIXELS` from the header, before
any pixel is decoded (and Pillow's own decompression-bomb guard stays on).

Errors: 422 `invalid_query` (empty, too long, corrupt or non-image upload, too many pixels),
413 (body too large), 415 (a Content-Type that is not an accepted image type), 409
`no_joint_space`, 503 `encoder_unavailable` (the encoder cannot load, e.g. hub weights while
offline: the message says which and why).
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at registration.
import logging
import os
import threading
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, Field

from mmrec.errors import ModelError, NotFoundError
from mmrec.search import IMAGE_TYPES, MAX_QUERY_CHARS, TARGETS, NoProjection, QueryEncoders, QueryError
from mmrec.serve.settings import MAX_K
from mmrec.serve.state import StateHolder

log = logging.getLogger(__name__)

SEARCH_PATH = "/search"


class SearchSettings(BaseModel):
    """Limits of the search routes (environment: MMREC_SEARCH_<FIELD upper-case>)."""

    max_query_chars: int = Field(200, ge=1, le=MAX_QUERY_CHARS)
    max_image_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(40_000_000, ge=1)
    alias: str | None = None  # registry alias of a declared search model (when the champion has no projection)

    @classmethod
    def from_env(cls) -> "SearchSettings":
        values: dict[str, Any] = {}
        for name in ("max_query_chars", "max_image_bytes", "max_pixels", "alias"):
            raw = os.environ.get(f"MMREC_SEARCH_{name.upper()}")
            if raw:
                values[name] = raw
        return cls(**values)


class SearchModels:
    """The model that answers searches: the champion if it can, else the declared search alias."""

    def __init__(self, holder: StateHolder, alias: str | None) -> None:
        self.holder = holder
        self.alias = alias
        self._lock = threading.Lock()
        self._fallback: tuple[str, Any] | None = None  # (registry version, model)

    def get(self, state: Any) -> tuple[Any, dict[str, Any]]:
        """(model, {"name", "version", "source"}) for `state`, or NoProjection."""
        from mmrec.search import model_projection

        model = state.model
        if getattr(model, "projection", None) is not None:
            return model, {"name": model.name, "version": state.version, "source": "champion"}
        ctx = getattr(self.holder.source, "ctx", None)
        alias = self.alias
        if alias is None or ctx is None:
            model_projection(model, "the champion")  # raises NoProjection with the explanation
            raise AssertionError("unreachable")  # model_projection raised
        with self._lock:
            from mmrec.tracking.registry import alias_version, load_champion

            version = alias_version(ctx, alias)
            if version is None:
                raise NoProjection(
                    f"the champion has no cross-modal projection and no model has the alias {self.alias!r} "
                    f"(MMREC_SEARCH_ALIAS); register a two_tower model under it"
                )
            if self._fallback is None or self._fallback[0] != str(version):
                loaded, _ = load_champion(ctx, alias=alias)
                model_projection(loaded, f"the {alias!r} model")
                self._fallback = (str(version), loaded)
            return self._fallback[1], {"name": self._fallback[1].name, "version": self._fallback[0], "source": alias}


class SearchHit(BaseModel):
    item_id: str
    rank: int
    score: float = Field(description="mean cosine over the matched modalities")
    matched: dict[str, float] = Field(description="cosine of the query with each of the item's modality vectors")
    title: str | None = None
    image_url: str | None = None


class SearchResults(BaseModel):
    query: dict[str, Any]
    target: str
    model: dict[str, Any]
    items: list[SearchHit]


def search_router(
    holder: StateHolder,
    settings: Any,
    encoders: QueryEncoders | None,
    scrub: Callable[[str], str],
    search_settings: SearchSettings | None = None,
) -> Any:
    """The search routes over `holder`'s current state.

    Args:
        holder: the app's state holder.
        settings: the app's ServeSettings (default k).
        encoders: the dataset's query encoders; None answers 503 (none wired).
        scrub: the app's message cleaner (no paths or credentials reach a client), passed in so
            this module does not import the app that includes it.
        search_settings: limits (`SearchSettings.from_env()` when None).
    """
    from fastapi import APIRouter, Query, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    limits = search_settings or SearchSettings.from_env()
    models = SearchModels(holder, limits.alias)
    router = APIRouter(tags=["search"])
    K = Annotated[int | None, Query(ge=1, le=MAX_K, description=f"how many items (default {settings.default_k})")]
    Target = Annotated[
        str,
        Query(
            pattern="^(" + "|".join(TARGETS) + ")$",
            description="which item vectors to match: all (mean over the item's modalities), text or image",
        ),
    ]
    responses: dict[int | str, dict[str, Any]] = {
        409: {"description": "no model with a joint text-image space is served"},
        413: {"description": "image above MMREC_SEARCH_MAX_IMAGE_BYTES"},
        415: {"description": "not an accepted image Content-Type"},
        503: {"description": "the query encoder cannot load (e.g. hub weights while offline)"},
    }

    def fail(status: int, code: str, detail: str) -> JSONResponse:
        return JSONResponse({"error": code, "detail": scrub(detail)}, status_code=status)

    def run(request_query: dict[str, Any], k: int | None, target: str, **query: Any) -> JSONResponse:
        from mmrec.search import search

        state = holder.state
        if state is None:
            return fail(503, "not_ready", "no model loaded yet; see /ready")
        if encoders is None:
            return fail(503, "encoder_unavailable", "this server was started without query encoders")
        try:
            model, info = models.get(state)
            hits = search(model, encoders, k or settings.default_k, target=target, **query)
        except QueryError as exc:
            return fail(422, "invalid_query", str(exc))
        except NoProjection as exc:
            return fail(409, "no_joint_space", str(exc))
        except ModelError as exc:
            log.warning("search: %s", exc)
            return fail(503, "encoder_unavailable", str(exc))
        items = []
        for rank, hit in enumerate(hits, 1):
            record: dict[str, Any] = {}
            try:
                record = state.catalog.item(hit.item_id).to_dict()
            except NotFoundError:
                pass  # an item of the model the catalogue no longer lists: id and score only
            items.append(
                {
                    "item_id": hit.item_id,
                    "rank": rank,
                    "score": round(hit.score, 6),
                    "matched": {m: round(v, 6) for m, v in hit.matched.items()},
                    "title": record.get("title"),
                    "image_url": record.get("image_url"),
                }
            )
        return JSONResponse({"query": request_query, "target": target, "model": info, "items": items})

    @router.get(SEARCH_PATH, response_model=SearchResults, responses=responses)
    def search_text(
        q: Annotated[str, Query(description="the text to search for", max_length=10_000)],
        k: K = None,
        target: Target = "all",
    ) -> JSONResponse:
        """Items for a text query, ranked in the served model's joint space.

        The query is embedded by the dataset's text encoder and mapped through the model's
        trained text projection; `target=image` ranks items by their pictures alone.
        """
        try:
            from mmrec.search import check_text_query

            text = check_text_query(q, limits.max_query_chars)
        except QueryError as exc:
            return fail(422, "invalid_query", str(exc))
        return run({"text": text}, k, target, text=text)

    @router.post(
        SEARCH_PATH,
        response_model=SearchResults,
        responses=responses,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES},
            }
        },
    )
    async def search_image(request: Request, k: K = None, target: Target = "all") -> JSONResponse:
        """Items for an image (the raw bytes as the body, with the image's Content-Type).

        The image is decoded safely (size, pixel and format checks), embedded by the dataset's
        image encoder and mapped through the model's image projection; `target=text` ranks items
        by their text alone.
        """
        from mmrec.search import decode_query_image

        content_type = request.headers.get("content-type")
        media = (content_type or "").split(";", 1)[0].strip().lower()
        if media not in IMAGE_TYPES:
            return fail(
                415,
                "unsupported_media_type",
                f"send the image bytes with its Content-Type, one of {sorted(IMAGE_TYPES)} (got {media or 'none'!r})",
            )
        body = await request.body()

        def work() -> JSONResponse:
            try:
                img = decode_query_image(body, content_type, limits.max_image_bytes, limits.max_pixels)
            except QueryError as exc:
                return fail(422, "invalid_query", str(exc))
            return run(
                {"image": {"content_type": media, "bytes": len(body), "size": list(img.size)}}, k, target, image=img
            )

        return await run_in_threadpool(work)

    return router


def search_body_limit(search_settings: SearchSettings | None = None) -> dict[str, int]:
    """The per-path body limit GuardMiddleware applies to image uploads."""
    limits = search_settings or SearchSettings.from_env()
    return {SEARCH_PATH: limits.max_image_bytes}
