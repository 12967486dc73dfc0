"""`dvc repro` from a clean repository, incremental re-runs, and a push/pull round trip.

The repo's dvc.yaml, params.yaml and .dvc/config are copied into a fresh git repository with a
small synthetic dataset, so the test exercises the committed pipeline definition itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.integration

SMALL_PARAMS = {
    "synth": {"seed": 7, "users": 60, "items": 48},
    # tiny registered encoders: the real pretrained ones run in the slow tier
    "extract": {
        "text": {"encoder": "tiny_text"},
        "image": {"encoder": "tiny_cnn"},
        "audio": {"encoder": "logmel"},
        "video": {"encoder": "frames", "image_encoder": "tiny_cnn"},
    },
    "train": {
        "models": ["popularity", "itemknn", "bpr"],
        "params": {"bpr": {"max_epochs": 4, "eval_every": 2}},
    },
}


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out.get(k, {}), v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("dvcrepo")
    shutil.copytree(REPO / "mmrec", repo / "mmrec", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "feature_repo", repo / "feature_repo", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    shutil.copytree(REPO / "params", repo / "params")  # per-dataset overlays (params/synth.yaml)
    shutil.copy(REPO / ".gitignore", repo / ".gitignore")
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), SMALL_PARAMS)
    params["extract"]["audio"]["options"] = {}  # whisper's `window` option means nothing to logmel
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / ".dvc").mkdir()
    shutil.copy(REPO / ".dvc" / "config", repo / ".dvc" / "config")
    shutil.copy(REPO / ".dvcignore", repo / ".dvcignore")
    run(["git", "init", "-q"], repo)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], repo)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], repo)
    return repo


def test_repro_from_clean_repo_then_incremental(dvc_repo: Path):
    run([sys.executable, "-m", "dvc", "repro"], dvc_repo)
    metrics = json.loads((dvc_repo / "reports/synth/metrics.json").read_text())
    assert set(metrics["models"]) == {"popularity", "itemknn", "bpr"}
    assert metrics["split"]["kind"] == "temporal" and len(metrics["split"]["hash"]) == 64
    assert (dvc_repo / "data/synth/splits/temporal/train.tsv").is_file()
    assert (dvc_repo / "reports/synth/validation.json").is_file()
    for modality in ("text", "image", "audio", "video"):
        assert list((dvc_repo / f"data/synth/features/{modality}").glob("*.parquet")), modality
    assert (dvc_repo / "dvc.lock").is_file()
    features = json.loads((dvc_repo / "reports/synth/features.json").read_text())
    assert features["apply"]["project"] == "mmrec_synth" and (dvc_repo / "data/synth/feast/sqlite/online.db").is_file()

    # nothing changed: only ingest_events runs (always_changed: it snapshots a live event store),
    # and as its snapshot is the same, nothing downstream of it does
    out = run([sys.executable, "-m", "dvc", "repro"], dvc_repo).stdout
    assert ran_stages(out) == {"ingest_events"}, out

    # one evaluate param changed: only evaluate re-runs, with the same models and split
    params = yaml.safe_load((dvc_repo / "params.yaml").read_text())
    params["evaluate"]["ks"] = [5, 20]
    (dvc_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run([sys.executable, "-m", "dvc", "repro"], dvc_repo).stdout
    # materialize reads metrics.json (the best model)
    assert ran_stages(out) == {"ingest_events", "evaluate", "materialize"}, out
    again = json.loads((dvc_repo / "reports/synth/metrics.json").read_text())
    assert "recall@5" in again["models"]["bpr"]["test"]
    assert again["models"]["bpr"]["test"]["recall@20"] == metrics["models"]["bpr"]["test"]["recall@20"]
    shown = run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], dvc_repo).stdout
    assert "recall@20" in shown

    # the dataset's parameter overlay (what `mmrec stage` merges over params.yaml) is a dependency
    overlay = dvc_repo / "params" / "synth.yaml"
    original = overlay.read_text()
    overlay.write_text("train: {params: {bpr: {max_epochs: 2}}}\n")
    status = run([sys.executable, "-m", "dvc", "status", "train"], dvc_repo).stdout
    assert "params/synth.yaml" in status, status
    overlay.write_text(original)
    status = json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], dvc_repo).stdout)
    assert set(status) <= {"ingest_events"}, status  # up to date but for the always-changed snapshot


def ran_stages(out: str) -> set[str]:
    """The stages a `dvc repro` output says it ran."""
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}


def test_push_pull_round_trip(dvc_repo: Path, tmp_path: Path):
    if not (dvc_repo / "dvc.lock").is_file():
        run([sys.executable, "-m", "dvc", "repro"], dvc_repo)
    remote = tmp_path / "remote"
    run([sys.executable, "-m", "dvc", "remote", "add", "-f", "-d", "testremote", str(remote)], dvc_repo)
    run([sys.executable, "-m", "dvc", "push"], dvc_repo)
    raw = dvc_repo / "data/raw/synth/interactions.csv"
    before = raw.read_bytes()
    split_before = (dvc_repo / "data/synth/splits/temporal/test.tsv").read_bytes()
    shutil.rmtree(dvc_repo / ".dvc" / "cache")
    shutil.rmtree(dvc_repo / "data")
    run([sys.executable, "-m", "dvc", "pull"], dvc_repo)
    assert raw.read_bytes() == before
    assert (dvc_repo / "data/synth/splits/temporal/test.tsv").read_bytes() == split_before
    status = json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], dvc_repo).stdout)
    assert set(status) <= {"ingest_events"}, status  # up to date but for the always-changed snapshot
