"""The HTTP API on the tiny fixture: every endpoint, bad input, the API key, logs and reloads."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from mmrec.serve.app import create_app, scrub
from mmrec.serve.catalog import Catalog, inside
from mmrec.serve.security import log_path, pseudonymise
from mmrec.serve.settings import ServeSettings
from mmrec.serve.state import StateHolder
from tests.conftest import FIXTURES
from tests.serving import PRECOMPUTED_U1, ListSource, tiny_state

LOG_KEY = "test-log-key"


TINY = FIXTURES / "tiny" / "dataset.yaml"  # only read (catalogue, media), so shared by the module


@pytest.fixture(scope="module")
def state():
    return tiny_state(TINY)  # immutable: tests derive variants with dataclasses.replace


def client_for(state, **settings) -> TestClient:
    holder = StateHolder(ListSource([state]), interval_s=0)
    app = create_app(holder, ServeSettings(log_key=LOG_KEY, **settings), poll=False)
    return TestClient(app, raise_server_exceptions=False, base_url="http://localhost")


@pytest.fixture
def client(state):
    with client_for(state) as c:
        yield c


def test_probes_and_openapi(client: TestClient):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["status"] == "ready" and ready["version"] == "1" and ready["modalities"] == ["fused", "image", "text"]
    spec = client.get("/openapi.json").json()
    for path in (
        "/users/{user_id}/recommendations",
        "/recommendations",
        "/items/{item_id}/similar",
        "/users/{user_id}/recommendations/{item_id}/explain",
        "/health",
        "/ready",
    ):
        assert path in spec["paths"], path


def test_precomputed_then_live_model_scoring(client: TestClient, state):
    body = client.get("/users/u1/recommendations?k=1").json()
    assert body["source"] == "precomputed"
    assert [(i["item_id"], i["score"]) for i in body["items"]] == [("i8", pytest.approx(0.9))]
    assert body["items"][0]["title"] == "Item 8" and body["items"][0]["rank"] == 1
    # k beyond the stored list, but u1 has no other unseen item: the stored list is complete
    body = client.get("/users/u1/recommendations?k=5").json()
    assert body["source"] == "precomputed" and [i["item_id"] for i in body["items"]] == [i for i, _ in PRECOMPUTED_U1]
    # u2's stored list is shorter than k and the model can rank more: scored live, seen items masked
    body = client.get("/users/u2/recommendations?k=5").json()
    assert body["source"] == "model" and len(body["items"]) == 2
    # u3 is in the model but has no stored list
    body = client.get("/users/u3/recommendations?k=5").json()
    assert body["source"] == "model"
    seen = set(state.catalog.history("u3"))
    assert len(body["items"]) == 8 - len(seen) and not seen & {i["item_id"] for i in body["items"]}
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    expected = state.model.score([state.user_pos["u3"]])[0]
    best_unseen = max((float(expected[state.item_pos[i]]), i) for i in state.item_pos if i not in seen)
    assert body["items"][0]["score"] == pytest.approx(best_unseen[0], abs=1e-5)


def test_users_unknown_to_the_model(client: TestClient, state):
    body = client.get("/users/u6/recommendations?k=2").json()  # has interactions, not in the model
    assert body["source"] == "history" and len(body["items"]) == 2
    assert not set(state.catalog.history("u6")) & {i["item_id"] for i in body["items"]}
    body = client.get("/users/u7/recommendations").json()  # known, no interactions: popularity
    assert body["source"] == "fallback" and body["items"]
    r = client.get("/users/nobody/recommendations")
    assert r.status_code == 404
    assert r.json() == {"error": "not_found", "detail": r.json()["detail"], "kind": "user", "id": "nobody"}
    assert "nobody" in r.json()["detail"]


def test_session_recommendations(client: TestClient, state):
    r = client.post("/recommendations", json={"item_ids": ["i1", "i2"], "k": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source"] == "session" and len(body["items"]) == 4
    assert not {"i1", "i2"} & {i["item_id"] for i in body["items"]}
    # the same history through the model directly gives the same ranking
    scores = state.model.score_history([[state.item_pos["i1"], state.item_pos["i2"]]])[0]
    best = [state.model.item_ids[j] for j in scores.argsort()[::-1] if state.model.item_ids[j] not in ("i1", "i2")]
    assert body["items"][0]["item_id"] == best[0]
    r = client.post("/recommendations", json={"item_ids": ["i1", "nope"]})
    assert r.status_code == 404 and r.json()["kind"] == "item" and "'nope'" in r.json()["detail"]


def test_similar_items_per_modality(client: TestClient):
    body = client.get("/items/i1/similar?k=3&modality=text").json()
    assert body["modality"] == "text" and len(body["items"]) == 3 and "i1" not in [i["item_id"] for i in body["items"]]
    image = client.get("/items/i1/similar?modality=image").json()["items"]
    assert {i["item_id"] for i in image} == {"i2", "i3"}  # only items with a picture have image vectors
    assert client.get("/items/i5/similar?modality=fused").status_code == 200
    r = client.get("/items/i5/similar?modality=image")
    assert r.status_code == 404 and "no image embedding" in r.json()["detail"]
    r = client.get("/items/i1/similar?modality=audio")
    assert r.status_code == 404 and r.json()["kind"] == "modality"
    assert client.get("/items/i1/similar?modality=smell").status_code == 422
    assert client.get("/items/zzz/similar").status_code == 404


def test_explain(client: TestClient):
    r = client.get("/users/u1/recommendations/i8/explain")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user_id"] == "u1" and body["item_id"] == "i8" and "collaborative" in body["contributions"]
    assert sum(body["contributions"].values()) == pytest.approx(body["score"], abs=1e-5)
    assert all("title" in s for s in body["supporting_items"])
    assert client.get("/users/u1/recommendations/nope/explain").status_code == 404
    assert client.get("/users/ghost/recommendations/i1/explain").status_code == 404


def test_page_data_endpoints_and_media(client: TestClient):
    users = client.get("/users?prefix=u&limit=3").json()
    assert [u["user_id"] for u in users["users"]] == ["u1", "u2", "u3"] and users["total"] == 7
    hist = client.get("/users/u1/history?limit=2").json()
    assert hist["total"] == 6 and len(hist["items"]) == 2
    item = client.get("/items/i1").json()
    assert item == {"item_id": "i1", "title": "Item 1", "image_url": "/media/items/i1/image", "media": ["image"]}
    img = client.get(item["image_url"])
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    assert img.content == (TINY.parent / "img" / "i1.png").read_bytes()
    assert client.get("/media/items/i5/image").status_code == 404  # no picture
    assert client.get("/media/items/i1/passwd").status_code == 422
    for evil in (
        "/media/items/..%2F..%2Fetc%2Fpasswd/image",
        "/media/items/../../etc/passwd/image",
        "/static/../app.py",
    ):
        r = client.get(evil)
        assert r.status_code in (404, 422) and b"root:" not in r.content and b"import" not in r.content
    page = client.get("/")
    assert page.status_code == 200 and "<script" in page.text and "content-security-policy" in page.headers


def test_catalogue_never_resolves_media_outside_the_dataset(tmp_path: Path):
    root = tmp_path / "ds"
    (root / "img").mkdir(parents=True)
    (root / "img" / "ok.png").write_bytes(b"png")
    (tmp_path / "secret.txt").write_text("secret")
    (root / "img" / "link.png").symlink_to(tmp_path / "secret.txt")
    assert inside(root, "img/ok.png") == (root / "img" / "ok.png").resolve()
    for bad in (
        "../secret.txt",
        str(tmp_path / "secret.txt"),
        "img/link.png",
        "http://x/y.png",
        "",
        None,
        "img/missing.png",
    ):
        assert inside(root, bad) is None, bad
    import pandas as pd

    cat = Catalog(pd.DataFrame({"item_id": ["a", "b"], "image": ["../secret.txt", "img/ok.png"]}), root=root)
    assert cat.item("a").media == {} and "image" in cat.item("b").media


def test_bad_input_is_422_and_never_leaks(client: TestClient):
    cases = [
        client.get("/users/" + "x" * 300 + "/recommendations"),
        client.get("/users/bad%0Aid/recommendations"),  # control characters are never ids (mmrec/ids.py)
        client.get("/users/u1/recommendations?k=0"),
        client.get("/users/u1/recommendations?k=101"),
        client.get("/users/u1/recommendations?k=abc"),
        client.post("/recommendations", content=b"{not json", headers={"content-type": "application/json"}),
        client.post("/recommendations", json={"item_ids": []}),
        client.post("/recommendations", json={"item_ids": ["i1"], "k": 10_000}),
        client.post("/recommendations", json={"item_ids": ["a\x00b"]}),
        client.post("/recommendations", json={"item_ids": [".."]}),
        client.post("/recommendations", json={"item_ids": ["i1"] * 201}),
        client.post("/recommendations", json={"item_ids": ["i1"], "extra": 1}),
    ]
    for r in cases:
        assert r.status_code == 422, (r.request.url, r.text)
        body = r.json()
        assert body["error"] == "invalid_request" and body["detail"]
        assert "Traceback" not in r.text and "/work" not in r.text and ".py" not in r.text


def test_body_size_limit(state):
    with client_for(state, max_body_bytes=1024) as c:
        r = c.post("/recommendations", json={"item_ids": ["i1234567"] * 150})  # 1.6 kB
        assert r.status_code == 413 and r.json()["error"] == "too_large"

        def chunks():  # no content-length: counted while streaming
            for _ in range(20):
                yield b" " * 100

        r = c.post("/recommendations", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413


def test_internal_errors_hide_details(state, caplog):
    class Broken:
        def get(self, user_id):
            raise RuntimeError("secret /srv/mmrec/online_store.db exploded")

    from dataclasses import replace

    with client_for(replace(state, recs=Broken())) as c, caplog.at_level(logging.ERROR):
        r = c.get("/users/u1/recommendations")
    assert r.status_code == 500
    assert r.json()["error"] == "internal" and "secret" not in r.text and "/srv" not in r.text
    assert r.json()["detail"].endswith(r.headers["x-request-id"])
    assert "exploded" in caplog.text  # the details are in the server log
    assert scrub("cannot open /home/me/data/x.parquet now") == "cannot open <path> now"


def test_api_key(state):
    with client_for(state, api_key="s3cret") as c:
        assert c.get("/health").status_code == 200 and c.get("/ready").status_code == 200
        assert c.get("/").status_code == 200
        for path in (
            "/users/u1/recommendations",
            "/items/i1/similar",
            "/users",
            "/items/i1",
            "/media/items/i1/image",
            "/users/u1/history",
        ):
            r = c.get(path)
            assert r.status_code == 401 and r.json()["error"] == "unauthorized", path
            assert c.get(path, headers={"X-API-Key": "wrong"}).status_code == 401
            assert c.get(path, headers={"X-API-Key": "s3cret"}).status_code == 200, path
        assert c.post("/recommendations", json={"item_ids": ["i1"]}).status_code == 401
        assert c.post("/admin/reload", json={}).status_code == 401
        assert c.post("/session").status_code == 401  # the session cookie is only traded for the key
        c.cookies.set("mmrec_session", "s3cret")  # the raw key is not a session
        assert c.get("/media/items/i1/image").status_code == 401
        c.cookies.clear()
        r = c.post("/session", headers={"X-API-Key": "s3cret"})
        assert r.status_code == 204
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "s3cret" not in cookie
        assert c.get("/media/items/i1/image").status_code == 200  # <img> requests: the cookie suffices


def test_logs_pseudonymise_user_ids(client: TestClient, caplog):
    with caplog.at_level(logging.INFO, logger="mmrec.serve.access"):
        client.get("/users/u1/recommendations")
        client.get("/users/secret-user-42/recommendations/i1/explain")
    text = caplog.text
    assert "u1" not in text and "secret-user-42" not in text
    assert pseudonymise("u1", LOG_KEY) in text and "/explain" in text
    assert pseudonymise("u1", LOG_KEY) != pseudonymise("u1", "other-key")
    assert log_path("/users/a/history", LOG_KEY) == f"/users/{pseudonymise('a', LOG_KEY)}/history"


def test_reload_swaps_state_without_failing_requests(state):
    from dataclasses import replace

    v1 = state
    v2 = replace(v1, version="2")
    source = ListSource([v1, v2])
    holder = StateHolder(source, interval_s=0)
    app = create_app(holder, ServeSettings(log_key=LOG_KEY), poll=False)
    statuses: list[int] = []
    versions: set[str] = set()
    stop = threading.Event()
    with TestClient(app, base_url="http://localhost") as c:
        assert c.get("/ready").json()["version"] == "1"
        assert c.post("/admin/reload", json={}).json()["action"] == "unchanged"

        def hammer() -> None:
            while not stop.is_set():
                r = c.get("/users/u1/recommendations?k=3")
                statuses.append(r.status_code)
                versions.add(r.json()["version"])

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        source.advance()
        result = c.post("/admin/reload", json={}).json()
        for _ in range(20):
            c.get("/health")
        stop.set()
        for t in threads:
            t.join()
        assert result == {"action": "loaded", "version": "2", "previous": "1", "seconds": result["seconds"]}
        assert c.get("/ready").json()["version"] == "2"
    assert statuses and set(statuses) == {200}
    assert versions <= {"1", "2"} and "2" in versions
    assert source.loads == 2


def test_background_poll_picks_up_a_new_champion_and_survives_failures(state):
    from dataclasses import replace

    v1 = state
    source = ListSource([v1, replace(v1, version="2")])
    holder = StateHolder(source, interval_s=0.05)
    holder.reload()
    holder.start()
    try:
        source.advance()
        for _ in range(100):
            if holder.state.version == "2":
                break
            threading.Event().wait(0.05)
        assert holder.state.version == "2"
    finally:
        holder.stop()

    class Failing(ListSource):
        def load(self):
            raise OSError("registry down")

    failing = Failing([v1, replace(v1, version="3")])
    holder = StateHolder(failing, interval_s=0)
    holder._state = v1  # serving v1 already
    failing.advance()  # the registry now names v3, whose load breaks
    result = holder.reload()
    assert result.action == "failed" and "registry down" in result.error
    assert holder.state is v1 and "registry down" in holder.last_error


def test_top_orders_by_score_then_lower_index():
    import numpy as np

    from mmrec.serve.service import _top

    rng = np.random.default_rng(1)
    for _ in range(20):
        row = rng.integers(0, 5, size=40).astype(np.float32)  # many ties
        exclude = rng.choice(40, size=6, replace=False)
        idx, val = _top(row, 7, exclude)
        masked = row.copy()
        masked[exclude] = -np.inf
        ref = sorted(range(40), key=lambda j: (-masked[j], j))[:7]  # by score, ties by lower index
        assert idx.tolist() == ref and np.array_equal(val, masked[ref])
    idx, _ = _top(np.ones(3, np.float32), 10, [0, 1, 2])
    assert len(idx) == 0  # everything masked: nothing, never a masked item


@pytest.mark.integration  # creates an MLflow store: tens of seconds on a busy 2-core box
def test_serve_command_fails_clearly_without_a_champion(tiny_dataset: Path, workspace: Path):
    from typer.testing import CliRunner

    from mmrec.cli import app

    result = CliRunner().invoke(app, ["serve", "--dataset", str(tiny_dataset), "--workspace", str(workspace)])
    assert result.exit_code == 2
    assert "champion" in result.output and "mmrec pipeline" in result.output
