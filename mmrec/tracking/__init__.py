"""MLflow 3 tracking and model lifecycle: runs, MLflow models, the registry and the promotion gate.

- Every trained model becomes one MLflow run in the experiment `mmrec-<dataset>`: its
  hyper-parameters, per-epoch metrics (`model.history`), final valid/test/cold metrics, the
  split hash, the feature files it could use, the git commit, the evaluation and validation
  reports and a learning-curve plot, and the model itself as an MLflow pyfunc with a signature.
- The best model on validation is registered as a new version of `mmrec-<dataset>` and gets the
  alias `challenger`. The promotion gate moves `champion` to it only if it beats the current
  champion's validation metric by the configured margin. Every decision (promoted, refused,
  forced, rolled back) and its evidence is written as tags on the model version, on its run and
  in the registered model's decision log. Aliases only: the deprecated stages are never used.
- Embedded default: an sqlite backend (`mlflow.db`) and a local artifact store (`mlruns/`) in
  the workspace; `tracking.uri` (or `MLFLOW_TRACKING_URI`) points everything at a server.

Modules: `store` (names, URIs, the MLflow client session, store errors), `runs` (one run per
trained model, `track_training`), `registry` (versions, aliases, the promotion gate, promote,
rollback, load the champion), `pyfunc` (the MLflow model flavour) and `plots`. Settings:
`mmrec.params.tracking`.

MLflow is imported inside functions: it takes seconds to import and most commands never need it.
MLflow metric/tag names may not contain '@', so `recall@20` is logged as `recall_at_20`.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:  # PEP 562: lazy attribute for the pyfunc class
    """`mmrec.tracking.MMRecPyfunc`: the stable import path of the pyfunc class (registered models
    pickle it by reference), built on first access so that importing mmrec never imports mlflow."""
    if name == "MMRecPyfunc":
        from mmrec.tracking.pyfunc import pyfunc_class

        return pyfunc_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
