"""`mmrec tune` on the tiny fixture: validation only, the overlay it writes (and who reads it),
pruning through the training loop's evaluation callback, MLflow nested runs, search spaces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import scipy.sparse as sp
import yaml
from typer.testing import CliRunner

from mmrec.cli import app
from mmrec.errors import ConfigError, DataError
from mmrec.models.training import TrainingPruned, evaluation_callback, run_epochs

runner = CliRunner()

PARAMS = {
    "split": {"cold_item_fraction": 0.25, "cold_valid_fraction": 0.5, "min_user_interactions": 3},
    "validate": {"min_text_chars": 1},
    "train": {
        "models": ["popularity", "itemknn", "bpr"],
        "params": {"bpr": {"max_epochs": 6, "batch_size": 16, "eval_every": 1, "patience": 10}},
    },
    "tune": {"trials": 3, "track": False, "startup_trials": 1, "warmup_epochs": 0},
}


@pytest.fixture
def prepared(tiny_dataset: Path, workspace: Path, tmp_path: Path, one_torch_thread) -> tuple[Path, Path, Path]:
    """The tiny dataset ingested, validated and split; returns (dataset.yaml, params file, workspace)."""
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(PARAMS))
    for stage in ("ingest", "validate", "split"):
        res = runner.invoke(
            app,
            ["stage", stage, "--dataset", str(tiny_dataset), "--params", str(p), "--workspace", str(workspace)],
            catch_exceptions=False,
        )
        assert res.exit_code == 0, res.output
    return tiny_dataset, p, workspace


def _pairs(m: sp.csr_matrix) -> set[tuple[int, int]]:
    c = sp.coo_matrix(m)
    return set(zip(c.row.tolist(), c.col.tolist(), strict=True))


def test_tune_writes_the_overlay_from_validation_only_and_the_pipeline_reads_it(prepared, monkeypatch):
    from mmrec import evaluate
    from mmrec.context import StageContext
    from mmrec.stage_inputs import load_split_data
    from mmrec.stages import run_train

    dataset, params, ws = prepared
    overlay = ws / "params" / "tiny.yaml"
    overlay.parent.mkdir()
    # an overlay that already holds other settings: they must survive the search
    overlay.write_text(
        yaml.safe_dump(
            {
                "train": {"params": {"lightgcn": {"lr": 0.123}, "bpr": {"dim": 16}}},
                "evaluate": {"bootstrap_resamples": 7},
            }
        )
    )
    data = load_split_data(StageContext.from_files(dataset, params, ws))
    assert data.test.nnz and data.cold_test is not None and data.cold_test.nnz and data.cold_valid.nnz
    forbidden = _pairs(data.test) | _pairs(data.cold_test)
    targets: list[set[tuple[int, int]]] = []
    real = evaluate.user_metrics

    def spy(score_fn, target, *args, **kwargs):
        targets.append(_pairs(target))
        return real(score_fn, target, *args, **kwargs)

    monkeypatch.setattr(evaluate, "user_metrics", spy)
    res = runner.invoke(
        app,
        [
            "tune",
            "--dataset",
            str(dataset),
            "--params",
            str(params),
            "--workspace",
            str(ws),
            "--models",
            "itemknn,bpr",
            "--trials",
            "2",
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    assert "bpr: 2 trials" in res.output and "itemknn: 2 trials" in res.output
    # every ranking the search did was on validation data; the test parts were never a target
    assert targets and all(not (t & forbidden) for t in targets)
    assert any(t == _pairs(data.valid) for t in targets)

    text = overlay.read_text()
    assert "# tuned bpr: valid recall@20" in text and "# tuned itemknn:" in text and "2 trials" in text
    written = yaml.safe_load(text)
    assert written["evaluate"] == {"bootstrap_resamples": 7}
    assert written["train"]["params"]["lightgcn"] == {"lr": 0.123}
    bpr = written["train"]["params"]["bpr"]
    assert bpr["dim"] == 16 and {"lr", "reg", "batch_size", "init_std"} <= set(bpr)
    assert set(written["train"]["params"]["itemknn"]) == {"k", "shrink"}

    report = json.loads((ws / "reports/tiny/tuning/tuning.json").read_text())
    assert report["models"]["bpr"]["best"]["params"]["lr"] == pytest.approx(bpr["lr"], rel=1e-5)
    assert report["models"]["bpr"]["trials"]["run"] == 2 and report["objective"] == "valid"
    assert (ws / "reports/tiny/tuning/bpr_history.png").stat().st_size > 0
    assert "## bpr" in (ws / "reports/tiny/tuning/tuning.md").read_text()

    # picked up by every command on the dataset: the stage context, then training
    ctx = StageContext.from_files(dataset, params, ws)
    assert str(overlay.resolve()) in ctx.params_files
    assert ctx.params.train.params["bpr"]["lr"] == bpr["lr"] and ctx.params.train.params["bpr"]["max_epochs"] == 6
    summary = run_train(ctx, ["bpr"])
    assert summary["models"]["bpr"]["params"]["lr"] == bpr["lr"]
    assert summary["models"]["bpr"]["params"]["batch_size"] == bpr["batch_size"]


class _PruneOddTrials:
    """A real Optuna pruner (duck-typed BasePruner): prunes every odd-numbered trial at its second check."""

    def prune(self, study, trial) -> bool:
        return trial.number % 2 == 1 and len(trial.intermediate_values) >= 2


def test_a_trial_is_pruned_through_the_training_loop(prepared):
    from mmrec.context import StageContext
    from mmrec.tuning.tune import run_tune

    dataset, params, ws = prepared
    ctx = StageContext.from_files(dataset, params, ws)
    result = run_tune(ctx, ["bpr"], trials=3, pruner=_PruneOddTrials())
    rec = result["models"]["bpr"]
    assert rec["trials"] == {"run": 3, "complete": 2, "pruned": 1}
    pruned = [h for h in rec["history"] if h["state"] == "pruned"]
    assert [h["number"] for h in pruned] == [1] and pruned[0]["epoch"] == 2  # stopped at epoch 2 of 6, not trained out
    assert [e for e, _ in pruned[0]["curve"]] == [1, 2]
    complete = [h for h in rec["history"] if h["state"] == "complete"]
    assert all(h["epochs"] == 6 and len(h["curve"]) == 6 for h in complete)
    assert rec["best"]["number"] in (0, 2)


def test_median_pruner_is_the_default_and_prunes_a_trial_below_the_median(prepared, monkeypatch):
    import optuna

    from mmrec.context import StageContext
    from mmrec.tuning import tune as tune_mod

    dataset, params, ws = prepared
    ctx = StageContext.from_files(dataset, params, ws)
    made: list[object] = []
    real = optuna.create_study

    def spy(**kwargs):
        made.append(kwargs["pruner"])
        return real(**kwargs)

    monkeypatch.setattr(optuna, "create_study", spy)
    # the tiny validation curve is flat, so force a bad curve: the second trial reports -1 at each check
    tuner = tune_mod.Tuner(ctx)
    calls = {"n": 0}
    real_fit = __import__("mmrec.models.bpr", fromlist=["BPR"]).BPR.fit

    def fit(self, train, valid=None):
        calls["n"] += 1
        if calls["n"] == 2:
            from mmrec.models import training

            cb = training._EVALUATION_CALLBACK.get()
            for epoch in range(1, 4):
                cb(epoch, -1.0)
        return real_fit(self, train, valid)

    monkeypatch.setattr("mmrec.models.bpr.BPR.fit", fit)
    with tune_mod._Tracker(ctx, False) as tracker:
        rec = tuner.tune_model("bpr", 2, None, tracker)
    assert isinstance(made[0], optuna.pruners.MedianPruner)
    assert rec["trials"]["pruned"] == 1 and rec["history"][1]["state"] == "pruned" and rec["history"][1]["epoch"] == 1


def test_run_epochs_reports_each_check_and_stops_on_prune():
    seen: list[tuple[int, float]] = []

    def cb(epoch: int, value: float) -> None:
        seen.append((epoch, value))
        if epoch == 4:
            raise TrainingPruned(epoch, value)

    with evaluation_callback(cb), pytest.raises(TrainingPruned) as exc:
        run_epochs(lambda e: 1.0, lambda: 0.5, lambda: None, lambda s: None, epochs=10, eval_every=2, patience=5)
    assert seen == [(2, 0.5), (4, 0.5)] and exc.value.epoch == 4
    # outside the block nothing is reported
    run_epochs(lambda e: 1.0, lambda: 0.5, lambda: None, lambda s: None, epochs=2, eval_every=1, patience=5)
    assert len(seen) == 2


def test_trials_are_nested_mlflow_runs(prepared, tmp_path):
    from mlflow import MlflowClient

    from mmrec.context import StageContext
    from mmrec.tuning.tune import run_tune

    dataset, params, ws = prepared
    ctx = StageContext.from_files(dataset, params, ws)
    result = run_tune(ctx, ["itemknn"], trials=2, track=True)
    client = MlflowClient(tracking_uri=result["tracking_uri"])
    exp = client.get_experiment_by_name("mmrec-tiny")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("mmrec.kind") == "tuning"]
    trials = [r for r in runs if r.data.tags.get("mmrec.kind") == "tuning-trial"]
    assert len(parents) == 1 and len(trials) == 2
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in trials)
    assert all("valid_recall_at_20" in r.data.metrics and "k" in r.data.params for r in trials)
    assert "best_objective" in parents[0].data.metrics


def test_cold_objective_needs_the_cold_valid_slice(prepared, tmp_path):
    from mmrec.context import StageContext
    from mmrec.tuning.tune import run_tune

    dataset, params, ws = prepared
    ctx = StageContext.from_files(dataset, params, ws)
    result = run_tune(ctx, ["itemknn"], trials=2, objective="combined")
    best = result["models"]["itemknn"]["best"]
    assert set(best["figures"]) == {"valid", "cold_valid"}
    assert best["value"] == pytest.approx(0.5 * best["figures"]["valid"] + 0.5 * best["figures"]["cold_valid"])
    raw = yaml.safe_load(params.read_text())
    raw["split"]["cold_valid_fraction"] = 0.0
    p2 = tmp_path / "no_cold_valid.yaml"
    p2.write_text(yaml.safe_dump(raw))
    res = runner.invoke(app, ["stage", "split", "--dataset", str(dataset), "--params", str(p2), "--workspace", str(ws)])
    assert res.exit_code == 0
    with pytest.raises(DataError, match="cold-valid slice"):
        run_tune(StageContext.from_files(dataset, p2, ws), ["itemknn"], trials=1, objective="cold_valid")


def test_every_model_with_hyper_parameters_declares_a_search_space():
    from mmrec.models import available_models
    from mmrec.models.registry import get_model_class
    from mmrec.tuning.spaces import SEARCH_SPACES, search_space

    plumbing = {"seed", "device", "modalities", "weights", "max_epochs", "eval_every", "patience", "min_epochs"}
    for name in available_models():
        takes = set(get_model_class(name).param_names())
        assert name in SEARCH_SPACES, f"{name} declares no search space"
        assert set(SEARCH_SPACES[name]) <= takes, name
        assert bool(SEARCH_SPACES[name]) == bool(takes - plumbing), name
    space = search_space(
        "lightgcn", {"lightgcn": {"lr": {"low": 0.001, "high": 0.05, "log": True}, "n_layers": {"choices": [1, 2]}}}
    )
    assert space["lr"].low == 0.001 and space["n_layers"].values == (1, 2) and "reg" in space
    with pytest.raises(ConfigError, match=r"tune\.spaces\.lightgcn: \['depth'\] are not arguments"):
        search_space("lightgcn", {"lightgcn": {"depth": {"low": 1, "high": 2}}})
    with pytest.raises(ConfigError, match=r"tune\.spaces\.bpr\.lr: a log-scaled range needs low > 0"):
        search_space("bpr", {"bpr": {"lr": {"low": 0, "high": 1, "log": True}}})


def test_split_divides_cold_items_by_time_and_keeps_old_hashes():
    import pandas as pd

    from mmrec.config import SplitParams
    from mmrec.data.splits import split_hash, split_interactions

    rows = [(f"u{u}", f"i{i}", 100 * i + u) for u in range(6) for i in range(10) if (u + i) % 3]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    fr = split_interactions(df, SplitParams(cold_item_fraction=0.4, cold_valid_fraction=0.5))
    assert set(fr.cold_valid.item_id) == {"i6", "i7"} and set(fr.cold_test.item_id) == {"i8", "i9"}
    warm_items = set(fr.train.item_id) | set(fr.valid.item_id) | set(fr.test.item_id)
    assert not warm_items & (set(fr.cold_valid.item_id) | set(fr.cold_test.item_id))
    old = split_interactions(df, SplitParams(cold_item_fraction=0.4))
    assert old.cold_valid.empty and set(old.cold_test.item_id) == {"i6", "i7", "i8", "i9"}
    # without a cold_valid part the hash is the one the four-part split had
    import hashlib

    from mmrec.data.splits import _tsv_bytes

    h = hashlib.sha256()
    for part in ("train", "valid", "test", "cold_test"):
        h.update(part.encode())
        h.update(_tsv_bytes(getattr(old, part)))
    assert split_hash(old) == h.hexdigest() != split_hash(fr)


def test_stage_tune_runs_the_params_search(prepared):
    dataset, params, ws = prepared
    raw = yaml.safe_load(params.read_text())
    raw["tune"].update(models=["itemknn"], trials=2)
    params.write_text(yaml.safe_dump(raw))
    res = runner.invoke(
        app,
        ["stage", "tune", "--dataset", str(dataset), "--params", str(params), "--workspace", str(ws)],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{") :])
    assert out["models"]["itemknn"]["trials"]["run"] == 2 and out["overlay"].endswith("params/tiny.yaml")
    assert set(yaml.safe_load((ws / "params/tiny.yaml").read_text())["train"]["params"]) == {"itemknn"}


def test_dvc_tune_stage_is_frozen_and_off_the_default_path():
    from dvc.repo import Repo

    from tests.conftest import REPO

    repo = Repo(str(REPO))
    stages = {s.name: s for s in repo.index.stages}
    tune = stages["tune"]
    assert tune.frozen and not tune.outs and tune.cmd.startswith("mmrec stage tune")
    assert {p for d in tune.deps if hasattr(d, "params") for p in d.params} >= {"tune", "train"}
    graph = repo.index.graph
    assert not list(graph.predecessors(tune))  # nothing depends on it: `dvc repro` never needs it


def test_trial_zero_is_the_current_configuration(prepared):
    from mmrec.context import StageContext
    from mmrec.tuning.spaces import Choice, FloatRange
    from mmrec.tuning.tune import current_values, run_tune

    dataset, params, ws = prepared
    space = {"lr": FloatRange(1e-4, 1e-1, log=True), "batch_size": Choice((16, 32))}
    assert current_values("bpr", space, {"batch_size": 16}) == {"lr": 2e-3, "batch_size": 16}  # lr: class default
    assert current_values("bpr", space, {"batch_size": 64}) is None  # outside the space: not enqueued
    raw = yaml.safe_load(params.read_text())
    raw["tune"]["spaces"] = {"bpr": {"batch_size": {"choices": [16, 32]}}}
    params.write_text(yaml.safe_dump(raw))
    first = run_tune(StageContext.from_files(dataset, params, ws), ["bpr"], trials=2)["models"]["bpr"]
    assert first["history"][0]["params"] == pytest.approx(
        {"lr": 2e-3, "reg": 3e-3, "batch_size": 16, "init_std": 0.01, "item_bias": False}
    )
    # a second search starts from what the first one wrote, so it cannot end below it
    again = run_tune(StageContext.from_files(dataset, params, ws), ["bpr"], trials=2)["models"]["bpr"]
    assert again["history"][0]["params"] == pytest.approx(first["best"]["params"], rel=1e-5)
    assert again["best"]["value"] >= first["best"]["value"]


def test_choose_confirmed_picks_the_best_mean_not_the_best_single_run():
    from mmrec.tuning.tune import _choose_confirmed

    record = {
        "history": [
            {"number": 0, "figures": {"valid": 0.30}, "best_epoch": 4},
            {"number": 3, "figures": {"valid": 0.31}, "best_epoch": 9},
        ],
        "best": {"number": 3, "value": 0.31},
    }
    confirmation = [
        {
            "number": 3,
            "params": {"lr": 0.1},
            "seeds": [42, 43, 44],
            "values": [0.31, 0.25, 0.26],
            "mean": 0.2733,
            "std": 0.03,
        },
        {
            "number": 0,
            "params": {"lr": 0.01},
            "seeds": [42, 43, 44],
            "values": [0.30, 0.29, 0.30],
            "mean": 0.2967,
            "std": 0.005,
        },
    ]
    _choose_confirmed(record, confirmation, 42)
    best = record["best"]
    assert best["number"] == 0 and best["params"] == {"lr": 0.01}
    assert best["value"] == pytest.approx(0.2967) and best["single_seed_value"] == 0.30
    assert best["figures"] == {"valid": 0.30} and best["best_epoch"] == 4 and best["seeds"] == [42, 43, 44]
    assert record["confirmation"] is confirmation


def test_confirmation_retrains_the_best_trials_with_more_seeds_and_writes_the_mean(prepared):
    from mmrec.context import StageContext
    from mmrec.tuning.tune import run_tune

    dataset, params, ws = prepared
    raw = yaml.safe_load(params.read_text())
    raw["tune"].update(confirm_top=2, confirm_seeds=1)
    params.write_text(yaml.safe_dump(raw))
    res = run_tune(StageContext.from_files(dataset, params, ws), ["itemknn", "bpr"], trials=3)
    bpr = res["models"]["bpr"]
    rows = bpr["confirmation"]
    complete = {h["number"]: h["value"] for h in bpr["history"] if h["state"] == "complete"}
    assert len(rows) == 2 and all(r["seeds"] == [42, 43] and len(r["values"]) == 2 for r in rows)
    # the first value of each row is the trial's own; the two are the best distinct complete trials
    assert all(r["values"][0] == pytest.approx(complete[r["number"]]) for r in rows)
    assert {r["number"] for r in rows} <= set(complete)
    chosen = max(rows, key=lambda r: r["mean"])
    assert bpr["best"]["number"] == chosen["number"] and bpr["best"]["value"] == pytest.approx(chosen["mean"])
    assert "confirmation" not in res["models"]["itemknn"]  # no seed: deterministic, nothing to confirm
    overlay = (ws / "params" / "tiny.yaml").read_text()
    assert "# tuned bpr: valid recall@20" in overlay and "mean of 2 seeds" in overlay
    assert yaml.safe_load(overlay)["train"]["params"]["bpr"]["lr"] == pytest.approx(chosen["params"]["lr"], rel=1e-5)
    assert "Chosen by mean of 2 seeds" in (ws / "reports/tiny/tuning/tuning.md").read_text()


def test_confirmation_fits_do_not_use_up_the_next_models_search_budget(prepared, monkeypatch):
    """`--timeout` bounds the searches; the confirmation fits after one model's search are
    outside it, so the next model still gets what the first search left (it got 1 s before)."""
    import time

    from mmrec.context import StageContext
    from mmrec.tuning import tune as tune_mod

    dataset, params, ws = prepared
    raw = yaml.safe_load(params.read_text())
    raw["tune"].update(confirm_top=1, confirm_seeds=1)
    params.write_text(yaml.safe_dump(raw))
    offset = [0.0]
    real = time.perf_counter
    monkeypatch.setattr(time, "perf_counter", lambda: real() + offset[0])
    confirm, tune_model = tune_mod.Tuner._confirm, tune_mod.Tuner.tune_model

    def slow_confirm(self, *args, **kwargs):  # the confirmation fits "take" three hours
        out = confirm(self, *args, **kwargs)
        offset[0] += 10_000.0
        return out

    budgets: dict[str, float] = {}

    def spy(self, name, trials, timeout, tracker):
        budgets[name] = timeout
        return tune_model(self, name, trials, timeout, tracker)

    monkeypatch.setattr(tune_mod.Tuner, "_confirm", slow_confirm)
    monkeypatch.setattr(tune_mod.Tuner, "tune_model", spy)
    res = tune_mod.run_tune(StageContext.from_files(dataset, params, ws), ["bpr", "itemknn"], trials=3, timeout=600)
    searched = res["models"]["bpr"]["budget"]["search_seconds"]
    assert searched < 600 and res["models"]["bpr"]["budget"]["seconds"] >= 10_000
    assert budgets["bpr"] == pytest.approx(300)
    assert budgets["itemknn"] == pytest.approx(600 - searched, abs=0.5)


def test_a_cold_valid_search_on_a_slice_recall_ranks_whole_is_refused(prepared, caplog):
    """The tiny fixture's cold-valid slice has a handful of items: Recall@20 ranks them all, so
    every trial would score 1.0; `cold_valid` is refused, `combined` warns and runs."""
    from mmrec.context import StageContext
    from mmrec.tuning.tune import OBJECTIVE_K, run_tune

    dataset, params, ws = prepared
    split = json.loads((ws / "data/tiny/splits/temporal/split.json").read_text())
    assert 0 < split["counts"]["cold_valid"]["items"] <= OBJECTIVE_K
    ctx = StageContext.from_files(dataset, params, ws)
    with pytest.raises(DataError, match=r"cannot tell trials apart.*cold-valid slice .* has \d+ items"):
        run_tune(ctx, ["itemknn"], trials=1, objective="cold_valid")
    with caplog.at_level("WARNING", logger="mmrec.tuning.tune"):
        run_tune(ctx, ["itemknn"], trials=1, objective="combined")
    assert "only the warm part of the objective ranks trials" in caplog.text


def test_only_trials_near_the_best_are_confirmed():
    """Seed confirmation is for near-ties: a trial far below the best cannot win on the mean."""
    import optuna

    from mmrec.tuning.tune import confirmation_candidates

    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}

    def trial(number: int, value: float, lr: float):
        t = optuna.trial.create_trial(params={"lr": lr}, distributions=dist, value=value)
        t.number = number
        return t

    trials = [
        trial(0, 0.2259, 0.01),
        trial(1, 0.1214, 0.0003),  # 46% below: an mm_graph start-up trial on ml100k-mm
        trial(2, 0.2240, 0.02),  # within 1%
        trial(3, 0.2259, 0.01),  # same parameters as trial 0: not a second candidate
        optuna.trial.create_trial(  # pruned trials have no final value: never candidates
            params={"lr": 0.05}, distributions=dist, intermediate_values={1: 0.3}, state=optuna.trial.TrialState.PRUNED
        ),
    ]
    assert [t.number for t in confirmation_candidates(trials, top=3, within=0.05)] == [0, 2]
    assert [t.number for t in confirmation_candidates(trials, top=3, within=0.5)] == [0, 2, 1]
    assert [t.number for t in confirmation_candidates(trials, top=1, within=1.0)] == [0]
    assert confirmation_candidates(trials[4:], top=2, within=0.05) == []
