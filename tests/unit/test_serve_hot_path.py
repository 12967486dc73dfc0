"""The fast user-recommendations route answers exactly what the FastAPI route answers.

Every request is sent to two apps over the same state: the served one (fast route in front) and
one with the fast route taken out (FastAPI alone); status, body and content type must be equal,
and the fast route must have answered the valid requests itself and handed the rest over.
"""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from mmrec.serve import hot_path
from mmrec.serve.app import create_app
from mmrec.serve.settings import MAX_K, ServeSettings
from mmrec.serve.state import StateHolder
from tests.conftest import FIXTURES
from tests.serving import ListSource, tiny_state

TINY = FIXTURES / "tiny" / "dataset.yaml"

VALID = [
    "/users/u1/recommendations",
    "/users/u1/recommendations?k=1",
    "/users/u2/recommendations?k=5",
    "/users/u3/recommendations?k=100",
    "/users/u6/recommendations?k=2",
    "/users/nobody/recommendations?k=3",
]
HANDED_OVER = [
    "/users/u1/recommendations?k=0",
    "/users/u1/recommendations?k=101",
    "/users/u1/recommendations?k=x",
    "/users/u1/recommendations?k=01",
    "/users/u1/recommendations?k=3&k=4",
    "/users/u1/recommendations?k=3&other=1",
    "/users/u1/recommendations?k=",
    "/users/%01/recommendations",
    "/users/" + "a" * 300 + "/recommendations",
    "/users/u1/recommendations?k=%203",
]


@pytest.fixture(scope="module")
def clients():
    state = tiny_state(TINY)
    made = []
    for fast in (True, False):
        app = create_app(StateHolder(ListSource([state]), interval_s=0), ServeSettings(log_key="k"), poll=False)
        if not fast:
            app.router.routes[:] = [
                r for r in app.router.routes if not isinstance(getattr(r, "app", None), hot_path.FastRecommendations)
            ]
        made.append(TestClient(app, raise_server_exceptions=False, base_url="http://localhost"))
    with made[0] as fast_client, made[1] as slow_client:
        yield fast_client, slow_client


@pytest.mark.parametrize("url", VALID + HANDED_OVER)
def test_fast_route_answers_what_fastapi_answers(clients, monkeypatch, url):
    fast_client, slow_client = clients
    answered: list[str] = []
    original = hot_path.json_response
    monkeypatch.setattr(hot_path, "json_response", lambda body: answered.append(url) or original(body))
    got, want = fast_client.get(url), slow_client.get(url)
    assert (got.status_code, got.headers["content-type"], got.content) == (
        want.status_code,
        want.headers["content-type"],
        want.content,
    )
    assert answered == ([url] if url in VALID and got.status_code == 200 else [])


def test_fast_route_hands_over_head_and_unknown_users_keep_the_404_body(clients):
    fast_client, slow_client = clients
    for method in ("HEAD", "POST"):
        got, want = (
            fast_client.request(method, "/users/u1/recommendations"),
            slow_client.request(method, "/users/u1/recommendations"),
        )
        assert (got.status_code, got.content) == (want.status_code, want.content)
    got = fast_client.get("/users/nobody/recommendations?k=3")
    assert got.status_code == 404 and got.json()["id"] == "nobody"
    for bad in ("k=0", "k=101", "k=x"):  # FastAPI's own validation error body
        got = fast_client.get(f"/users/u1/recommendations?{bad}")
        assert got.status_code == 422 and got.json()["error"] == "invalid_request"


def test_fast_k_and_id_checks_are_never_looser():
    assert hot_path.fast_k(b"", 10, MAX_K) == 10 and hot_path.fast_k(b"k=100", 10, MAX_K) == 100
    for q in (b"k=0", b"k=101", b"k=1000", b"k=-1", b"k=+1", b"k=1&k=2", b"kk=1", b"k=1 "):
        assert hot_path.fast_k(q, 10, MAX_K) is None
    assert hot_path.fast_user_id("u1") and hot_path.fast_user_id("sku/004")
    assert (
        not hot_path.fast_user_id("a\x01b") and not hot_path.fast_user_id("") and not hot_path.fast_user_id("a" * 1000)
    )


def test_openapi_lists_the_route_once(clients):
    spec = clients[0].get("/openapi.json").json()
    assert spec == clients[1].get("/openapi.json").json()
