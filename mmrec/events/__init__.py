"""The feedback loop: events in, adapted recommendations out.

- `config`: the `events:` section of params.yaml (`EventsParams`).
- `schema`: validation of posted events (the interactions contract, row by row).
- `store`: the append-only event log, recent histories, impressions and bandit state, in
  sqlite (embedded profile) or Redis (production profile); `erase_user` for the forget feature.
- `bandit`: Thompson sampling over strategies per user segment (Beta posteriors).
- `strategies`: nightly / real-time blend / popularity / content lists for one user.
- `replay`: the held-out test period replayed in time order (static vs real-time vs adaptive).
- `ingest`: the event log into the warehouse, validated and deduplicated, for the next training.

Nothing here imports the serving app or an orchestrator; heavy imports are lazy.
"""
