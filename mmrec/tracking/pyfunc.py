"""The MLflow pyfunc flavour of an mmrec model: the wrapper class, its signature and its logging.

The class is built on first use so importing mmrec never imports mlflow. Its import path is
`mmrec.tracking.MMRecPyfunc` (the package's `__getattr__`): registered models pickle the class
by reference, so that path stays stable for models logged before the package split.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

from mmrec.recommend.topk import recommend_for_ids

MODEL_ARTIFACT = "model"


def pyfunc_class() -> type:
    """The MLflow pyfunc wrapper, built on first use so importing mmrec never imports mlflow.

    It is published as `mmrec.tracking.MMRecPyfunc` (the package's `__getattr__`), so MLflow's
    cloudpickle stores it by reference and `mlflow.pyfunc.load_model` finds it again.
    """
    cached = globals().get("_PYFUNC_CLASS")
    if cached is not None:
        return cached
    from mlflow.pyfunc import PythonModel

    class MMRecPyfunc(PythonModel):
        """Top-K recommendations from a saved mmrec model folder (the `model` artifact).

        Input: a DataFrame with a `user_id` column. Params: `k` (default 20). Output: one row
        per recommendation, `user_id, item_id, rank, score`; unknown users get the most
        popular items. Loading needs `mmrec` importable, not its training code path.
        """

        def load_context(self, context: Any) -> None:
            from mmrec.models import load_model

            self.model = load_model(context.artifacts[MODEL_ARTIFACT])

        def predict(
            self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
        ) -> pd.DataFrame:
            from mmrec.constants import USER_ID

            k = int((params or {}).get("k", 20))
            users = (
                model_input[USER_ID].astype(str).tolist() if USER_ID in model_input else list(model_input.iloc[:, 0])
            )
            return recommend_for_ids(self.model, users, k=k)

    MMRecPyfunc.__module__ = "mmrec.tracking"  # the stable path (package __getattr__), see the module docstring
    MMRecPyfunc.__qualname__ = "MMRecPyfunc"
    globals()["_PYFUNC_CLASS"] = MMRecPyfunc
    return MMRecPyfunc


def model_signature() -> Any:
    """Input `user_id` (string), param `k` (long, 20); output user_id, item_id, rank, score."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "user_id")]),
        outputs=Schema(
            [
                ColSpec("string", "user_id"),
                ColSpec("string", "item_id"),
                ColSpec("integer", "rank"),
                ColSpec("float", "score"),
            ]
        ),
        params=ParamSchema([ParamSpec("k", "long", 20)]),
    )


def _pip_requirements() -> list[str]:
    """Explicit requirements: skips MLflow's slow inference, which would import the model in a subprocess."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in ("mlflow", "numpy", "scipy", "pandas", "pyarrow", "pydantic", "torch"):
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:  # pragma: no cover
            continue
    return reqs


def log_pyfunc(folder: Path) -> Any:
    """Log a saved mmrec model folder as an MLflow pyfunc model in the active run."""
    import mlflow.pyfunc

    return mlflow.pyfunc.log_model(
        name=MODEL_ARTIFACT,
        python_model=pyfunc_class()(),
        artifacts={MODEL_ARTIFACT: str(folder)},
        signature=model_signature(),
        pip_requirements=_pip_requirements(),
    )
