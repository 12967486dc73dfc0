"""The web page in a real headless Chromium (Playwright, Debian's /usr/bin/chromium).

A real uvicorn server on loopback serves the tiny fixture; the test picks a user as a person
would and checks what is on screen: titles, images that actually decoded (naturalWidth > 0),
the recommendation list, and the similar-items panel after a click, per modality.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.integration.servers import running
from tests.serving import ListSource, tiny_state

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def require_chromium() -> None:
    if CHROMIUM.is_file():
        return
    if os.environ.get("MMREC_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{CHROMIUM} missing; CI installs Debian's chromium (.ci/run)")
    pytest.skip(f"{CHROMIUM} missing: apt-get install chromium")


@pytest.fixture
def server(tiny_dataset: Path, request: pytest.FixtureRequest):
    from mmrec.serve.app import create_app
    from mmrec.serve.settings import ServeSettings
    from mmrec.serve.state import StateHolder

    holder = StateHolder(ListSource([tiny_state(tiny_dataset)]), interval_s=0)
    api_key = getattr(request, "param", None)
    app = create_app(holder, ServeSettings(log_key="k", api_key=api_key), poll=False)
    with running(app) as url:
        yield url


def test_page_shows_history_recommendations_and_similar_items(server: str, tmp_path: Path):
    require_chromium()
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server + "/")
            # the first user (u1) is shown on load
            expect(page.locator("#user-select")).to_have_value("u1")
            expect(page.locator("#status")).to_contain_text("v1")
            expect(page.locator("#key-form")).to_be_hidden()  # no API key configured
            expect(page.locator("#error")).to_be_hidden()
            expect(page.locator("#history .card")).to_have_count(6)
            history_titles = page.locator("#history .card .title").all_text_contents()
            assert set(history_titles) <= {f"Item {i}" for i in range(1, 9)} and len(history_titles) == 6
            expect(page.locator("#recs .card")).not_to_have_count(0)
            expect(page.locator("#recs-source")).to_contain_text("precomputed")
            expect(page.locator("#recs .card .title")).to_have_text(["Item 8", "Item 7"])
            expect(page.locator("#recs .card .meta").first).to_contain_text("#1")
            # u3 has no stored list: scored live by the model, top 3
            page.fill("#k", "3")
            page.select_option("#user-select", "u3")
            expect(page.locator("#recs-source")).to_contain_text("model")
            expect(page.locator("#recs .card")).to_have_count(2)  # u3 has seen 6 of the 8 items
            # u1 interacted with items that have pictures: those <img> must have decoded
            page.wait_for_function("() => [...document.querySelectorAll('#history img')].every(i => i.complete)")
            images = page.eval_on_selector_all("#history img", "els => els.map(e => [e.alt, e.naturalWidth])")
            assert images and all(width > 0 for _, width in images), images
            assert page.locator("#history .noimg").count() == 6 - len(images)

            # another user through the picker: u6 is unknown to the model, scored from history
            page.select_option("#user-select", "u6")
            expect(page.locator("#recs-source")).to_contain_text("history")

            # click an item with a picture: similar items per modality
            page.locator("#history .card", has=page.locator("img")).first.click()
            panel = page.locator("#similar-panel")
            expect(panel).to_be_visible()
            expect(page.locator("#similar")).to_have_attribute("data-loaded", re.compile(r":fused$"))
            expect(page.locator("#similar .card")).not_to_have_count(0)
            tabs = page.locator(".modality-tab").all_text_contents()
            assert tabs == ["fused", "image", "text"], tabs
            page.locator(".modality-tab[data-modality=image]").click()
            expect(page.locator("#similar")).to_have_attribute("data-loaded", re.compile(r":image$"))
            similar = page.locator("#similar .card .title").all_text_contents()
            assert similar and set(similar) <= {"Item 1", "Item 2", "Item 3"}, similar  # only those have images
            page.wait_for_function("() => [...document.querySelectorAll('#similar img')].every(i => i.complete)")
            widths = page.eval_on_selector_all("#similar img", "els => els.map(e => e.naturalWidth)")
            assert widths and min(widths) > 0
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            if os.environ.get("MMREC_SCREENSHOT"):
                page.screenshot(path=os.environ["MMREC_SCREENSHOT"], full_page=True)
            assert not errors, errors
        finally:
            browser.close()


@pytest.mark.parametrize("server", ["page-key"], indirect=True)
def test_page_asks_for_the_api_key_and_then_loads_images(server: str):
    require_chromium()
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server + "/")
            expect(page.locator("#key-form")).to_be_visible()
            expect(page.locator("#history .card")).to_have_count(0)
            page.fill("#api-key", "page-key")
            page.click("#key-form button")
            expect(page.locator("#key-form")).to_be_hidden()
            expect(page.locator("#history .card")).to_have_count(6)
            page.wait_for_function("() => [...document.querySelectorAll('#history img')].every(i => i.complete)")
            widths = page.eval_on_selector_all("#history img", "els => els.map(e => e.naturalWidth)")
            assert widths and min(widths) > 0  # <img> requests authenticated through the cookie
        finally:
            browser.close()
