"""Feast glue: export feature tables, apply the repository, materialise, read online and historically.

Modules: `tables` (the table builders, pure pandas), `export` (tables from the pipeline's
artifacts to files), `store` (the store bound to a dataset, its config, `apply`), `materialize`
(into the online store), `historical` (point-in-time training sets), `online` (the API's
reads) and `view_reader` (the lean one-view online read under them). Settings:
`mmrec.params.feast`.

The Feast repository (`feature_repo/`: entities, data sources, feature views, feature services)
is defined once, dataset-free; this module binds it to one dataset:

- export: `export_tables` builds the tables of `mmrec.feast.tables` from the pipeline's
  artifacts (feature files, the split, the champion model, latest recommendations) and writes
  them to `data/<name>/feast/tables/`, with `models.json` listing the registered model versions
  (one feature service each). A table whose content did not change keeps its timestamps and is
  not rewritten, so `materialize_incremental` has nothing new to load for it.
- config: the profile's `feature_store[.<profile>].yaml` is the template; the project becomes
  `mmrec_<name>` and the registry/online database live under `data/<name>/feast/<profile>/`, so
  datasets and profiles never share state (Redis keys end with the project name).
- apply / materialise: `apply` registers the repo's objects for the dataset (stale feature
  services are deleted); `materialize` runs `materialize_incremental` up to now.
- reads: `OnlineFeatures` (the API's online reads) and `historical_features` /
  `point_in_time_training_set` (training sets joined as of each interaction's time).

Feast is imported inside functions only: it takes seconds to import and most commands never
need it.
"""
