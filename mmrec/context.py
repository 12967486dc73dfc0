"""`StageContext`: the dataset, the params and the workspace a stage (or command) works on.

One typed object instead of `ctx: Any`, with one way to build it from the files a user names
(`from_files`), used by the CLI, the Prefect tasks, the API workers, the DDP trainer and the
benchmarks, so they all read dataset.yaml and params.yaml the same way.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from mmrec.config import Params, load_run_params
from mmrec.data.contract import DatasetSpec, load_dataset_spec
from mmrec.paths import DatasetPaths

log = logging.getLogger(__name__)

_PARAMS_LOGGED: set[tuple[str, tuple[str, ...]]] = set()


@dataclass(frozen=True)
class StageContext:
    """Everything a stage needs: the dataset, the params and where to write."""

    spec: DatasetSpec
    params: Params
    workspace: Path = Path(".")
    #: the parameter files merged into `params`, base first (`mmrec.config.load_run_params`)
    params_files: tuple[str, ...] = ()

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
        """Read `dataset` (a dataset.yaml, `root` overriding its data root) and the run's parameters:
        the base `params` file, then the dataset's own overlays and `MMREC__...` overrides
        (`mmrec.config.load_run_params`; a missing base file means the defaults). The files used are
        logged once per process, so a run says what it used without one line per task of a flow.

        Raises:
            ConfigError: a bad dataset.yaml or params file, naming the file and field.
        """
        spec = load_dataset_spec(dataset, root=root)
        params_obj, files = load_run_params(params, spec, workspace)
        said = (spec.name, tuple(files))
        if said not in _PARAMS_LOGGED:
            _PARAMS_LOGGED.add(said)
            log.info("parameters for %s: %s", spec.name, " + ".join(files) if files else "built-in defaults")
        return cls(spec=spec, params=params_obj, workspace=Path(workspace), params_files=tuple(files))
