"""`GET /search` and `POST /search` against a real uvicorn server on loopback, and the page's search box
in headless Chromium.

The served model is a real two_tower trained on the tiny fixture's items, whose text and image
vectors come from the tiny registered encoders (the same ones the server embeds queries with),
so a query travels the whole path: validation, encoder, projection, ranking, catalogue records.
"""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tests.integration.servers import running
from tests.integration.test_serve_browser import CHROMIUM, CHROMIUM_ARGS, require_chromium
from tests.serving import ListSource, tiny_frames, tiny_state

pytestmark = pytest.mark.integration

KEY = "search-key"


def tiny_encoders():
    from mmrec.encoders.config import ExtractParams
    from mmrec.search import QueryEncoders

    return QueryEncoders(
        ExtractParams.model_validate(
            {"text": {"encoder": "tiny_text"}, "image": {"encoder": "tiny_cnn"}, "device": "cpu"}
        )
    )


def png(width: int = 24, height: int = 24, colour=(200, 30, 30)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, "PNG")
    return buf.getvalue()


def two_tower_on_tiny(dataset_yaml: Path, encoders) -> object:
    """two_tower (text + image) on the tiny fixture, features from the tiny encoders."""
    from mmrec.constants import ITEM_ID, USER_ID
    from mmrec.data.interactions import Interactions
    from mmrec.models import create_model
    from mmrec.models.item_features import with_features

    items, inter, root = tiny_frames(dataset_yaml)
    item_ids = items[ITEM_ID].astype(str).tolist()
    users = ["u1", "u2", "u3", "u4", "u5"]
    inter = inter[inter[USER_ID].isin(users)]
    rows, cols = pd.Index(users).get_indexer(inter[USER_ID]), pd.Index(item_ids).get_indexer(inter[ITEM_ID])
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(users), len(item_ids)))
    m.data[:] = 1.0
    data = Interactions(m, np.asarray(users, dtype=object), np.asarray(item_ids, dtype=object))
    raw = pd.read_csv(dataset_yaml.parent / "items.csv")
    text = encoders.encoder("text").encode([f"{r.name}\n{r.kind}\n{r.blurb}" for r in raw.itertuples()])
    has_image = raw["picture"].notna().to_numpy()
    image = np.zeros((len(raw), encoders.encoder("image").dim), np.float32)
    image[has_image] = encoders.encoder("image").encode([str(root / p) for p in raw["picture"][has_image]])
    train = with_features(data, {"text": text, "image": image}, {"text": np.ones(len(raw), bool), "image": has_image})
    return create_model("two_tower", dim=8, hidden=0, input_dim=0, max_epochs=5, batch_size=16).fit(train)


@pytest.fixture
def server(tiny_dataset: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """(base URL, api key or None) of a server whose champion is a two_tower (param: (api_key, joint))."""
    from mmrec.serve.app import create_app
    from mmrec.serve.settings import ServeSettings
    from mmrec.serve.state import StateHolder

    api_key, joint = getattr(request, "param", (None, True))
    monkeypatch.setenv("MMREC_SEARCH_MAX_IMAGE_BYTES", "20000")
    monkeypatch.setenv("MMREC_SEARCH_MAX_PIXELS", "250000")
    encoders = tiny_encoders()
    state = tiny_state(tiny_dataset)
    if joint:
        state = dataclasses.replace(state, model=two_tower_on_tiny(tiny_dataset, encoders), recs=None)
    holder = StateHolder(ListSource([state]), interval_s=0)
    app = create_app(holder, ServeSettings(log_key="k", api_key=api_key), poll=False, search_encoders=encoders)
    with running(app) as url:
        yield url, api_key


def test_text_search_ranks_items_in_the_joint_space(server):
    import httpx

    url, _ = server
    r = httpx.get(url + "/search", params={"q": "a small red thing", "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == {"text": "a small red thing"} and body["model"]["name"] == "two_tower"
    items = body["items"]
    assert [i["rank"] for i in items] == [1, 2, 3, 4, 5]
    assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)
    assert all(i["title"] for i in items)
    by_image = httpx.get(url + "/search", params={"q": "a small red thing", "k": 10, "target": "image"}).json()["items"]
    # only i1..i3 have a picture: an image-only match can return nothing else
    assert {i["item_id"] for i in by_image} == {"i1", "i2", "i3"} and all(
        set(i["matched"]) == {"image"} for i in by_image
    )
    assert all(i["image_url"] for i in by_image)


def test_image_search_and_its_bad_inputs(server):
    import httpx

    url, _ = server
    r = httpx.post(
        url + "/search", params={"k": 3, "target": "text"}, content=png(), headers={"Content-Type": "image/png"}
    )
    assert r.status_code == 200, r.text
    assert len(r.json()["items"]) == 3 and r.json()["query"]["image"]["size"] == [24, 24]
    bad = [
        (png()[:60], "image/png", 422, "corrupt|truncated"),
        (b"not an image at all", "image/jpeg", 422, "not a recognised image"),
        (png(600, 600), "image/png", 422, "decompression-bomb guard"),  # 360k pixels > 250k
        (b"x" * 30_000, "image/png", 413, "over the limit of 20000"),
        (b"hello", "text/plain", 415, "Content-Type"),
        (b"{}", "application/json", 415, "Content-Type"),
    ]
    for content, ctype, status, message in bad:
        r = httpx.post(url + "/search", content=content, headers={"Content-Type": ctype})
        assert r.status_code == status, (ctype, r.text)
        assert pytest.importorskip("re").search(message, r.json()["detail"]), r.text


def test_bad_text_queries_are_422(server):
    import httpx

    url, _ = server
    for params, message in (
        ({"q": "  "}, "empty"),
        ({"q": "x" * 201}, "above the limit of 200"),
        ({"q": "ok", "k": 0}, "greater than or equal"),
        ({"q": "ok", "target": "audio"}, "pattern"),
    ):
        r = httpx.get(url + "/search", params=params)
        assert r.status_code == 422, r.text
        assert message in str(r.json()["detail"]), r.text
    assert httpx.get(url + "/search").status_code == 422  # no q at all


@pytest.mark.parametrize("server", [(None, False)], indirect=True)
def test_a_champion_without_a_joint_space_is_a_clear_409(server):
    import httpx

    url, _ = server
    r = httpx.get(url + "/search", params={"q": "red"})
    assert r.status_code == 409
    assert r.json()["error"] == "no_joint_space" and "itemknn" in r.json()["detail"]


@pytest.mark.parametrize("server", [(KEY, True)], indirect=True)
def test_search_needs_the_api_key_when_one_is_set(server):
    import httpx

    url, key = server
    assert httpx.get(url + "/search", params={"q": "red"}).status_code == 401
    assert httpx.post(url + "/search", content=png(), headers={"Content-Type": "image/png"}).status_code == 401
    assert httpx.get(url + "/search", params={"q": "red"}, headers={"X-API-Key": key}).status_code == 200
    r = httpx.post(url + "/search", content=png(), headers={"Content-Type": "image/png", "X-API-Key": key})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("server", [(KEY, True)], indirect=True)
def test_page_search_box_with_the_api_key_and_the_keyboard(server, tmp_path: Path):
    require_chromium()
    from playwright.sync_api import expect, sync_playwright

    url, key = server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.goto(url + "/")
            page.fill("#api-key", key)
            page.click("#key-form button")
            expect(page.locator("#key-form")).to_be_hidden()
            # keyboard only: focus the box, type, Enter, arrow into the results
            page.focus("#search-q")
            page.keyboard.type("a small red thing")
            page.keyboard.press("Enter")
            hits = page.locator("#search-results .search-hit")
            expect(hits.first).to_be_visible()
            assert hits.count() == 8  # k=10 from the page's top-k box, 8 items in the catalogue
            expect(page.locator("#search-status")).to_contain_text("two_tower")
            page.keyboard.press("ArrowDown")
            assert page.evaluate("document.activeElement.dataset.itemId") == hits.nth(0).get_attribute("data-item-id")
            page.keyboard.press("ArrowDown")
            assert page.evaluate("document.activeElement.dataset.itemId") == hits.nth(1).get_attribute("data-item-id")
            page.keyboard.press("Escape")
            assert page.evaluate("document.activeElement.id") == "search-q"
            # match by image only: just the three items with a picture, and their images decode
            page.select_option("#search-target", "image")
            page.keyboard.press("Enter")
            expect(hits).to_have_count(3)
            page.wait_for_function("() => [...document.querySelectorAll('#search-results img')].every(i => i.complete)")
            widths = page.eval_on_selector_all("#search-results img", "els => els.map(e => e.naturalWidth)")
            assert widths and min(widths) > 0
            page.locator("#search").screenshot(path=str(tmp_path / "search.png"))
            if os.environ.get("MMREC_SCREENSHOTS"):  # refresh the docs' picture on request only
                page.locator("#search").screenshot(path=str(Path(os.environ["MMREC_SCREENSHOTS"]) / "search.png"))
            # an upload through the file input
            image = tmp_path / "query.png"
            image.write_bytes(png(colour=(20, 20, 220)))
            page.set_input_files("#search-image", str(image))
            expect(page.locator("#search-status")).to_contain_text("matched by image")
            # an empty query says so instead of searching
            page.click("#search-clear")
            page.keyboard.press("Enter")
            expect(page.locator("#search-error")).to_contain_text("type something")
        finally:
            browser.close()
