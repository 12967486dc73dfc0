"""The Prefect cache keys come from dvc.yaml: the two stage graphs cannot drift apart.

`mmrec_flows/dvc_stages.py` reads dvc.yaml itself; these tests compare what it reads with what DVC's
own parser resolves for every stage the training flow runs, and check that the keys react to
exactly the inputs listed there (the drift the old hand-written keys had: evaluate ignored the
feature folders, `extract`, `train.seed` and `train.params`; train ignored `extract`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytest.importorskip("prefect")


def _flow_stages() -> tuple[str, ...]:
    from mmrec_flows.training import STAGES

    return STAGES


def test_every_flow_stage_reads_the_deps_and_params_dvc_resolves():
    from dvc.repo import Repo

    from mmrec_flows.dvc_stages import DVC_YAML, interpolate, load_stages

    assert DVC_YAML == REPO / "dvc.yaml"
    ours = load_stages()
    params_tree = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    dvc = {s.name: s for s in Repo(str(REPO)).index.stages}
    for stage in _flow_stages():
        assert stage in ours and stage in dvc, f"flow stage {stage!r} missing from dvc.yaml"
        theirs = dvc[stage]
        dvc_deps = [d.def_path for d in theirs.deps if not hasattr(d, "params")]
        dvc_params = [k for d in theirs.deps if hasattr(d, "params") for k in d.params]
        assert [interpolate(t, params_tree, stage) for t in ours[stage].deps] == dvc_deps, stage
        assert list(ours[stage].params) == dvc_params, stage


@pytest.fixture
def ctx_for(tiny_dataset: Path, workspace: Path, tmp_path: Path):
    from mmrec_flows.tasks import load_context, run_args

    def make(overrides: dict | None = None):
        params = tmp_path / "params.yaml"
        tree = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
        for dotted, value in (overrides or {}).items():
            node = tree
            *parents, last = dotted.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[last] = value
        params.write_text(yaml.safe_dump(tree), encoding="utf-8")
        return load_context(run_args(tiny_dataset, params, workspace))

    return make


def _keys(ctx) -> dict[str, str]:
    from mmrec_flows.tasks import stage_key

    return {s: stage_key(ctx, s) for s in _flow_stages()}


@pytest.mark.parametrize(
    ("override", "changed"),
    [
        ({"train.seed": 7}, {"train", "evaluate"}),
        ({"train.params": {"bpr": {"epochs": 3}}}, {"train", "evaluate"}),
        ({"extract.precision": "fp32"}, {"train", "evaluate"}),
        ({"split.kind": "random"}, {"split", "train", "evaluate"}),
        ({"validate.min_text_chars": 2}, {"validate"}),
        ({"validate.future_tolerance": "2 days"}, {"validate", "ingest_events"}),
        ({"events.store": "sqlite"}, {"ingest_events"}),
        ({"recommend.k": 7}, set()),  # read by no training stage
    ],
)
def test_a_params_change_invalidates_exactly_the_stages_dvc_lists(ctx_for, override, changed):
    before, after = _keys(ctx_for()), _keys(ctx_for(override))
    assert {s for s in before if before[s] != after[s]} == changed


def test_a_new_feature_file_invalidates_train_and_evaluate(ctx_for):
    ctx = ctx_for()
    before = _keys(ctx)
    text = ctx.paths.data / "features" / "text"
    text.mkdir(parents=True)
    (text / "minilm.parquet").write_bytes(b"x")
    after = _keys(ctx)
    assert {s for s in before if before[s] != after[s]} == {"train", "evaluate"}


def test_bytecode_caches_are_not_inputs(ctx_for, tmp_path):
    from mmrec_flows.tasks import fingerprint

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "m.py").write_text("x = 1\n")
    before = fingerprint([pkg])
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\0")
    assert fingerprint([pkg]) == before
    (pkg / "m.py").write_text("x = 22\n")
    assert fingerprint([pkg]) != before


def test_unknown_params_keys_and_variables_fail_naming_the_stage(tmp_path, ctx_for):
    from mmrec.errors import ConfigError
    from mmrec_flows.dvc_stages import dep_paths, param_values

    bad = tmp_path / "dvc.yaml"
    bad.write_text(
        yaml.safe_dump(
            {"stages": {"train": {"cmd": "x", "deps": ["data/${dataset.nope}/x"], "params": ["train.no_such_key"]}}}
        )
    )
    ctx = ctx_for()
    with pytest.raises(ConfigError, match=r"stage 'train'.*train\.no_such_key"):
        param_values(ctx, "train", bad)
    with pytest.raises(ConfigError, match=r"stage 'train'.*dataset\.nope"):
        dep_paths(ctx, "train", bad)
    with pytest.raises(ConfigError, match="stage 'evaluate' is not in"):
        param_values(ctx, "evaluate", bad)


def test_workspace_and_checkout_paths_resolve_apart(ctx_for):
    from mmrec_flows.dvc_stages import dep_paths

    ctx = ctx_for()
    deps = dep_paths(ctx, "evaluate")
    assert Path(ctx.paths.workspace) / "artifacts" / ctx.spec.name / "models" in deps
    assert REPO / "mmrec" / "models" in deps
    assert dataclasses.is_dataclass(ctx)
