"""Prefect 3 flows and deployments of mmrec (the library itself never imports Prefect).

- `mmrec_flows.training.training_pipeline`: ingest -> validate -> split -> extract -> train ->
  evaluate -> register/promote.
- `mmrec_flows.nightly.nightly_recommendations`: the champion's top-K for every user.
- `mmrec_flows/serve.py`: serves both as deployments (nightly on cron `0 2 * * *`).
See docs/orchestration.md.
"""
