"""The "Why?" panels and the models page in a real headless Chromium, with the API key on.

One module-scoped workspace holds what a trained deployment has: VBPR and BPR trained on the
tiny fixture (random text/image vectors stand in for encoder output), evaluated on a
per-user temporal hold-out, logged and registered in a real MLflow sqlite registry (v1 VBPR
champion, v2 BPR challenger refused by the gate), the evaluation report with its figures
(learning curves from the models' real training logs; an ablation of VBPR's modalities), and a
nightly run's summary. A real uvicorn server on loopback serves VBPR (whose score splits into
collaborative, text and image parts) and the models page over that workspace.

Set MMREC_SCREENSHOTS=docs/img to refresh the README's screenshots (`make screenshots`).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from mmrec.constants import ITEM_ID, TIMESTAMP, USER_ID
from tests.conftest import FIXTURES
from tests.integration.servers import running
from tests.integration.test_serve_browser import CHROMIUM, CHROMIUM_ARGS, require_chromium

pytestmark = pytest.mark.integration

KEY = "page-key"
FAST = {"batch_size": 8, "max_epochs": 12, "eval_every": 1, "patience": 20, "lr": 0.05}


def _split(
    inter: pd.DataFrame, users: list[str], items: list[str]
) -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]:
    """Per user by time: the newest interaction is test, the one before valid, the rest train."""
    inter = inter.sort_values([USER_ID, TIMESTAMP], kind="stable")
    pos = inter.groupby(USER_ID).cumcount(ascending=False)  # 0: newest
    out = []
    for part in (pos >= 2, pos == 1, pos == 0):
        rows = pd.Index(users).get_indexer(inter.loc[part, USER_ID])
        cols = pd.Index(items).get_indexer(inter.loc[part, ITEM_ID])
        out.append(sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(users), len(items))))
    return out[0], out[1], out[2]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The trained, registered, reported workspace and the VBPR serving state (see the module docstring)."""
    from mmrec.config import Params
    from mmrec.data.contract import load_dataset_spec
    from mmrec.data.interactions import Interactions
    from mmrec.evaluate import evaluate_model
    from mmrec.explain import explain
    from mmrec.io import write_json
    from mmrec.models import create_model
    from mmrec.models.item_features import with_features
    from mmrec.params.tracking import TrackingParams
    from mmrec.recommend.run import run_recommend
    from mmrec.report import write_report
    from mmrec.serve.catalog import Catalog
    from mmrec.serve.loader import build_indexes
    from mmrec.serve.state import ServingState
    from mmrec.stages import StageContext
    from mmrec.tracking.runs import track_training
    from tests.serving import tiny_frames

    root = tmp_path_factory.mktemp("page")
    shutil.copytree(FIXTURES / "tiny", root / "tiny")
    ws = root / "ws"
    ws.mkdir()
    dataset = root / "tiny" / "dataset.yaml"
    ctx = StageContext(spec=load_dataset_spec(dataset), params=Params(), workspace=ws)
    items, inter, data_root = tiny_frames(dataset)
    item_ids = items[ITEM_ID].astype(str).tolist()
    users = sorted(inter[USER_ID].astype(str).unique())
    train, valid, test = _split(inter.astype({USER_ID: str, ITEM_ID: str}), users, item_ids)
    rng = np.random.default_rng(0)
    feats = {"text": rng.normal(size=(8, 6)).astype(np.float32), "image": rng.normal(size=(8, 4)).astype(np.float32)}
    masks = {"text": np.ones(8, bool), "image": np.arange(8) < 3}  # only i1..i3 have a picture
    feats["image"][~masks["image"]] = 0.0
    base = Interactions(train, np.asarray(users, dtype=object), np.asarray(item_ids, dtype=object))

    def fit(name: str, modalities: tuple[str, ...] = ("text", "image"), control: bool = False, **hp: Any) -> Any:
        use = {
            m: (rng.normal(size=feats[m].shape).astype(np.float32) * masks[m][:, None] if control else feats[m])
            for m in modalities
        }
        data = with_features(base, use, {m: masks[m] for m in modalities}) if name == "vbpr" else base
        extra = {"modalities": modalities, "content_dim": 4} if name == "vbpr" else {}
        return create_model(name, dim=8, seed=0, **extra, **FAST, **hp).fit(data, valid)

    def entry(model: Any) -> dict[str, Any]:
        return {
            "valid": evaluate_model(model, valid, train, ks=(10, 20)),
            "test": evaluate_model(model, test, train + valid, ks=(10, 20)),
            "train_seconds": model.train_seconds,
            "epochs": model.epochs,
            "best_epoch": model.best_epoch,
            "params": model.get_params(),
            "history": model.history,
        }

    models = {"vbpr": fit("vbpr"), "bpr": fit("bpr")}
    for name, model in models.items():
        model.save(ctx.paths.model_dir(name))
    entries = {name: entry(m) for name, m in models.items()}
    report = {"dataset": "tiny", "split": {"kind": "temporal", "hash": "tinyhash0123"}, "selection_metric": "recall@20"}
    # v1: VBPR, the first version, becomes champion; v2: BPR, refused by a gate it cannot pass
    track_training(ctx, {**report, "best_model": "vbpr", "models": {"vbpr": entries["vbpr"]}}, TrackingParams())
    track_training(ctx, {**report, "best_model": "bpr", "models": {"bpr": entries["bpr"]}}, TrackingParams(margin=10.0))
    # the report: both models' curves; VBPR's modalities each alone, together, and against random vectors
    variants = {
        "text": (("text",), False),
        "image": (("image",), False),
        "all": (("text", "image"), False),
        "random": (("text", "image"), True),
    }
    ablation = {
        "model": "vbpr",
        "metric": "recall@20",
        "variants": {
            v: {
                "modalities": list(mods),
                "random": list(mods) if control else [],
                "test": entry(fit("vbpr", mods, control))["test"],
            }
            for v, (mods, control) in variants.items()
        },
    }
    full = {**report, "best_model": "vbpr", "models": entries, "ablation": ablation}
    write_report(full, ctx.paths.reports)
    write_json(ctx.paths.metrics, full)  # where `mmrec evaluate` writes it
    run_recommend(
        ctx,
        k=5,
        model=models["vbpr"],
        model_info={"registered_model": "mmrec-tiny", "version": "1", "alias": "champion"},
    )
    text, image = feats["text"], feats["image"][:3]
    views = {
        "text": (item_ids, text),
        "image": (item_ids[:3], image),
        "fused": (item_ids, np.hstack([text, feats["image"]])),
    }
    catalog = Catalog(items, inter, users=users, root=data_root)
    state = ServingState(
        version="1",
        catalog=catalog,
        model=models["vbpr"],
        recs=None,
        similar=build_indexes(views),
        explainer=explain,
        info={"registered_model": "mmrec-tiny", "alias": "champion"},
    )
    return {"ctx": ctx, "state": state, "entries": entries}


@pytest.fixture
def server(deployment: dict[str, Any]) -> Iterator[str]:
    from mmrec.serve.app import create_app
    from mmrec.serve.overview import ModelsOverview
    from mmrec.serve.settings import ServeSettings
    from mmrec.serve.state import StateHolder
    from tests.serving import ListSource

    holder = StateHolder(ListSource([deployment["state"]]), interval_s=0)
    app = create_app(
        holder,
        ServeSettings(log_key="k", api_key=KEY),
        poll=False,
        overview=ModelsOverview.from_context(deployment["ctx"]),
    )
    with running(app) as url:
        yield url


def screenshot(page: Any, name: str, tmp_path: Path, **kw: Any) -> None:
    page.screenshot(path=str(tmp_path / name), **kw)
    if os.environ.get("MMREC_SCREENSHOTS"):
        folder = Path(os.environ["MMREC_SCREENSHOTS"])
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / name), **kw)


def watch(page: Any) -> tuple[list[str], list[str]]:
    """(script errors, "STATUS PATH" of failed requests other than the favicon) of `page`, as they happen."""
    errors: list[str] = []
    failed: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" and "Failed to load resource" not in m.text else None,
    )

    def response(r: Any) -> None:
        path = r.url.split("/", 3)[3] if r.url.count("/") >= 3 else r.url
        if r.status >= 400 and path != "favicon.ico":
            failed.append(f"{r.status} /{path}")

    page.on("response", response)
    return errors, failed


def log_in(page: Any, server: str, path: str) -> None:
    """Open `path`, which asks for the key; type it and send it with the keyboard."""
    from playwright.sync_api import expect

    page.goto(server + path)
    expect(page.locator("#key-form")).to_be_visible()
    page.locator("#api-key").focus()
    page.keyboard.type(KEY)
    page.keyboard.press("Enter")
    expect(page.locator("#key-form")).to_be_hidden()


def test_why_panel_opens_with_the_keyboard_and_shows_contributions(
    server: str, deployment: dict[str, Any], tmp_path: Path
):
    require_chromium()
    from playwright.sync_api import expect, sync_playwright

    from mmrec.explain import explain
    from mmrec.serve import service

    state = deployment["state"]
    # a recommendation backed by past items with pictures (i1..i3), so the panel must show them
    pairs = [
        (u["user_id"], r["item_id"])
        for u in state.catalog.users("", 10, 0)
        for r in service.user_recommendations(state, u["user_id"], 10)["items"]
    ]
    user, item, want = next(
        (u, i, e)
        for u, i in pairs
        if (e := explain(state.model, u, i)) and {"i1", "i2", "i3"} & {s["item_id"] for s in e["supporting_items"]}
    )
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            errors, failed = watch(page)
            log_in(page, server, "/")
            expect(page.locator("#user-select")).to_have_value("u1")
            page.select_option("#user-select", user)
            expect(page.locator("#recs")).to_have_attribute("data-user", user)
            expect(page.locator("#recs .card")).not_to_have_count(0)
            buttons = page.locator("#recs .why-toggle")
            expect(buttons).to_have_count(page.locator("#recs .card").count())
            button = page.locator(f"#recs .why-toggle[data-item-id='{item}']")
            expect(button).to_have_attribute("aria-expanded", "false")
            panel = page.locator(f"#{button.get_attribute('aria-controls')}")
            expect(panel).to_be_hidden()

            # keyboard only: Tab from the recommendation's card reaches its Why? button
            page.locator(f"#recs .card[data-item-id='{item}']").focus()
            page.keyboard.press("Tab")
            expect(button).to_be_focused()
            page.keyboard.press("Enter")
            expect(button).to_have_attribute("aria-expanded", "true")
            expect(panel).to_be_visible()
            bars = panel.locator("svg.why-chart rect.bar")
            expect(bars).to_have_count(3)
            shown = {b.get_attribute("data-part"): float(b.get_attribute("data-value")) for b in bars.all()}
            assert shown == pytest.approx(want["contributions"], abs=1e-6)
            assert set(shown) == {"collaborative", "text", "image"}
            assert sum(shown.values()) == pytest.approx(want["score"], abs=1e-4)  # the parts add up to the score
            widths = [float(b.get_attribute("width")) for b in bars.all()]
            assert min(widths) > 0 and max(widths) > 50  # drawn, the largest part spans most of its side
            # text alternative: the chart is an image named by its title and described by every value
            desc = panel.locator("svg.why-chart desc").text_content() or ""
            assert all(part in desc for part in shown) and f"{want['score']:.3f}" in desc
            assert panel.locator("svg.why-chart").get_attribute("role") == "img"
            expect(panel.locator("table.sr-only tr")).to_have_count(4)  # header + one row per source
            # the user's past items behind it, with their pictures decoded (<img> through the session cookie)
            support = [s["item_id"] for s in want["supporting_items"]]
            assert support, want
            expect(panel.locator(".why-item")).to_have_count(len(support))
            assert panel.locator(".why-item").evaluate_all("els => els.map(e => e.dataset.itemId)") == support
            with_images = [s for s in support if s in {"i1", "i2", "i3"}]
            page.wait_for_function(
                "(id) => [...document.querySelectorAll(`#${id} .why-item img`)].every(i => i.complete)",
                arg=panel.get_attribute("id"),
            )
            widths = panel.locator(".why-item img").evaluate_all("els => els.map(e => e.naturalWidth)")
            assert len(widths) == len(with_images) and min(widths) > 0
            screenshot(page, "why-panel.png", tmp_path, full_page=True)

            # Escape inside the panel closes it and gives the focus back to its button
            panel.locator(".why-close").focus()
            page.keyboard.press("Escape")
            expect(panel).to_be_hidden()
            expect(button).to_have_attribute("aria-expanded", "false")
            expect(button).to_be_focused()
            # Space opens it again (a native button), from the already-fetched explanation
            page.keyboard.press(" ")
            expect(panel).to_be_visible()
            expect(panel.locator("svg.why-chart rect.bar")).to_have_count(3)
            # the similar-items panel's "Why recommended?" draws the same chart (one renderer)
            page.locator(f"#recs .card[data-item-id='{item}']").press("Enter")
            page.locator("#why").press("Enter")
            expect(page.locator("#explain svg.why-chart rect.bar")).to_have_count(3)
            expect(page.locator("#explain .why-item")).to_have_count(len(support))
            assert not errors, errors
            assert failed == ["401 /users?limit=200"], failed  # only the request before the key was given
        finally:
            browser.close()


def test_models_page_shows_registry_metrics_figures_and_nightly(
    server: str, deployment: dict[str, Any], tmp_path: Path
):
    require_chromium()
    from playwright.sync_api import expect, sync_playwright

    entries = deployment["entries"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors, failed = watch(page)
            # from the main page, by the keyboard: the header's Models link
            log_in(page, server, "/")
            expect(page.locator("#recs .card")).not_to_have_count(0)
            page.locator("header a[href='/models']").focus()
            page.keyboard.press("Enter")
            page.wait_for_url(server + "/models")
            expect(page.locator("body")).to_have_attribute(
                "data-loaded", "true"
            )  # the cookie carried over: no key form
            expect(page.locator("#key-form")).to_be_hidden()
            expect(page.locator("#error")).to_be_hidden()

            # registry: two versions, newest first, with their aliases
            rows = page.locator("#versions tbody tr")
            expect(rows).to_have_count(2)
            assert rows.evaluate_all("rs => rs.map(r => r.dataset.version)") == ["2", "1"]
            expect(rows.nth(0)).to_contain_text("bpr")
            expect(rows.nth(0)).to_contain_text("challenger")
            expect(rows.nth(1)).to_contain_text("vbpr")
            expect(rows.nth(1)).to_contain_text("champion")
            expect(page.locator("#aliases li[data-alias=champion]")).to_have_text("champion v1")
            expect(page.locator("#aliases li[data-alias=challenger]")).to_have_text("challenger v2")
            expect(rows.nth(1).locator("td").nth(3)).to_have_text(f"{entries['vbpr']['valid']['recall@20']:.4f}")

            # the champion's metrics table, as logged in its MLflow run
            expect(page.locator("#champion-name")).to_contain_text("v1, vbpr")
            head = page.locator("#metrics thead th").all_text_contents()
            assert head == ["metric", "valid", "test"], head
            for metric in ("recall@20", "ndcg@10", "hit@20"):
                cells = page.locator(f"#metrics tr[data-metric='{metric}'] td").all_text_contents()
                assert cells == [f"{entries['vbpr'][p][metric]:.4f}" for p in ("valid", "test")], (metric, cells)

            # the last nightly run
            expect(page.locator("#nightly-facts dd[data-fact=users]")).to_have_text("6 of 6")
            expect(page.locator("#nightly-facts dd[data-fact=model]")).to_have_text("vbpr v1 (champion)")
            expect(page.locator("#nightly-facts dd[data-fact=finished]")).to_have_text(
                re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d UTC$")
            )
            expect(page.locator("#nightly-facts dd[data-fact='catalogue coverage']")).to_contain_text("%")

            # the report's figures, decoded (authenticated by the session cookie)
            figs = page.locator("#figures figure")
            expect(figs).to_have_count(2)
            assert figs.evaluate_all("fs => fs.map(f => f.dataset.figure)") == ["ablation.png", "learning_curves.png"]
            page.wait_for_function("() => [...document.querySelectorAll('#figures img')].every(i => i.complete)")
            sizes = page.locator("#figures img").evaluate_all("els => els.map(e => [e.alt, e.naturalWidth])")
            assert all(w > 100 and alt for alt, w in sizes), sizes
            screenshot(page, "models-page.png", tmp_path, full_page=True)

            # without the cookie the data is refused and the page asks for the key
            page.context.clear_cookies()
            page.reload()
            expect(page.locator("#key-form")).to_be_visible()
            expect(page.locator("#versions")).to_be_hidden()
            assert not errors, errors
            assert failed == ["401 /users?limit=200", "401 /models/overview"], (
                failed
            )  # before the key, after the cookie went
        finally:
            browser.close()


def test_registry_reader_on_a_real_mlflow_store(deployment: dict[str, Any]):
    """What the page is built from, read from the real sqlite registry: versions, aliases, run metrics."""
    from mmrec.serve.overview import ModelsOverview, RegistryMissing, read_registry

    overview = ModelsOverview.from_context(deployment["ctx"])
    reg = overview.registry()
    assert reg["status"] == "ok", reg
    assert reg["aliases"] == {"champion": "1", "challenger": "2"}
    assert [(v["version"], v["model"], v["decision"], v["aliases"]) for v in reg["versions"]] == [
        ("2", "bpr", "refused", ["challenger"]),
        ("1", "vbpr", "promoted", ["champion"]),
    ]
    vbpr = deployment["entries"]["vbpr"]
    assert reg["versions"][1]["metric"] == pytest.approx(vbpr["valid"]["recall@20"])
    champion = reg["champion"]
    assert champion["version"] == "1" and champion["model"] == "vbpr" and champion["split_hash"] == "tinyhash0123"
    for part in ("valid", "test"):
        assert champion["metrics"][part] == pytest.approx({k: v for k, v in vbpr[part].items()})
    assert champion["metrics"]["training"]["epochs"] == vbpr["epochs"]
    with pytest.raises(RegistryMissing, match="no model 'mmrec-other'"):
        read_registry(overview.tracking_uri, "mmrec-other", "recall@20")


def test_models_page_before_anything_was_trained(tiny_dataset: Path, tmp_path: Path):
    """A fresh workspace: the page says what is missing and which command makes it; no store is created."""
    require_chromium()
    from playwright.sync_api import expect, sync_playwright

    from mmrec.config import Params
    from mmrec.data.contract import load_dataset_spec
    from mmrec.serve.app import create_app
    from mmrec.serve.overview import ModelsOverview
    from mmrec.serve.settings import ServeSettings
    from mmrec.serve.state import StateHolder
    from mmrec.stages import StageContext
    from tests.serving import ListSource, tiny_state

    ws = tmp_path / "fresh"
    ws.mkdir()
    ctx = StageContext(spec=load_dataset_spec(tiny_dataset), params=Params(), workspace=ws)
    app = create_app(
        StateHolder(ListSource([tiny_state(tiny_dataset)]), interval_s=0),
        ServeSettings(log_key="k"),
        poll=False,
        overview=ModelsOverview.from_context(ctx),
    )
    with running(app) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors, failed = watch(page)
            page.goto(url + "/models")
            expect(page.locator("body")).to_have_attribute("data-loaded", "true")
            expect(page.locator("#registry-message")).to_contain_text("no MLflow registry yet")
            expect(page.locator("#registry-message")).to_contain_text("mmrec pipeline")
            expect(page.locator("#champion-message")).to_contain_text("no MLflow registry yet")
            expect(page.locator("#nightly-message")).to_contain_text("no nightly run yet")
            expect(page.locator("#report-message")).to_contain_text("no evaluation report yet")
            expect(page.locator("#versions")).to_be_hidden()
            expect(page.locator("#metrics")).to_be_hidden()
            expect(page.locator("#figures figure")).to_have_count(0)
            assert not errors and not failed, (errors, failed)
        finally:
            browser.close()
    assert not (ws / "mlflow.db").exists() and list(ws.iterdir()) == []  # looking wrote nothing
