"""`mmrec serve` as a real process on a random loopback port: online-store faults and raw-HTTP attacks.

The tiny fixture is trained, registered and materialised into the embedded sqlite online store;
then, against the running server:
- the store file is corrupted in place, deleted, and replaced (by an empty database, then by the
  good copy): each time the API answers 503 + Retry-After (never a 500, never the old file),
  `/ready` is 503 with the store's error, and once the store is back the API serves again, a
  forced reload succeeds and clears `last_reload_error`;
- raw requests a browser or an attacker can send: a forged log line (`%0d%0a`), a rebinding Host,
  a cross-site form POST to /admin/reload, HEAD, and requests h11 cannot parse (smuggling
  shapes, two Hosts, huge headers), answered by a JSON 400 (h11's refusals through
  mmrec/serve/protocol.py, CL+TE by mmrec/serve/guards.py).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from mmrec.config import load_params
from mmrec.data.contract import load_dataset_spec
from mmrec.stages import StageContext, run_stage
from tests.conftest import FIXTURES
from tests.integration.servers import ApiProcess

pytestmark = pytest.mark.integration

PARAMS = """\
split: {cold_item_fraction: 0.0, min_user_interactions: 1}
extract:
  progress: false
  text: {encoder: tiny_text}
  image: {encoder: tiny_cnn}
train: {models: [itemknn]}
features: {profile: sqlite}
recommend: {k: 3}
"""


def request(
    api: ApiProcess, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def raw(api: ApiProcess, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", api.port), timeout=30) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """The tiny fixture trained, registered, materialised (sqlite) and served by `mmrec serve`."""
    from mmrec.feast.materialize import run_materialize
    from mmrec.feast.store import feast_dir
    from mmrec.recommend.run import run_recommend
    from mmrec.tracking.runs import track_training

    tmp = tmp_path_factory.mktemp("faults")
    ws = tmp / "ws"
    ws.mkdir()
    shutil.copytree(FIXTURES / "tiny", ws / "tiny")
    (ws / "params.yaml").write_text(PARAMS)
    ctx = StageContext(
        spec=load_dataset_spec(ws / "tiny" / "dataset.yaml"), params=load_params(ws / "params.yaml"), workspace=ws
    )
    for stage in ("ingest", "validate", "split", "extract_text", "extract_image", "train", "evaluate"):
        run_stage(stage, ctx)
    assert track_training(ctx)["decision"]["action"] == "promoted"
    run_recommend(ctx)
    run_materialize(ctx)
    db = feast_dir(ctx.paths) / "sqlite" / "online.db"
    assert db.is_file()
    good = tmp / "online.good.db"
    shutil.copy(db, good)
    api = ApiProcess(str(ws / "tiny" / "dataset.yaml"), str(ws / "params.yaml"), str(ws), tmp)
    api.start()
    try:
        yield api, db, good
    finally:
        api.kill()


def _replace(src: Path, dst: Path) -> None:
    """Atomically put a copy of `src` at `dst` (a new file: what a rebuild or a restore does)."""
    tmp = dst.with_name(dst.name + ".new")
    shutil.copy(src, tmp)
    os.replace(tmp, dst)


def _unusable(api: ApiProcess, what: str) -> dict:
    status, body = api.get("/users/u1/recommendations?k=3")
    assert status == 503, (what, status, body)
    assert body["error"] == "service_unavailable" and body["service"] == "sqlite", (what, body)
    status, headers, _ = request(api, "GET", "/users/u1/recommendations?k=3")
    assert headers.get("retry-after") == "5"
    status, ready = api.get("/ready")
    assert status == 503 and ready["status"] == "not_ready" and ready["store_error"], (what, ready)
    assert "/" + "work" not in json.dumps(ready)  # no absolute paths
    assert api.get("/health")[0] == 200  # liveness: no restart wanted
    return body


def test_a_corrupt_deleted_or_replaced_online_store_is_detected_and_recovered(served):
    api, db, good = served
    status, body = api.get("/users/u1/recommendations?k=3")
    assert status == 200 and body["source"] == "precomputed", body
    expected = body["items"]
    assert api.get("/ready")[0] == 200

    # 1. corrupted in place (the sqlite header overwritten): 503, not 500
    with db.open("r+b") as f:
        f.write(b"\x00garbage" * 16)
    detail = _unusable(api, "corrupt")["detail"]
    assert "cannot be read" in detail and "materialize" in detail, detail
    status, result = request(api, "POST", "/admin/reload?force=true", {"content-type": "application/json"}, b"{}")[::2]
    assert status == 503 and json.loads(result)["action"] == "failed"
    assert "last_reload_error" in api.get("/ready")[1]

    # 2. restored by a new file: served again without a restart, and a forced reload clears the error
    _replace(good, db)
    status, body = api.get_until_ok("/users/u1/recommendations?k=3", 30)
    assert status == 200 and body["items"] == expected
    status, result = request(api, "POST", "/admin/reload?force=true", {"content-type": "application/json"}, b"{}")[::2]
    assert status == 200 and json.loads(result)["action"] == "loaded"
    status, ready = api.get("/ready")
    assert status == 200 and "last_reload_error" not in ready and "store_error" not in ready

    # 3. deleted: the unlinked old file is not served any more, nor an empty one created
    db.unlink()
    assert "missing" in _unusable(api, "deleted")["detail"]
    assert not db.exists()

    # 4. replaced by another (empty) database: the new file is what is read
    empty = db.with_name("empty.db")
    sqlite3.connect(empty).close()
    _replace(empty, db)
    _unusable(api, "replaced by an empty store")

    # 5. the good store back: served again
    _replace(good, db)
    status, body = api.get_until_ok("/users/u1/recommendations?k=3", 30)
    assert status == 200 and body["items"] == expected
    assert api.get("/ready")[0] == 200


def test_raw_http_attacks_on_the_real_server(served):
    api, _, _ = served
    # a forged access-log line: the control characters are escaped, the log keeps one line per request
    status, _, _ = request(api, "GET", "/nope%0d%0a10.0.0.1%20GET%20/admin/reload%20200%00")
    assert status == 404
    escaped = "/nope\\x0d\\x0a10.0.0.1 GET /admin/reload 200\\x00"
    deadline = time.monotonic() + 15  # the server writes its access line after the response is sent
    log = api.log.read_text(errors="replace")
    while escaped not in log and time.monotonic() < deadline:
        time.sleep(0.1)
        log = api.log.read_text(errors="replace")
    assert escaped in log
    assert not any(line.startswith("10.0.0.1 GET /admin/reload") for line in log.splitlines())

    # DNS rebinding: a foreign Host is refused (the probes still answer anyone)
    status, _, body = request(api, "GET", "/users/u1/history", {"Host": "attacker.example"})
    assert status == 421 and json.loads(body)["error"] == "misdirected_request"
    assert request(api, "GET", "/health", {"Host": "10.9.8.7"})[0] == 200

    # a cross-site form POST cannot reload the model
    status, _, body = request(
        api, "POST", "/admin/reload?force=true", {"Content-Type": "application/x-www-form-urlencoded"}, b"force=true"
    )
    assert status == 415 and json.loads(body)["error"] == "unsupported_media_type"

    # HEAD on GET routes, the media typed by content
    status, headers, body = request(api, "HEAD", "/health")
    assert status == 200 and body == b""
    status, headers, _ = request(api, "GET", "/media/items/i1/image")
    assert status == 200 and headers["content-type"] == "image/png"
    assert (
        headers["content-security-policy"] == "default-src 'none'; sandbox"
        and headers["x-content-type-options"] == "nosniff"
    )

    # ids as percent-encoded segments reach the app: an unknown `sku/004` is a JSON 404 naming it
    status, _, body = request(api, "GET", "/users/sku%2F004/history")
    assert status == 404 and json.loads(body)["id"] == "sku/004"

    # what h11 rejects before the application sees it: a 400 with the API's JSON body (protocol.py);
    # CL+TE, which h11 accepts, is refused by the guard (smuggling shape)
    for bad in (
        b"GET /health HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n",  # no colon
        b"GET /health HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  # two Hosts
        b"GET /he alth HTTP/1.1\r\nHost: a\r\n\r\n",  # space in the target
        b"GET /users/u1\x85/history HTTP/1.1\r\nHost: localhost\r\n\r\n",
    ):  # a raw C1 byte
        out = raw(api, bad)
        head, _, body = out.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head.lower(), (
            bad[:60],
            out[:200],
        )
        assert json.loads(body)["error"] == "bad_request"
