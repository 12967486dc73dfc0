"""`StageContext.from_files`: the one way the CLI, flows, API workers, DDP and benchmarks read the inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmrec.context import StageContext
from mmrec.errors import ConfigError


def test_from_files_reads_the_dataset_and_params_and_places_the_workspace(tiny_dataset: Path, tmp_path: Path):
    params = tmp_path / "params.yaml"
    params.write_text("split:\n  kind: random\n")
    ctx = StageContext.from_files(tiny_dataset, params, tmp_path / "ws")
    assert ctx.spec.name == "tiny" and ctx.params.split.kind == "random"
    assert ctx.paths.data == tmp_path / "ws" / "data" / "tiny"


def test_a_missing_params_file_means_the_defaults_and_root_overrides_the_data_folder(
    tiny_dataset: Path, tmp_path: Path
):
    ctx = StageContext.from_files(str(tiny_dataset), tmp_path / "none.yaml", root=tiny_dataset.parent)
    assert ctx.params.split.kind == "temporal" and ctx.workspace == Path(".")
    assert ctx.spec.root_path == tiny_dataset.parent.resolve()


def test_bad_params_name_the_file(tiny_dataset: Path, tmp_path: Path):
    params = tmp_path / "params.yaml"
    params.write_text("split:\n  kind: sideways\n")
    with pytest.raises(ConfigError, match=str(params)):
        StageContext.from_files(tiny_dataset, params)


def test_stages_use_the_same_class():
    import mmrec.stages

    assert mmrec.stages.StageContext is StageContext
