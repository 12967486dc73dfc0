"""One id rule for the data contract and the API (mmrec/ids.py), tested at both ends with one list.

A generated dataset whose users and items carry real-world ids (`jane doe`, `sku/004`, `a?b#c`,
`john+doe@example.com`, unicode, `%2F`) goes through ingest and validation; every id validation
accepts is then asked for over HTTP, percent-encoded by the server's own `image_url`s, by
`id_segment` and by the page's `encodeURIComponent` (run in node), and answers 200. The ids that
cannot be carried by a URL (control characters, `..`, overlong) are quarantined by validation
with the shared rule's reason, and the API refuses them with the same reason (422).
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmrec.config import Params
from mmrec.constants import ITEM_ID, REASON, USER_ID
from mmrec.data.contract import load_dataset_spec
from mmrec.ids import ID_MAX_LENGTH, id_problem, id_segment
from mmrec.stages import StageContext, run_stage
from tests.conftest import FIXTURES

#: ids real catalogues have; the pipeline accepts them, so the API must serve them
ACCEPTED = [
    "jane doe",
    "sku/004",
    "a?b#c",
    "john+doe@example.com",
    "münchen-01 😀",
    "%2F",
    "100%",
    "a;b=c&d",
    "..a",
    "two  spaces",
    "<script>",
    "C:\\x",
]
#: ids no URL can carry faithfully (or that forge log lines): quarantined and refused, same reason
REFUSED = {
    "..": "path navigation segment",
    ".": "path navigation segment",
    "bell\x07": "control character U+0007",
    "esc\x1b[31m": "control character U+001B",
    "x" * (ID_MAX_LENGTH + 1): "characters long",
}

SPEC = """name: idz
interactions:
  path: interactions.csv
  columns: {user_id: user, item_id: item, timestamp: ts}
items:
  path: items.csv
  columns: {item_id: id}
  text_fields: {title: title}
  media: {image: picture}
"""


def test_the_rule():
    for value in ACCEPTED:
        assert id_problem(value) is None, value
    for value, why in REFUSED.items():
        assert why in (id_problem(value) or ""), value
    assert "empty" in id_problem("")
    assert id_segment("sku/004") == "sku%2F004" and id_segment("a?b#c") == "a%3Fb%23c" and id_segment("%2F") == "%252F"


def _write_dataset(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "img").mkdir()
    shutil.copy(FIXTURES / "tiny" / "img" / "i1.png", root / "img" / "p.png")
    ids = ACCEPTED + list(REFUSED)
    with (root / "items.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "title", "picture"])
        w.writerow(["plain", "Plain item", "img/p.png"])
        for n, item in enumerate(ids):
            w.writerow([item, f"Item {n}", "img/p.png"])
    with (root / "interactions.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["user", "item", "ts"])
        for n, user in enumerate(ids):
            w.writerow([user, "plain", 1_600_000_000 + n])
            w.writerow([user, ACCEPTED[n % len(ACCEPTED)], 1_600_000_100 + n])
    (root / "dataset.yaml").write_text(SPEC, encoding="utf-8")
    return root / "dataset.yaml"


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory) -> StageContext:
    tmp = tmp_path_factory.mktemp("ids")
    spec = load_dataset_spec(_write_dataset(tmp / "raw"))
    params = Params.model_validate({"validate": {"max_quarantine_fraction": 0.9}})
    ctx = StageContext(spec=spec, params=params, workspace=tmp / "ws")
    run_stage("ingest", ctx)
    run_stage("validate", ctx)
    return ctx


def test_validation_quarantines_exactly_the_ids_the_rule_refuses(validated: StageContext):
    items = pd.read_parquet(validated.paths.validated_table("items"))
    inter = pd.read_parquet(validated.paths.validated_table("interactions"))
    assert set(items[ITEM_ID]) == {"plain", *ACCEPTED}
    assert set(inter[USER_ID]) == set(ACCEPTED)
    report = json.loads(validated.paths.validation_report.read_text())
    text = json.dumps(report)
    assert "item_id_usable" in text and "user_id_usable" in text
    frames = [pd.read_parquet(validated.paths.quarantine_table(t)) for t in ("items", "interactions")]
    reasons = " | ".join(r for df in frames for r in df[REASON].astype(str))
    for why in REFUSED.values():
        assert "cannot be used as an id: " in reasons and why in reasons, why


def _client(validated: StageContext):
    from fastapi.testclient import TestClient

    from mmrec.serve.app import create_app
    from mmrec.serve.catalog import load_catalog
    from mmrec.serve.loader import build_indexes
    from mmrec.serve.settings import ServeSettings
    from mmrec.serve.state import ServingState, StateHolder
    from tests.serving import DictRecs, ListSource

    catalog = load_catalog(validated.paths, validated.spec.root_path)
    item_ids = catalog.item_ids
    vectors = np.random.default_rng(0).normal(size=(len(item_ids), 4)).astype(np.float32)
    recs = DictRecs({u: [(ACCEPTED[(n + 1) % len(ACCEPTED)], 1.0), ("plain", 0.5)] for n, u in enumerate(ACCEPTED)})
    state = ServingState(version="1", catalog=catalog, recs=recs, similar=build_indexes({"text": (item_ids, vectors)}))
    holder = StateHolder(ListSource([state]), interval_s=0)
    return TestClient(
        create_app(holder, ServeSettings(log_key="k"), poll=False),
        base_url="http://localhost",
        raise_server_exceptions=False,
    )


def _encode_uri_component(values: list[str]) -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the page's encodeURIComponent is checked with it)")
    script = (
        "const v=JSON.parse(require('fs').readFileSync(0,'utf8'));"
        "process.stdout.write(JSON.stringify(v.map(encodeURIComponent)))"
    )
    out = subprocess.run([node, "-e", script], input=json.dumps(values), capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_the_api_serves_every_id_validation_accepts(validated: StageContext):
    with _client(validated) as client:
        listed = {u["user_id"] for u in client.get("/users?limit=500").json()["users"]}
        assert listed == set(ACCEPTED)
        for user, page_seg in zip(ACCEPTED, _encode_uri_component(ACCEPTED), strict=True):
            for seg in (id_segment(user), page_seg):  # the server's encoding and the page's
                r = client.get(f"/users/{seg}/recommendations?k=2")
                assert r.status_code == 200, (user, seg, r.text)
                body = r.json()
                assert body["user_id"] == user and body["source"] == "precomputed"
                for item in body["items"]:
                    img = client.get(item["image_url"])  # built by the server, encoded
                    assert img.status_code == 200 and img.headers["content-type"] == "image/png", item
                    assert client.get(f"/items/{id_segment(item['item_id'])}").json()["item_id"] == item["item_id"]
                hist = client.get(f"/users/{seg}/history")
                assert hist.status_code == 200 and hist.json()["user_id"] == user
        for item, page_seg in zip(ACCEPTED, _encode_uri_component(ACCEPTED), strict=True):
            r = client.get(f"/items/{page_seg}/similar?k=2&modality=text")
            assert r.status_code == 200 and r.json()["item_id"] == item, (item, r.text)
        r = client.post("/recommendations", json={"item_ids": ACCEPTED[:3]})
        assert r.status_code == 409  # no model in this state: the ids themselves were accepted


def test_the_api_refuses_the_ids_validation_quarantines_with_the_same_reason(validated: StageContext):
    with _client(validated) as client:
        for user, why in REFUSED.items():
            if user in (".", ".."):
                continue  # HTTP clients remove these segments before sending (that is why they are refused)
            r = client.get(f"/users/{id_segment(user)}/history")
            assert r.status_code == 422, (user, r.text)
            assert why in json.dumps(r.json()["detail"]) or "string_too_long" in r.text or "pattern" in r.text
            r = client.post("/recommendations", json={"item_ids": [user]})
            assert r.status_code == 422 and r.json()["error"] == "invalid_request"
        # a raw client can send an encoded `..` segment: refused with the rule's reason
        r = client.post("/recommendations", json={"item_ids": [".."]})
        assert r.status_code == 422 and "path navigation" in r.text
