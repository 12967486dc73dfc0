"""Screenshots of the web page for the README: a "Why?" panel and the models page.

Drives headless Chromium (Playwright over Debian's /usr/bin/chromium, as the browser tests do)
against a running `mmrec serve`, the way a person would with the keyboard: gives the API key
when the page asks for it, opens the first recommendation's "Why?" panel, then follows the
header's Models link. Fails (exit 1) when something the screenshots should show is missing.

    MMREC_API_KEY=secret make serve &          # after `make demo`
    MMREC_API_KEY=secret .venv/bin/python docs/screenshots.py --url http://127.0.0.1:8000 --out docs/img
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="where `mmrec serve` listens")
    parser.add_argument("--out", type=Path, default=Path("docs/img"), help="folder of the PNGs")
    parser.add_argument("--user", default=None, help="user to show (default: the page's first)")
    args = parser.parse_args(argv)
    key = os.environ.get("MMREC_API_KEY", "")
    from playwright.sync_api import expect, sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(args.url + "/")
            page.wait_for_function(
                "() => !document.querySelector('#key-form').hidden || document.querySelector('#recs .card')"
            )
            if page.locator("#key-form").is_visible():
                if not key:
                    print("the server needs an API key: set MMREC_API_KEY", file=sys.stderr)
                    return 1
                page.locator("#api-key").focus()
                page.keyboard.type(key)
                page.keyboard.press("Enter")
            if args.user:
                page.select_option("#user-select", args.user)
            expect(page.locator("#recs .why-toggle").first).to_be_visible(timeout=30_000)
            button = page.locator("#recs .why-toggle").first
            button.focus()
            page.keyboard.press("Enter")
            panel = page.locator(f"#{button.get_attribute('aria-controls')}")
            expect(panel.locator("svg.why-chart rect.bar").first).to_be_visible(timeout=30_000)
            page.wait_for_function("() => [...document.images].every(i => i.complete)")
            # from the Recommendations heading to the panel's bottom edge (page coordinates)
            top, bottom = panel.evaluate(
                "p => [p.parentElement.parentElement.querySelector('h2').getBoundingClientRect().top,"
                " p.getBoundingClientRect().bottom].map(v => v + window.scrollY)"
            )
            page.screenshot(
                path=str(args.out / "why-panel.png"),
                full_page=True,
                clip={"x": 0, "y": max(0, top - 8), "width": 1280, "height": bottom - top + 16},
            )
            page.locator("header a[href='/models']").focus()
            page.keyboard.press("Enter")
            expect(page.locator("body")).to_have_attribute("data-loaded", "true", timeout=60_000)
            page.wait_for_function("() => [...document.images].every(i => i.complete)")
            page.screenshot(path=str(args.out / "models-page.png"), full_page=True)
        finally:
            browser.close()
    print(f"wrote {args.out / 'why-panel.png'} and {args.out / 'models-page.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
