"""HTTP API for recommendations, similar items and explanations (`mmrec serve`).

- `state`: the immutable `ServingState` a request reads and the holder that swaps it on reload,
- `service`: what each endpoint computes (no HTTP),
- `app`: the FastAPI application (routes, errors, API key, web page),
- `catalog`: item titles and media, user histories; `loader`: states from the MLflow champion,
  the item indexes and the Feast online store; `security`: body limit and pseudonymised logs;
  `schemas`: request/response bodies (the OpenAPI spec); `settings`: limits and secrets;
  `run`: `mmrec serve` (uvicorn).

FastAPI is imported inside `create_app`, so importing this package stays cheap.
"""
