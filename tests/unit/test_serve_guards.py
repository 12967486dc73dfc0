"""The API's guards against hostile input and the browser (issue 12): each test one attack.

Media typed by content with a CSP, symlink swaps, the one image pixel limit, the Host allow-list,
cross-site POSTs, HEAD, caching with a key, log injection, credentials in messages, strict body
types, every Cookie header, local docs assets, and the attacks tried beyond the issue's list
(encoded dots, huge queries, oversized bodies, odd k values, header tricks).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import struct
import zlib
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from mmrec.constants import MAX_IMAGE_PIXELS
from mmrec.serve.app import create_app, scrub
from mmrec.serve.catalog import Catalog
from mmrec.serve.guards import host_allowed, host_name
from mmrec.serve.settings import ServeSettings
from mmrec.serve.state import StateHolder
from tests.serving import ListSource, tiny_state

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x40\x1f\x00\x00\x80\x3e\x00\x00\x02\x00\x10\x00data\x00\x00\x00\x00"


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header announces width x height, with one tiny (truncated) data chunk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))


@pytest.fixture
def media_root(tmp_path: Path, tiny_dataset: Path) -> Path:
    """A dataset folder with hostile media: a PNG named .html, HTML named .png, a huge image, audio."""
    root = tmp_path / "media"
    root.mkdir()
    png = (tiny_dataset.parent / "img" / "i1.png").read_bytes()
    (root / "pic.html").write_bytes(png)  # decodes as PNG, named like a page
    (root / "page.png").write_bytes(b"<html><script>alert(document.cookie)</script></html>")
    (root / "huge.png").write_bytes(png_header(10_000, 10_000))  # 1.1x the limit: Pillow itself only warns
    (root / "ok.png").write_bytes(png)
    (root / "swap.png").write_bytes(png)
    (root / "clip.wav").write_bytes(WAV)
    (root / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom")
    (root / "fake.wav").write_bytes(b"<svg onload=alert(1)>")
    return root


def media_client(root: Path, state, **settings) -> TestClient:
    items = pd.DataFrame(
        {
            "item_id": ["html", "page", "huge", "ok", "swap", "clip", "film", "fake"],
            "text_title": ["t"] * 8,
            "image": ["pic.html", "page.png", "huge.png", "ok.png", "swap.png", None, None, None],
            "audio": [None, None, None, None, None, "clip.wav", None, "fake.wav"],
            "video": [None, None, None, None, None, None, "clip.mp4", None],
        }
    )
    catalog = Catalog(items, root=root)
    holder = StateHolder(ListSource([dataclasses.replace(state, catalog=catalog)]), interval_s=0)
    return TestClient(
        create_app(holder, ServeSettings(log_key="k", **settings), poll=False),
        base_url="http://localhost",
        raise_server_exceptions=False,
    )


@pytest.fixture(scope="module")
def state():
    from tests.conftest import FIXTURES

    return tiny_state(FIXTURES / "tiny" / "dataset.yaml")


@pytest.fixture
def client(state):
    holder = StateHolder(ListSource([state]), interval_s=0)
    with TestClient(
        create_app(holder, ServeSettings(log_key="k"), poll=False),
        base_url="http://localhost",
        raise_server_exceptions=False,
    ) as c:
        yield c


# -- media (items 4, 8, 9) ---------------------------------------------------------------------
def test_media_is_typed_by_its_content_never_html(media_root: Path, state):
    with media_client(media_root, state) as c:
        r = c.get("/media/items/html/image")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"  # not text/html
        assert r.headers["content-security-policy"] == "default-src 'none'; sandbox"
        assert r.headers["x-content-type-options"] == "nosniff"
        r = c.get("/media/items/page/image")  # markup named .png: not served at all
        assert r.status_code == 404 and "not a recognised image" in r.json()["detail"] and "<script>" not in r.text
        assert c.get("/media/items/clip/audio").headers["content-type"] == "audio/wav"
        assert c.get("/media/items/film/video").headers["content-type"] == "video/mp4"
        r = c.get("/media/items/fake/audio")
        assert r.status_code == 404 and "not a recognised audio format" in r.json()["detail"]


def test_images_above_the_one_pixel_limit_are_not_served_nor_validated(media_root: Path, state):
    from mmrec.validation.media import check_file

    assert MAX_IMAGE_PIXELS < 10_000 * 10_000
    with media_client(media_root, state) as c:
        r = c.get("/media/items/huge/image")
        assert r.status_code == 404 and "10000x10000 pixels, above the limit of 89,478,485" in r.json()["detail"]
    # validation refuses it from the header (a full decode would fail on the truncated data instead)
    check, reason = check_file(media_root / "huge.png", "image", "huge.png")
    assert check == "media_decodes" and "10000x10000 = 100,000,000 pixels, above the limit of 89,478,485" in reason
    assert check_file(media_root / "ok.png", "image", "ok.png") is None
    # a lower configured limit applies to both ends
    check, reason = check_file(media_root / "ok.png", "image", "ok.png", max_pixels=10)  # 8x8
    assert "above the limit of 10 " in reason


def test_extraction_uses_the_same_limit():
    from mmrec.config import Params
    from mmrec.encoders.image import DEFAULT_MAX_PIXELS

    assert DEFAULT_MAX_PIXELS == MAX_IMAGE_PIXELS == Params().extract.image.max_pixels


def test_a_media_file_swapped_for_a_symlink_is_not_served(media_root: Path, state, tmp_path: Path):
    outside = tmp_path / "secret.png"
    shutil.copy(media_root / "ok.png", outside)  # even a valid image outside the root
    with media_client(media_root, state) as c:
        assert c.get("/media/items/swap/image").status_code == 200
        os.remove(media_root / "swap.png")
        os.symlink(outside, media_root / "swap.png")
        r = c.get("/media/items/swap/image")
        assert r.status_code == 404 and "outside the dataset folder" in r.json()["detail"]
        assert str(tmp_path) not in r.text
        os.remove(media_root / "swap.png")
        r = c.get("/media/items/swap/image")
        assert r.status_code == 404 and "no longer exists" in r.json()["detail"]


# -- browser and no-key mode (item 12) -----------------------------------------------------------
def test_host_header_must_name_this_server(client: TestClient, state):
    r = client.get("/users/u1/history", headers={"host": "evil.example:8000"})  # DNS rebinding
    assert r.status_code == 421 and r.json()["error"] == "misdirected_request" and "MMREC_SERVE_ALLOWED_HOSTS" in r.text
    for host in ("localhost:8000", "127.0.0.1", "[::1]:9"):
        assert client.get("/users/u1/history", headers={"host": host}).status_code == 200, host
    assert client.get("/health", headers={"host": "10.1.2.3:8000"}).status_code == 200  # probes by pod IP
    assert host_name(b"[::1]:80") == "::1" and host_name(b"Example.COM:8000") == "example.com"
    assert host_allowed("api.example.com", [".example.com"]) and not host_allowed("example.com.evil", [".example.com"])
    holder = StateHolder(ListSource([state]), interval_s=0)
    app = create_app(holder, ServeSettings(log_key="k", allowed_hosts=("recs.example.com",)), poll=False)
    with TestClient(app, base_url="http://recs.example.com") as c:
        assert c.get("/users/u1/history").status_code == 200
        assert c.get("/users/u1/history", headers={"host": "localhost"}).status_code == 421
    # with a key, any host (a rebinding page has neither the key nor this origin's cookie)
    app = create_app(holder, ServeSettings(log_key="k", api_key="K"), poll=False)
    with TestClient(app, base_url="http://anything.example") as c:
        assert c.get("/users/u1/history", headers={"X-API-Key": "K"}).status_code == 200


def test_state_changing_requests_need_json_or_the_key(client: TestClient, state):
    # what a cross-site <form method=post> can send: refused before anything runs
    for headers in (
        {},
        {"content-type": "application/x-www-form-urlencoded"},
        {"content-type": "text/plain"},
        {"content-type": "multipart/form-data; boundary=x"},
    ):
        r = client.post("/admin/reload?force=true", content=b"a=b", headers=headers)
        assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type", headers
    assert client.post("/admin/reload", json={}).status_code == 200
    assert (
        client.post(
            "/admin/reload", content=b"{}", headers={"content-type": "application/json; charset=utf-8"}
        ).status_code
        == 200
    )
    holder = StateHolder(ListSource([state]), interval_s=0)
    with TestClient(
        create_app(holder, ServeSettings(log_key="k", api_key="K"), poll=False), base_url="http://localhost"
    ) as c:
        assert c.post("/admin/reload", headers={"X-API-Key": "K"}).status_code == 200  # the key alone suffices


def test_head_on_every_get_route(client: TestClient):
    for path in (
        "/health",
        "/ready",
        "/users/u1/recommendations",
        "/items/i1",
        "/media/items/i1/image",
        "/",
        "/static/app.js",
    ):
        get, head = client.get(path), client.head(path)
        assert head.status_code == get.status_code == 200, path
        assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"], path
    assert client.head("/admin/reload").status_code == 405
    assert client.head("/users/nobody/history").status_code == 404


def test_with_a_key_responses_are_private(state, media_root: Path):
    with media_client(media_root, state, api_key="K") as c:
        r = c.get("/media/items/ok/image", headers={"X-API-Key": "K"})
        assert r.status_code == 200 and r.headers["cache-control"] == "private, max-age=3600"
        r = c.get("/users", headers={"X-API-Key": "K"})
        assert r.headers["cache-control"] == "private"
        assert "private" not in c.get("/health").headers.get("cache-control", "")
    with media_client(media_root, state) as c:  # no key: public media may be cached anywhere
        assert c.get("/media/items/ok/image").headers["cache-control"] == "max-age=3600"


def test_every_cookie_header_is_read(state):
    from mmrec.serve.security import session_token

    holder = StateHolder(ListSource([state]), interval_s=0)
    app = create_app(holder, ServeSettings(log_key="k", api_key="K"), poll=False)
    with TestClient(app, base_url="http://localhost") as c:
        token = session_token("K").decode()
        headers = [("cookie", f"mmrec_session={token}"), ("cookie", "theme=dark")]
        r = c.get("/users/u1/history", headers=headers)
        assert r.status_code == 200
        headers = [("cookie", "theme=dark"), ("cookie", f"other=1; mmrec_session={token}")]
        assert c.get("/users/u1/history", headers=headers).status_code == 200


def test_docs_are_served_from_this_server(client: TestClient):
    pytest.importorskip("swagger_ui_bundle")
    html = client.get("/docs").text
    assert (
        "/docs-assets/swagger-ui-bundle.js" in html and "cdn." not in html and "https://" not in html.split("<body>")[0]
    )
    js = client.get("/docs-assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000
    assert client.get("/redoc").status_code == 404  # no local redoc assets: no page
    assert client.get("/openapi.json").status_code == 200


def test_the_page_keeps_no_key_where_scripts_can_read_it():
    from mmrec.serve.app import STATIC

    js = (STATIC / "app.js").read_text()
    assert "document.cookie" not in js and "sessionStorage" not in js and "localStorage" not in js
    assert 'fetch("/session", { method: "POST"' in js  # traded for the HttpOnly cookie instead


def test_serve_binds_loopback_by_default():
    import inspect

    from mmrec.serve.run import serve

    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"


# -- logs and messages (items 11, 13) ------------------------------------------------------------
def test_access_log_escapes_control_characters(client: TestClient, caplog):
    with caplog.at_level(logging.INFO, logger="mmrec.serve.access"):
        client.get("/x%0a127.0.0.1%20GET%20/admin%20200%0d%00%1b[31m%c2%85end")
    lines = [r.getMessage() for r in caplog.records if r.name == "mmrec.serve.access"]
    assert len(lines) == 1
    line = lines[0]
    assert "\n" not in line and "\r" not in line and "\x00" not in line and "\x1b" not in line and "\x85" not in line
    assert "/x\\x0a127.0.0.1 GET /admin 200\\x0d\\x00\\x1b[31m\\x85end 404" in line


def test_scrub_removes_credentials_from_uris():
    msg = (
        "could not connect to postgresql://mlflow:hunter2@db.internal:5432/mlflow and "
        "redis://:s3cret@10.0.0.5:6379/0 nor s3://AKIA:SECRETKEY@bucket/x (password=pw1 token=abc) "
        "nor mysql://u:p@ss@w0rd@db/x"
    )  # an unescaped `@` inside the password
    out = scrub(msg)
    for secret in ("hunter2", "s3cret", "SECRETKEY", "AKIA", "mlflow:", "pw1", "abc", "ss@w0rd", "w0rd"):
        assert secret not in out, secret
    assert "postgresql://***@db.internal:5432/mlflow" in out and "redis://***@10.0.0.5:6379/0" in out


def test_ready_shows_reload_errors_without_credentials(state):
    class FailingSource(ListSource):
        def load(self):
            raise RuntimeError("cannot reach postgresql://admin:topsecret@pg:5432/mlflow")

    holder = StateHolder(FailingSource([state]), interval_s=0)
    holder._state = state
    with TestClient(create_app(holder, ServeSettings(log_key="k"), poll=False), base_url="http://localhost") as c:
        r = c.post("/admin/reload?force=true", json={})
        assert r.status_code == 503 and "topsecret" not in r.text
        body = c.get("/ready").json()
        assert "postgresql://***@pg:5432/mlflow" in body["last_reload_error"] and "topsecret" not in str(body)


# -- request bodies and odd input (item 14 and beyond) -------------------------------------------
def test_post_bodies_use_strict_types(client: TestClient):
    for body in (
        {"item_ids": ["i1"], "k": "5"},
        {"item_ids": ["i1"], "k": True},
        {"item_ids": ["i1"], "k": 5.5},
        {"item_ids": [1]},
        {"item_ids": "i1"},
        {"item_ids": ["i1"], "k": None, "x": 1},
    ):
        r = client.post("/recommendations", json=body)
        assert r.status_code == 422 and r.json()["error"] == "invalid_request", body
    assert client.post("/recommendations", json={"item_ids": ["i1"], "k": 3}).status_code == 200


def test_further_attacks(client: TestClient):
    # encoded dots and slashes never leave the route or the static folder
    for path in (
        "/static/%2e%2e/%2e%2e/app.py",
        "/static/..%2f..%2fapp.py",
        "/static/%252e%252e/app.py",
        "/media/items/i1/..%2f..%2f..%2fetc%2fpasswd",
        "/media/items/%2e%2e%2f%2e%2e/image",
    ):
        r = client.get(path)
        assert r.status_code in (404, 422) and "root:" not in r.text and "import" not in r.text, path
    # k: negative, zero, huge, float, unicode digits, repeated
    for k in ("-1", "0", "101", "99999999999999999999999", "1e3", "%D9%A5", "5&k=500"):
        r = client.get(f"/users/u1/recommendations?k={k}")
        assert r.status_code == 422, (k, r.text)
    # a huge query string and a huge prefix: refused or bounded, never a 500
    r = client.get("/users?prefix=" + "a" * 20_000)
    assert r.status_code == 422
    r = client.get("/users/u1/recommendations?" + "&".join(f"x{i}=1" for i in range(5000)))
    assert r.status_code == 200
    # an oversized JSON body (deeply nested too) is refused before parsing
    r = client.post("/recommendations", content=b"[" * 70_000, headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = client.post(
        "/recommendations",
        content=b'{"item_ids": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and r.json() == {
        "error": "bad_request",
        "detail": "There was an error parsing the body",
    }
    # invalid percent-encoding and invalid UTF-8 in an id: a clean 404 for an unknown id
    for seg in ("%ZZ", "%FF%FE", "%C0%AF"):
        r = client.get(f"/users/{seg}/history")
        assert r.status_code == 404 and r.json()["error"] == "not_found", seg
    # JSON oddities: NaN, 1e400, duplicate keys (the last wins, then validated), an escaped NUL in an id
    for raw_body in (
        b'{"item_ids": ["i1"], "k": NaN}',
        b'{"item_ids": ["i1"], "k": 1e400}',
        b'{"item_ids": ["i1"], "k": 1, "k": 500}',
        b'{"item_ids": ["i\\u0000"]}',
    ):
        r = client.post("/recommendations", content=raw_body, headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["error"] == "invalid_request", raw_body
    # other methods and a path-ish modality: JSON 405/422, never a route or file
    r = client.request("OPTIONS", "/users/u1/recommendations")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"
    assert client.get("/items/i1/similar?modality=../../etc").status_code == 422
    assert client.get("/media/items/i1/..").status_code == 404  # the client normalises it to /media/items/
    # an X-Forwarded-Host cannot smuggle a host past the allow-list
    r = client.get("/users/u1/history", headers={"host": "evil.example", "x-forwarded-host": "localhost"})
    assert r.status_code == 421
