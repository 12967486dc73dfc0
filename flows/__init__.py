"""Prefect 3 flows and deployments of mmrec (the library itself never imports Prefect).

- `flows.training.training_pipeline`: ingest -> validate -> split -> extract -> train ->
  evaluate -> register/promote.
- `flows.nightly.nightly_recommendations`: the champion's top-K for every user.
- `flows/serve.py`: serves both as deployments (nightly on cron `0 2 * * *`).
See docs/orchestration.md.
"""
