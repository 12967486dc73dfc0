"""`DELETE /users/{id}` (mmrec/serve/privacy_api.py) and the reload a forget triggers in every worker."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from mmrec.config import load_params
from mmrec.context import StageContext
from mmrec.data.contract import load_dataset_spec
from mmrec.data.warehouse import ingest_dataset
from mmrec.serve.app import create_app
from mmrec.serve.settings import ServeSettings
from mmrec.serve.state import StateHolder
from tests.conftest import FIXTURES
from tests.serving import ListSource, tiny_state

KEY = "s3cret-key"


class WorkspaceSource(ListSource):
    """A ListSource that serves a workspace, as ChampionSource does (`ctx`, `stamp`)."""

    def __init__(self, ctx: StageContext) -> None:
        super().__init__([tiny_state(FIXTURES / "tiny" / "dataset.yaml")])
        self.ctx = ctx
        self.stamp_value = "a"

    def stamp(self) -> str:
        return self.stamp_value


@pytest.fixture
def ctx(tiny_dataset: Path, workspace: Path) -> StageContext:
    c = StageContext(spec=load_dataset_spec(tiny_dataset), params=load_params(None), workspace=workspace)
    ingest_dataset(c.spec, c.paths)
    return c


def test_delete_needs_the_key_forgets_reloads_and_is_idempotent(ctx: StageContext):
    source = WorkspaceSource(ctx)
    holder = StateHolder(source, interval_s=0)
    app = create_app(holder, ServeSettings(log_key="k", api_key=KEY), poll=False)
    with TestClient(app, raise_server_exceptions=False, base_url="http://localhost") as client:
        assert client.delete("/users/u1").status_code == 401  # a key is set: required
        assert "u1" in set(pd.read_parquet(ctx.paths.table("interactions"))["user_id"])
        loads = source.loads
        r = client.delete("/users/u1", headers={"X-API-Key": KEY})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "forgotten" and body["known"] and body["reloaded"] == "loaded"
        assert body["removed"]["warehouse"]["interactions"] > 0
        assert "u1" not in r.text  # the response names the pseudonym, never the id
        assert source.loads == loads + 1  # this process reloaded at once
        assert "u1" not in set(pd.read_parquet(ctx.paths.table("interactions"))["user_id"])
        again = client.delete("/users/u1", headers={"X-API-Key": KEY})
        assert again.status_code == 200 and not again.json()["known"]  # idempotent: a retry is no error
        assert client.delete("/users/a%0Ab", headers={"X-API-Key": KEY}).status_code == 422  # bad ids refused


def test_delete_without_a_workspace_is_501():
    holder = StateHolder(ListSource([tiny_state(FIXTURES / "tiny" / "dataset.yaml")]), interval_s=0)
    app = create_app(holder, ServeSettings(log_key="k"), poll=False)
    with TestClient(app, raise_server_exceptions=False, base_url="http://localhost") as client:
        r = client.delete("/users/u1", headers={"content-type": "application/json"})
        assert r.status_code == 501 and r.json()["error"] == "not_implemented"


def test_a_changed_stamp_reloads_the_same_version(ctx: StageContext):
    """Other workers learn of a forget by polling: same champion version, new forget-list stamp."""
    source = WorkspaceSource(ctx)
    holder = StateHolder(source, interval_s=0)
    assert holder.reload().action == "loaded"
    assert holder.reload().action == "unchanged"
    source.stamp_value = "b"
    assert holder.reload().action == "loaded"
    assert holder.reload().action == "unchanged"
