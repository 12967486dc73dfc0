"""`StageContext`: the dataset, the params and the workspace a stage (or command) works on.

One typed object instead of `ctx: Any`, with one way to build it from the files a user names
(`from_files`), used by the CLI, the Prefect tasks, the API workers, the DDP trainer and the
benchmarks, so they all read dataset.yaml and params.yaml the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mmrec.config import Params
from mmrec.data.contract import DatasetSpec
from mmrec.paths import DatasetPaths


@dataclass(frozen=True)
class StageContext:
    """Everything a stage needs: the dataset, the params and where to write."""

    spec: DatasetSpec
    params: Params
    workspace: Path = Path(".")

    @property
    def paths(self) -> DatasetPaths:
        return DatasetPaths(self.spec.name, self.workspace)

    @classmethod
    def from_files(
        cls,
        dataset: str | os.PathLike[str],
        params: str | os.PathLike[str] | None = "params.yaml",
        workspace: str | os.PathLike[str] = ".",
        root: str | os.PathLike[str] | None = None,
    ) -> StageContext:
        """Read `dataset` (a dataset.yaml, `root` overriding its data root) and `params` (params.yaml
        plus `MMREC__...` overrides; a missing file means the defaults).

        Raises:
            ConfigError: a bad dataset.yaml or params.yaml, naming the file and field.
        """
        from mmrec.config import load_params
        from mmrec.data.contract import load_dataset_spec

        spec = load_dataset_spec(dataset, root=root)
        return cls(spec=spec, params=load_params(params), workspace=Path(workspace))
