"""`mmrec serve`: load the champion, then run the API under uvicorn.

The first state is loaded before the server binds its port, so a deployment without a champion
or without a materialised online store fails at start with the command that fixes it, instead
of answering 503 forever. uvicorn's own access log is switched off: it prints raw paths, which
hold user ids; the API's access log (`mmrec.serve.access`) pseudonymises them. Requests h11
cannot parse get the API's JSON error body too (mmrec/serve/protocol.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from mmrec.errors import MMRecError

if TYPE_CHECKING:
    from mmrec.serve.settings import ServeSettings
    from mmrec.stages import StageContext

log = logging.getLogger(__name__)


def build_app(
    ctx: StageContext, profile: str | None = None, alias: str = "champion", settings: ServeSettings | None = None
) -> Any:
    """The API over the dataset's champion, with its first state already loaded.

    Raises:
        MMRecError: no champion, no online store, no warehouse (the message names the fix).
    """
    from mmrec.search import QueryEncoders
    from mmrec.serve.app import create_app
    from mmrec.serve.loader import ChampionSource
    from mmrec.serve.overview import ModelsOverview
    from mmrec.serve.settings import ServeSettings
    from mmrec.serve.state import StateHolder

    settings = settings or ServeSettings.from_env()
    source = ChampionSource(ctx, alias=alias, profile=profile)
    holder = StateHolder(source, interval_s=settings.reload_interval_s)
    source.version()  # a clear ModelError when nothing is registered
    result = holder.reload()
    if holder.state is None:
        raise MMRecError(f"cannot start serving {ctx.spec.name!r}: {result.error}")
    return create_app(
        holder,
        settings,
        overview=ModelsOverview.from_context(ctx),
        events=events_runtime(ctx),
        search_encoders=QueryEncoders(ctx.params.extract),
    )


def events_runtime(ctx: StageContext) -> Any:
    """The feedback loop over the dataset's event store (mmrec/events/store.py: sqlite or Redis)."""
    from mmrec.events.config import events_params
    from mmrec.events.store import open_store
    from mmrec.serve.realtime import EventsRuntime

    store = open_store(ctx)
    store.ping()
    return EventsRuntime(store, events_params(ctx.params), ctx.params.validate_)


#: uvicorn's h11 protocol answering unparsable requests with the API's JSON error body
HTTP_PROTOCOL = "mmrec.serve.protocol:JsonErrorH11Protocol"

#: environment variable carrying `mmrec serve`'s arguments to uvicorn's worker processes
_WORKER_ARGS = "MMREC_SERVE_WORKER_ARGS"


def worker_app() -> Any:
    """App factory of each uvicorn worker process (`--workers N`): rebuilds the context from the
    arguments `serve` left in the environment, then loads its own state (and polls on its own)."""
    import json
    import os

    from threadpoolctl import threadpool_limits

    from mmrec.context import StageContext
    from mmrec.serve.settings import ServeSettings

    threadpool_limits(limits=int(os.environ.get("MMREC_SERVE_BLAS_THREADS", "1")))
    # a spawned worker starts with no logging set up: the same format and level as the CLI's
    logging.basicConfig(
        level=os.environ.get("MMREC_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    args = json.loads(os.environ[_WORKER_ARGS])
    # the same parameter files as the parent process (base + the dataset's overlays)
    ctx = StageContext.from_files(args["dataset"], args["params"], args["workspace"], args["root"])
    return build_app(ctx, args["profile"], args["alias"], ServeSettings.from_env(**args["settings"]))


def serve(
    ctx: StageContext,
    host: str = "127.0.0.1",
    port: int = 8000,
    profile: str | None = None,
    alias: str = "champion",
    settings: ServeSettings | None = None,
    workers: int = 1,
    params_path: str | None = None,
    root: str | None = None,
) -> None:
    """Serve the API until interrupted.

    BLAS is limited to one thread (MMREC_SERVE_BLAS_THREADS to change): a request multiplies one
    vector by the item matrix, far too little work to split, and on a busy 2-core box OpenBLAS's
    spinning worker threads made such a product 30x slower (10 ms instead of 0.4 ms).
    """
    import os

    import uvicorn
    from threadpoolctl import threadpool_limits

    from mmrec.serve.settings import ServeSettings

    threadpool_limits(limits=int(os.environ.get("MMREC_SERVE_BLAS_THREADS", "1")))
    effective = settings or ServeSettings.from_env()
    if effective.api_key is None and effective.allowed_hosts is None and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "serving on %s without an API key: only requests naming Host localhost, 127.0.0.1 or [::1] are "
            "answered (DNS-rebinding guard); set MMREC_SERVE_ALLOWED_HOSTS=name1,name2 or MMREC_API_KEY",
            host,
        )
    if workers > 1:
        # One process per core: Python serves one request at a time per process (GIL). Each
        # worker loads its own state; this first load fails fast before any worker starts.
        import json

        build_app(ctx, profile, alias, settings)
        overrides = {"reload_interval_s": settings.reload_interval_s} if settings is not None else {}
        os.environ[_WORKER_ARGS] = json.dumps(
            {
                "dataset": ctx.spec.spec_path,
                "root": root,
                "params": params_path or "params.yaml",
                "workspace": str(ctx.workspace),
                "profile": profile,
                "alias": alias,
                "settings": overrides,
            }
        )
        if settings is not None:
            os.environ.setdefault("MMREC_LOG_KEY", settings.log_key)  # one pseudonym per user across workers
        log.info(
            "serving %s on http://%s:%d with %d workers (docs at /docs, page at /)", ctx.spec.name, host, port, workers
        )
        uvicorn.run(
            "mmrec.serve.run:worker_app",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            access_log=False,
            log_level="info",
            timeout_graceful_shutdown=10,
            http=HTTP_PROTOCOL,
        )
        return
    app = build_app(ctx, profile, alias, settings)
    log.info("serving %s on http://%s:%d (docs at /docs, page at /)", ctx.spec.name, host, port)
    uvicorn.run(
        app, host=host, port=port, access_log=False, log_level="info", timeout_graceful_shutdown=10, http=HTTP_PROTOCOL
    )
