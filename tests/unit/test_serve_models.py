"""The models page's API: /models, /models/overview and /models/figures/{name}.

The registry reader is replaced by a recording function here (the real MLflow reader runs
against a real registry in tests/integration/test_serve_page.py), except for the cases that
need no MLflow store at all: no store yet, and a tracking server that does not answer.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from mmrec.errors import ServiceUnavailable
from mmrec.serve.app import create_app
from mmrec.serve.overview import ModelsOverview, RegistryMissing, read_registry, run_metrics
from mmrec.serve.settings import ServeSettings
from mmrec.serve.state import StateHolder
from tests.serving import ListSource, tiny_state

KEY = "models-key"

REGISTRY = {
    "registered_model": "mmrec-tiny",
    "metric": "recall@20",
    "aliases": {"champion": "2", "challenger": "3"},
    "versions": [
        {
            "version": "3",
            "model": "bpr",
            "metric": 0.21,
            "decision": "refused",
            "created": "2026-12-06T10:00:00Z",
            "run_id": "r3",
            "aliases": ["challenger"],
        },
        {
            "version": "2",
            "model": "vbpr",
            "metric": 0.25,
            "decision": "promoted",
            "created": "2026-12-05T10:00:00Z",
            "run_id": "r2",
            "aliases": ["champion"],
        },
    ],
    "decisions": [],
    "champion": {
        "version": "2",
        "model": "vbpr",
        "run_id": "r2",
        "trained": "2026-12-05T09:59:00Z",
        "split_hash": "abc",
        "metrics": {"valid": {"recall@20": 0.25}, "test": {"recall@20": 0.22, "ndcg@20": 0.11}},
    },
}


class Reader:
    """A registry reader that records its calls and answers `result` (or raises it)."""

    def __init__(self, result: Any) -> None:
        self.result = result
        self.calls: list[tuple[str, str, str]] = []

    def __call__(self, uri: str, name: str, metric: str) -> dict[str, Any]:
        self.calls.append((uri, name, metric))
        if isinstance(self.result, BaseException):
            raise self.result
        return dict(self.result)


def png(path: Path, size: tuple[int, int] = (40, 30)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(path, format="PNG")


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    """reports/tiny with a metrics.json, two figures and a nightly summary."""
    folder = tmp_path / "ws" / "reports" / "tiny"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(
        json.dumps(
            {
                "dataset": "tiny",
                "split": {"kind": "temporal", "hash": "abcdef0123"},
                "selection_metric": "recall@20",
                "best_model": "vbpr",
                "models": {"vbpr": {"valid": {"recall@20": 0.25}, "test": {"recall@20": 0.22}, "train_seconds": 1.0}},
            }
        )
    )
    png(folder / "figures" / "learning_curves.png")
    png(folder / "figures" / "ablation.png")
    (folder / "recommendations.json").write_text(
        json.dumps(
            {
                "dataset": "tiny",
                "model": {"name": "vbpr", "registered_model": "mmrec-tiny", "version": "2", "alias": "champion"},
                "strategy": "model",
                "k": 20,
                "users": 6,
                "users_covered": 5,
                "users_full": 5,
                "rows": 100,
                "items_recommended": 7,
                "n_items": 8,
                "catalogue_coverage": 0.875,
                "seconds": 0.5,
                "users_per_second": 12.0,
                "path": "/somewhere/secret/latest.parquet",
            }
        )
    )
    (tmp_path / "ws" / "reports" / "tiny" / "secret.json").write_text("{}")  # beside figures/, never served
    return folder


@pytest.fixture(scope="module")
def state():
    from tests.conftest import FIXTURES

    return tiny_state(FIXTURES / "tiny" / "dataset.yaml")


def client_for(state, overview: ModelsOverview | None, api_key: str | None = KEY) -> TestClient:
    app = create_app(
        StateHolder(ListSource([state]), interval_s=0),
        ServeSettings(log_key="k", api_key=api_key),
        poll=False,
        overview=overview,
    )
    return TestClient(app, raise_server_exceptions=False, base_url="http://localhost")


def overview_for(reports: Path, read: Any, uri: str = "sqlite:///nowhere/mlflow.db", **kw: Any) -> ModelsOverview:
    return ModelsOverview("tiny", reports, uri, "mmrec-tiny", "recall@20", read=read, **kw)


def test_overview_json_with_the_api_key(state, reports: Path):
    reader = Reader(REGISTRY)
    with client_for(state, overview_for(reports, reader)) as c:
        assert c.get("/models/overview").status_code == 401
        r = c.get("/models/overview", headers={"X-API-Key": KEY})
    assert r.status_code == 200
    body = r.json()
    assert body["dataset"] == "tiny"
    reg = body["registry"]
    assert reg["status"] == "ok" and reg["aliases"] == {"champion": "2", "challenger": "3"}
    assert [v["version"] for v in reg["versions"]] == ["3", "2"]
    assert reg["champion"]["metrics"]["test"] == {"recall@20": 0.22, "ndcg@20": 0.11}
    assert reader.calls == [("sqlite:///nowhere/mlflow.db", "mmrec-tiny", "recall@20")]
    assert body["report"]["status"] == "ok" and body["report"]["best_model"] == "vbpr"
    assert body["report"]["models"]["vbpr"]["test"] == {"recall@20": 0.22}
    assert [f["name"] for f in body["figures"]] == ["ablation.png", "learning_curves.png"]
    assert body["figures"][1]["url"] == "/models/figures/learning_curves.png"
    nightly = body["nightly"]
    assert nightly["status"] == "ok" and nightly["users"] == 6 and nightly["users_covered"] == 5
    assert nightly["catalogue_coverage"] == 0.875 and nightly["model"]["version"] == "2"
    assert nightly["finished_at"].endswith("Z")
    assert "path" not in nightly  # the server's file paths stay on the server


def test_the_page_is_open_and_its_data_is_not(state, reports: Path):
    with client_for(state, overview_for(reports, Reader(REGISTRY))) as c:
        page = c.get("/models")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert '<script src="/static/models.js"' in page.text
        assert c.get("/static/models.js").status_code == 200
        assert c.get("/models/figures/ablation.png").status_code == 401
        main = c.get("/")
        assert 'href="/models"' in main.text and "/static/why.js" in main.text


def test_no_registry_and_no_report_yet(state, tmp_path: Path):
    """A fresh workspace: no mlflow.db (and none is created by looking), no reports."""
    db = tmp_path / "ws" / "mlflow.db"
    overview = overview_for(tmp_path / "ws" / "reports" / "tiny", read_registry, uri=f"sqlite:///{db}")
    with client_for(state, overview, api_key=None) as c:
        body = c.get("/models/overview").json()
        assert c.get("/models/figures/learning_curves.png").status_code == 404
    assert body["registry"]["status"] == "missing"
    assert "no MLflow registry yet" in body["registry"]["message"] and "mmrec pipeline" in body["registry"]["message"]
    assert body["report"] == {
        "status": "missing",
        "message": "no evaluation report yet: run `mmrec evaluate` or `mmrec pipeline`",
    }
    assert body["nightly"]["status"] == "missing" and "mmrec recommend" in body["nightly"]["message"]
    assert body["figures"] == []
    assert not db.exists()  # reading the page never creates a store


def test_a_server_without_a_workspace_says_so(state):
    with client_for(state, None, api_key=None) as c:
        body = c.get("/models/overview").json()
        assert c.get("/models/figures/ablation.png").status_code == 404
    assert body["registry"]["status"] == "missing" and "without a dataset workspace" in body["registry"]["message"]


def test_an_unreachable_tracking_server_is_reported_at_once():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(ServiceUnavailable, match="does not answer"):
        read_registry(f"http://127.0.0.1:{port}", "mmrec-tiny", "recall@20")


def test_registry_errors_are_shown_scrubbed(state, reports: Path):
    down = ServiceUnavailable(
        "mlflow", "x", "the MLflow tracking server http://bob:hunter2@10.0.0.5:5000 does not answer"
    )
    with client_for(state, overview_for(reports, Reader(down)), api_key=None) as c:
        reg = c.get("/models/overview").json()["registry"]
    assert reg["status"] == "unavailable" and "does not answer" in reg["message"]
    assert "hunter2" not in reg["message"]
    with client_for(state, overview_for(reports, Reader(RuntimeError("boom /etc/secret/path"))), api_key=None) as c:
        reg = c.get("/models/overview").json()["registry"]
    assert reg["status"] == "unavailable" and "RuntimeError" in reg["message"] and "/etc" not in reg["message"]


def test_registry_answers_are_cached_for_the_ttl_failures_included(reports: Path):
    now = [100.0]
    reader = Reader(REGISTRY)
    overview = overview_for(reports, reader, ttl_s=30.0, clock=lambda: now[0])
    assert overview.overview()["registry"]["status"] == "ok"
    now[0] += 29.0
    overview.overview()
    assert len(reader.calls) == 1  # within the TTL: no second query
    now[0] += 2.0
    reader.result = RegistryMissing("no MLflow registry yet")
    assert overview.overview()["registry"]["status"] == "missing"
    assert len(reader.calls) == 2
    now[0] += 10.0
    assert overview.overview()["registry"]["status"] == "missing" and len(reader.calls) == 2


def test_figures_are_served_from_the_figures_folder_only(state, reports: Path, tmp_path: Path):
    outside = tmp_path / "outside.png"
    png(outside)
    os.symlink(outside, reports / "figures" / "escape.png")  # a symlink out of the folder
    (reports / "figures" / "page.png").write_text("<html><script>alert(1)</script></html>")  # not a PNG
    png(reports / "figures" / ".hidden.png")
    with client_for(state, overview_for(reports, Reader(REGISTRY))) as c:
        auth = {"X-API-Key": KEY}
        ok = c.get("/models/figures/learning_curves.png", headers=auth)
        assert ok.status_code == 200 and ok.headers["content-type"] == "image/png"
        assert ok.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert ok.headers["content-security-policy"] == "default-src 'none'; sandbox"
        for bad in (
            "..%2Fsecret.json",
            "..%2F..%2F..%2Fmetrics.json",
            "%2E%2E%2Fmetrics.json",
            "escape.png",
            "page.png",
            ".hidden.png",
            "learning_curves.PNG.json",
            "missing.png",
            "%2E%2E",
            "%2Fetc%2Fpasswd",
        ):
            r = c.get(f"/models/figures/{bad}", headers=auth)
            assert r.status_code == 404, (bad, r.status_code, r.text)
            assert r.headers["content-type"] == "application/json" and r.json()["error"] == "not_found"
        r = c.get(
            "/models/figures/../metrics.json", headers=auth
        )  # a client normalising `..` asks for /models/metrics.json
        assert r.status_code == 404
        listed = [f["name"] for f in c.get("/models/overview", headers=auth).json()["figures"]]
    assert ".hidden.png" not in listed and "escape.png" in listed  # listed by name, refused when read


def test_unreadable_report_files_name_the_file(state, reports: Path):
    (reports / "metrics.json").write_text("{not json")
    (reports / "recommendations.json").write_text("[1, 2]")
    with client_for(state, overview_for(reports, Reader(REGISTRY)), api_key=None) as c:
        body = c.get("/models/overview").json()
    assert body["report"]["status"] == "unreadable" and "metrics.json is not valid JSON" in body["report"]["message"]
    assert (
        body["nightly"]["status"] == "unreadable"
        and "recommendations.json does not hold a JSON object" in body["nightly"]["message"]
    )


def test_run_metrics_groups_a_runs_metrics_by_part():
    got = run_metrics(
        {
            "valid_recall_at_20": 0.3,
            "test_ndcg_at_10": 0.1,
            "cold_hit_at_20": 0.05,
            "train_seconds": 2.0,
            "epoch_loss": 0.7,
            "epochs": 5.0,
            "sparse_coverage_at_20": 0.4,
        }
    )
    assert got == {
        "valid": {"recall@20": 0.3},
        "test": {"ndcg@10": 0.1},
        "cold": {"hit@20": 0.05},
        "sparse": {"coverage@20": 0.4},
        "training": {"epochs": 5.0, "train_seconds": 2.0},
    }


def test_the_openapi_spec_marks_the_data_routes_as_keyed(state, reports: Path):
    with client_for(state, overview_for(reports, Reader(REGISTRY))) as c:
        spec = c.get("/openapi.json").json()
    assert spec["paths"]["/models/overview"]["get"]["security"] == [{"apiKey": []}]
    assert "/models/figures/{name}" in spec["paths"] and "/models" not in spec["paths"]
