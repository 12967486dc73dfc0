"""The pipeline stages as plain functions: what `mmrec stage NAME`, DVC and Prefect tasks call.

Each stage reads named artifacts under the workspace (`data/`, `artifacts/`, `reports/`) and
writes its own atomically; nothing passes through globals, so any orchestrator can run them.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmrec.constants import MODALITIES, RATING
from mmrec.context import StageContext
from mmrec.errors import ConfigError, StageError
from mmrec.io import atomic_dir, clean_interrupted, write_json, write_text
from mmrec.paths import DatasetPaths
from mmrec.stage_inputs import load_split_data, model_names, resolved_model_params, seed_everything, validated_table

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

STAGES = (  # in pipeline order (what `mmrec stage` accepts)
    "ingest",
    "validate",
    "ingest_events",  # the event log (POST /events) snapshotted, validated, deduplicated (mmrec/events/ingest.py)
    "split",
    "extract_text",
    "extract_image",
    "extract_audio",
    "extract_video",
    "tune",  # not run by the pipeline unless asked (`mmrec pipeline --tune`; frozen in dvc.yaml)
    "train",
    "evaluate",
    "materialize",
)


def run_ingest(ctx: StageContext) -> dict[str, Any]:
    from mmrec.data.warehouse import ingest_dataset

    return ingest_dataset(ctx.spec, ctx.paths, ctx.params.ingest).to_dict()


def run_validate(ctx: StageContext) -> dict[str, Any]:
    from mmrec.data.warehouse import read_manifest
    from mmrec.validation import validate_dataset

    read_manifest(ctx.paths)  # clear error when ingest has not run
    return validate_dataset(ctx.spec, ctx.paths, ctx.params.validate_, ctx.params.extract.image.max_pixels).to_dict()


def _with_events(ctx: StageContext, inter: pd.DataFrame) -> pd.DataFrame:
    """The interactions plus the ingested event log (`ingest_events` stage), when there is one.

    The snapshot was validated with the interactions suite and deduplicated by event_id; an
    event repeating a (user, item, time) the dataset already has is the same interaction, kept once.
    """
    import pandas as pd

    from mmrec.constants import ITEM_ID, TIMESTAMP, USER_ID
    from mmrec.events.ingest import snapshot_path

    path = snapshot_path(ctx.paths)
    if not path.is_file():
        return inter
    events = pd.read_parquet(path, columns=[USER_ID, ITEM_ID, TIMESTAMP])
    if events.empty:
        return inter
    events = events.merge(
        inter[[USER_ID, ITEM_ID, TIMESTAMP]], how="left", indicator=True, on=[USER_ID, ITEM_ID, TIMESTAMP]
    )
    events = events[events["_merge"] == "left_only"].drop(columns="_merge")
    log.info("split: %d interactions from the event log added to %d", len(events), len(inter))
    return pd.concat([inter, events], ignore_index=True)


def run_ingest_events(ctx: StageContext) -> dict[str, Any]:
    from mmrec.events.ingest import ingest_events

    return ingest_events(ctx)


def run_split(ctx: StageContext) -> dict[str, Any]:
    from mmrec.data.splits import split_interactions, write_split

    inter = validated_table(ctx, "interactions")
    min_rating = ctx.spec.interactions.min_rating
    if min_rating is not None:
        inter = inter[inter[RATING] >= min_rating]
    inter = _with_events(ctx, inter)
    sp_params = ctx.params.split
    frames = split_interactions(inter, sp_params)
    digest = write_split(frames, ctx.paths, sp_params.kind, sp_params)
    counts = {k: len(v) for k, v in frames.parts().items()}
    log.info("split %s: %s, hash %s", sp_params.kind, counts, digest[:12])
    return {"kind": sp_params.kind, "hash": digest, "counts": counts}


def run_extract(ctx: StageContext, modality: str) -> dict[str, Any]:
    """Encode one modality of every validated item with the configured pretrained encoder."""
    from mmrec.extract import extract_modality

    return extract_modality(ctx.spec, ctx.paths, modality, ctx.params.extract)


def run_train(ctx: StageContext, models: Sequence[str] | None = None) -> dict[str, Any]:
    """Fit every configured model on train (early stopping on valid) and save them as one swap.

    The models folder is rebuilt aside (`.models.*.tmp`) and replaces the old one whole, so a
    killed run leaves the previous models, `train_summary.json` and training set together, never
    a mix of new and old. Models of an earlier run that this one does not train are carried over
    (hard links). Each model.json records the split, data and feature hashes it was trained from
    (`mmrec.provenance`); leftovers of a killed run are removed first.
    """
    from mmrec.distributed.ddp import is_main_process
    from mmrec.models import create_model
    from mmrec.models.item_features import feature_path, load_item_features, modalities_of, with_features
    from mmrec.provenance import training_provenance

    if is_main_process():
        for leftover in clean_interrupted(ctx.paths.models):
            log.info("removed %s (left by an interrupted run)", leftover)
    data = load_split_data(ctx)
    summary: dict[str, Any] = {"split": {"kind": data.kind, "hash": data.split_hash}, "models": {}}
    names = model_names(ctx, models)
    model_params = resolved_model_params(ctx, names, data.item_ids)
    built = [(name, create_model(name, **model_params[name])) for name in names]
    # Multimodal models get the item features they declare, aligned with the item index; items
    # without a vector are masked, never a zero vector taken as signal.
    needed = sorted({m for _, model in built for m in modalities_of(model)})
    train = data.train
    if needed:
        feats, masks = load_item_features(ctx.paths, ctx.params.extract, data.item_ids, needed)
        train = with_features(data.train, feats, masks)
    for name, model in built:
        seed_everything(ctx.params.train.seed)
        log.info("training %s %s", name, model.get_params())
        model.fit(train, data.valid)
        files = {m: feature_path(ctx.paths, ctx.params.extract, m) for m in modalities_of(model)}
        model.provenance = training_provenance(ctx.paths, data.kind, data.split_hash, files)
        summary["models"][name] = {
            "params": model.get_params(),
            "train_seconds": round(model.train_seconds, 3),
            "epochs": model.epochs,
            "best_epoch": model.best_epoch,
        }
        log.info("trained %s in %.1fs (%d epochs)", name, model.train_seconds, model.epochs)
    if not is_main_process():  # under torchrun every rank holds the same models; one writes them
        return summary
    own = {"train_summary.json", "training_set.parquet", *names}
    previous = ctx.paths.models / "train_summary.json"
    if models and previous.is_file():  # a partial run keeps the other models' entries of the same split
        try:
            old = json.loads(previous.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = {}
        if old.get("split", {}).get("hash") == data.split_hash:
            summary["models"] = {
                **{k: v for k, v in old.get("models", {}).items() if k not in summary["models"]},
                **summary["models"],
            }
    summary["params_files"] = list(ctx.params_files)
    with atomic_dir(ctx.paths.models) as tmp:
        if ctx.paths.models.is_dir():
            for entry in sorted(ctx.paths.models.iterdir()):
                if entry.name not in own and not entry.name.startswith("."):
                    _link_copy(entry, tmp / entry.name)
        for name, model in built:
            model.save(tmp / name)
        if ctx.params.features.point_in_time_training:
            summary["point_in_time"] = write_point_in_time_training_set(ctx, tmp)
        write_json(tmp / "train_summary.json", summary)
    if ctx.params.features.point_in_time_training:  # report where it ended up, not the temp folder
        summary["point_in_time"]["path"] = str(ctx.paths.models / "training_set.parquet")
    return summary


def _link_copy(src: Path, dst: Path) -> None:
    """Copy a file or folder by hard links (instant, no extra space); plain copy where linking fails."""
    import shutil

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    if src.is_dir():
        shutil.copytree(src, dst, copy_function=link)
    else:
        link(str(src), str(dst))


def run_tune_stage(ctx: StageContext) -> dict[str, Any]:
    """`mmrec stage tune` (the DVC `tune` stage): the search of `tune:` in params.yaml (mmrec/tuning)."""
    from mmrec.tuning.tune import run_tune

    result = run_tune(ctx)
    return {k: v for k, v in result.items() if k != "models"} | {
        "models": {n: {"best": r.get("best"), "trials": r["trials"]} for n, r in result["models"].items()}
    }


def write_point_in_time_training_set(ctx: StageContext, folder: Path | None = None) -> dict[str, Any]:
    """The training interactions joined with item/user statistics as of each one (Feast's
    `get_historical_features`), written beside the models for training code to read."""
    from mmrec.feast.historical import point_in_time_training_set
    from mmrec.io import write_parquet

    df = point_in_time_training_set(ctx)
    path = (ctx.paths.models if folder is None else folder) / "training_set.parquet"
    write_parquet(path, df)
    return {"path": str(path), "rows": len(df), "columns": [str(c) for c in df.columns]}


def run_evaluate(ctx: StageContext, models: Sequence[str] | None = None) -> dict[str, Any]:
    """Evaluate the saved models and write metrics.json, metrics.md and the report.

    Per model: valid (selection), test (touched once), the sparse-user slice of test, the cold
    slice with its random reference and personalisation, the learning curve and timings; then
    paired bootstrap ratios against `evaluate.reference` and, when configured, the per-modality
    ablation (`mmrec.ablation`). The report is rendered from the metrics dict (`mmrec.report`).
    """
    import scipy.sparse as sp

    from mmrec import analysis
    from mmrec.evaluate import UserMetrics, user_metrics
    from mmrec.models import load_model
    from mmrec.provenance import check_split
    from mmrec.report import write_report

    data = load_split_data(ctx)
    ev = ctx.params.evaluate
    ks = tuple(ev.ks)
    bs = ev.batch_size
    train = data.train.matrix
    history = sp.csr_matrix(train + data.valid)
    history.data[:] = 1.0
    has_cold = data.cold_test is not None and data.cold_test.nnz > 0 and len(data.cold_items) > 0
    has_cold_valid = data.cold_valid is not None and data.cold_valid.nnz > 0 and len(data.cold_valid_items) > 0
    k_main = 20 if 20 in ks else max(ks)
    lift_keys = [f"{m}@{k}" for m in ("recall", "ndcg") for k in ks]
    names = model_names(ctx, models)

    def slices(score_fn: Any) -> dict[str, UserMetrics]:
        test = user_metrics(score_fn, data.test, history, ks, batch_size=bs)
        out = {"test": test, "sparse": test.subset(analysis.sparse_user_mask(train, test.users, ev.sparse_max_train))}
        if has_cold:
            assert data.cold_test is not None
            out["cold"] = user_metrics(score_fn, data.cold_test, history, ks, candidates=data.cold_items, batch_size=bs)
        return out

    rand = slices(analysis.random_score_fn(len(data.item_ids), ev.seed))
    random_ref: dict[str, Any] = {part: {"measured": um.summary(ks)} for part, um in rand.items()}
    null: dict[str, Any] = {}
    from mmrec import cold as cold_slice

    if has_cold:
        assert data.cold_test is not None
        random_ref["cold"]["expected"] = analysis.expected_random(rand["cold"], ks)
        # many random global orders (one per draw, shared by every user): the slice's null
        null = cold_slice.permutation_null(
            data.cold_test,
            history,
            data.cold_items,
            ks,
            ev.cold_permutations,
            ev.seed,
            metrics=[f"recall@{k_main}", f"ndcg@{k_main}"],
        )
        random_ref["cold"]["permutation_null"] = cold_slice.public(null)
        random_ref["cold"]["ceilings"] = cold_slice.ceilings(
            data.cold_test, history, data.cold_items, metrics=[f"recall@{k_main}", f"ndcg@{k_main}"]
        )
    results: dict[str, Any] = {}
    per_user: dict[str, dict[str, UserMetrics]] = {}
    for name in names:
        folder = ctx.paths.model_dir(name)
        if not (folder / "model.json").is_file():
            raise StageError(f"{folder}: model {name!r} not trained; run `mmrec stage train` first")
        model = load_model(folder)
        check_split(model, data.split_hash, f"{folder} ({name!r})", "re-run `mmrec stage train`")
        if model.item_ids is None or list(model.item_ids) != list(data.item_ids):
            raise StageError(f"{folder}: model {name!r} was trained on another split; re-run `mmrec stage train`")
        start = time.perf_counter()
        per_user[name] = slices(model.score)
        cold_block: dict[str, Any] | None = None
        if has_cold:  # no credit from the tie rule: all-tied users at the random expectation
            tied = cold_slice.tied_users(model.score, per_user[name]["cold"].users, data.cold_items, bs)
            per_user[name]["cold"], cold_block = cold_slice.cold_summary(per_user[name]["cold"], tied, ks)
            if cold_block.get("unscored"):
                log.info(
                    "%s cannot score cold items (all tied for every user): cold figures = random expectation", name
                )
        entry: dict[str, Any] = {
            "valid": user_metrics(model.score, data.valid, train, ks, batch_size=bs).summary(ks),
            **{part: um.summary(ks) for part, um in per_user[name].items()},
        }
        if cold_block is not None:
            entry["cold"] = cold_block
            if not cold_block.get("unscored"):  # an unscored model's figures are the random expectation by construction
                entry["cold"]["p_value"] = cold_slice.p_values(null, cold_block)
        if has_cold_valid:  # validation of cold-start settings (what `mmrec tune --objective cold_valid` uses)
            assert data.cold_valid is not None
            cv = user_metrics(model.score, data.cold_valid, train, ks, candidates=data.cold_valid_items, batch_size=bs)
            cv_tied = (
                cold_slice.tied_users(model.score, cv.users, data.cold_valid_items, bs)
                if len(cv.users)
                else np.zeros(0, bool)
            )
            entry["cold_valid"] = cold_slice.cold_summary(cv, cv_tied, ks)[1]
        entry["sparse"]["max_train_interactions"] = ev.sparse_max_train
        if has_cold:
            entry["cold_random_lift"] = analysis.lift(entry["cold"], random_ref["cold"]["expected"], lift_keys)
            entry["cold_personalisation"] = analysis.rank_personalisation(
                model.score, per_user[name]["cold"].users, data.cold_items, ev.personalisation_pairs, ev.seed
            )
        entry["train_seconds"] = round(model.train_seconds, 3)
        entry["epochs"] = model.epochs
        entry["best_epoch"] = model.best_epoch
        speed = analysis.seconds_per_epoch(model.history, model.train_seconds, model.epochs)
        entry["seconds_per_epoch"] = round(speed, 4)
        entry["eval_seconds"] = round(time.perf_counter() - start, 3)
        entry["history"] = analysis.compact_history(model.history)
        entry["params"] = model.get_params()
        flag = truncation_flag(model)
        if flag:
            entry["stopping_flag"] = flag
            log.warning("%s: %s", name, flag)
        results[name] = entry
    metric = ev.selection_metric
    best = max(results, key=lambda m: results[m]["valid"].get(metric, float("-inf"))) if results else None
    comparisons: dict[str, Any] = {
        "reference": ev.reference,
        "metrics": [f"recall@{k_main}", f"ndcg@{k_main}"],
        "confidence": ev.confidence,
        "resamples": ev.bootstrap_resamples,
        "seed": ev.seed,
    }
    if ev.reference in per_user:
        for part in per_user[ev.reference]:
            comparisons[part] = analysis.compare_to_reference(
                {n: pu[part] for n, pu in per_user.items()},
                ev.reference,
                comparisons["metrics"],
                ev.bootstrap_resamples,
                ev.seed,
                ev.confidence,
            )["models"]
    else:
        comparisons["skipped"] = f"reference model {ev.reference!r} is not among the evaluated models {names}"
    report: dict[str, Any] = {
        "dataset": ctx.spec.name,
        "split": {"kind": data.kind, "hash": data.split_hash, "warm_hash": _warm_hash(ctx, data.kind)},
        "counts": {
            "users": int(data.train.n_users),
            "items": int(data.train.n_items),
            "cold_items": int(len(data.cold_items)),
            "cold_valid_items": int(len(data.cold_valid_items)),
        },
        "selection_metric": metric,
        "best_model": best,
        "models": results,
        "random": random_ref,
        "comparisons": comparisons,
    }
    run = {
        "id": uuid.uuid4().hex[:12],
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "split_hash": data.split_hash,
        "models": list(names),
        "params_files": list(ctx.params_files),
    }
    for entry in results.values():
        entry["run"] = {k: run[k] for k in ("id", "at", "split_hash")}
    report["run"] = run
    if models:  # a partial run (`--models a,b`): merged into the existing comparison, not replacing it
        report = merge_partial_report(read_existing_metrics(ctx.paths), report)
    else:
        report["runs"] = [run]
    report["targets"] = analysis.quality_targets(report, ev.cold_lift_target)
    if ev.ablation.model:
        from mmrec.ablation import run_ablation

        report["ablation"] = run_ablation(ctx.params, ctx.paths, data, history, spec=ctx.spec)
    write_json(ctx.paths.metrics, report)
    write_text(ctx.paths.reports / "metrics.md", format_metrics_markdown(report))
    write_report(report, ctx.paths.reports)
    return report


def _warm_hash(ctx: StageContext, kind: str) -> str | None:
    """The split's warm hash (train/valid/test only) from split.json; None for splits written before it."""
    try:
        return json.loads((ctx.paths.splits(kind) / "split.json").read_text(encoding="utf-8")).get("warm_hash")
    except (OSError, ValueError):
        return None


def truncation_flag(model: Any) -> str | None:
    """Why an epoch-trained model's training may have been cut short, or None.

    Best epoch = the first validation check: the model may have stopped before it learned
    (patience/min_epochs too low for this dataset, or a learning rate too high). Best epoch = the
    last epoch at `max_epochs`: it was still improving when the budget ran out.
    """
    checks = [int(h["epoch"]) for h in model.history if any(str(k).startswith("valid_") for k in h)]
    if len(checks) < 1 or not model.best_epoch:
        return None
    max_epochs = getattr(model, "max_epochs", None)
    if model.best_epoch == checks[0] and len(checks) > 1:
        return (
            f"best epoch {model.best_epoch} is the first validation check: training may have stopped too "
            f"early; raise train.params.{model.name}.patience / min_epochs or lower its lr"
        )
    if max_epochs and model.best_epoch == checks[-1] == model.epochs == max_epochs:
        return (
            f"best epoch {model.best_epoch} is the last one (max_epochs {max_epochs}): still improving; "
            f"raise train.params.{model.name}.max_epochs"
        )
    return None


def read_existing_metrics(paths: DatasetPaths) -> dict[str, Any] | None:
    """The current metrics.json, or None when there is none (or it cannot be read)."""
    if not paths.metrics.is_file():
        return None
    try:
        return json.loads(paths.metrics.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable (%s); the partial run's report replaces it", paths.metrics, exc)
        return None


def merge_partial_report(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """A partial evaluation (`mmrec evaluate --models a,b`) merged into the existing report.

    The models of `new` replace their rows; every other model of `old` keeps its row, which
    records the run that produced it (`row["run"]`: id, time, split hash). Rows measured on
    another split (different hash) are not comparable and are dropped, with a log line and a
    `dropped` note in the report. The best model is chosen again over all rows; bootstrap ratios
    to the reference are kept only for rows measured in the same run as the reference row (a
    ratio needs both models' per-user values from one run). `runs` lists every run whose rows
    the report holds.
    """
    merged = dict(new)
    if not old or not isinstance(old.get("models"), dict):
        merged["runs"] = [new["run"]]
        return merged
    split_hash = new["split"]["hash"]
    keep: dict[str, Any] = {}
    dropped: dict[str, str] = {}
    for name, row in old["models"].items():
        if name in new["models"]:
            continue
        row_hash = (row.get("run") or {}).get("split_hash") or old.get("split", {}).get("hash")
        if row_hash != split_hash:
            dropped[name] = f"measured on split {str(row_hash)[:12]}, this run's split is {split_hash[:12]}"
            continue
        if "run" not in row:  # a report written before runs were recorded
            row = {**row, "run": {"id": "earlier", "at": None, "split_hash": row_hash}}
        keep[name] = row
    if dropped:
        log.warning(
            "metrics.json: rows of %s dropped (%s)", sorted(dropped), "; ".join(f"{k}: {v}" for k, v in dropped.items())
        )
        merged["dropped"] = dropped
    order = [n for n in old["models"] if n in keep or n in new["models"]] + [
        n for n in new["models"] if n not in old["models"]
    ]
    merged["models"] = {n: new["models"][n] if n in new["models"] else keep[n] for n in order}
    metric = new["selection_metric"]
    merged["best_model"] = max(merged["models"], key=lambda m: merged["models"][m]["valid"].get(metric, float("-inf")))
    meta = ("reference", "metrics", "confidence", "resamples", "seed", "skipped")
    reference = new["comparisons"].get("reference")
    ref_run = (merged["models"].get(reference) or {}).get("run", {}).get("id")
    comparisons = {k: v for k, v in new["comparisons"].items() if k in meta}
    old_cmp = old.get("comparisons") or {}
    parts = {p for c in (new["comparisons"], old_cmp) for p, v in c.items() if p not in meta and isinstance(v, dict)}
    for part in sorted(parts):
        rows = dict(new["comparisons"].get(part) or {})
        if old_cmp.get("reference") == reference:
            for name, ratio in (old_cmp.get(part) or {}).items():
                if name in keep and keep[name]["run"]["id"] == ref_run:
                    rows.setdefault(name, ratio)
        if rows:
            comparisons[part] = rows
    if any(p in comparisons for p in parts):
        comparisons.pop("skipped", None)
    merged["comparisons"] = comparisons
    runs = {r["id"]: r for r in (old.get("runs") or ([old["run"]] if old.get("run") else [])) if isinstance(r, dict)}
    earlier = [n for n, row in keep.items() if row["run"]["id"] == "earlier"]
    if earlier:  # rows of a report written before runs were recorded
        runs["earlier"] = {"id": "earlier", "at": None, "split_hash": split_hash, "models": earlier, "params_files": []}
    runs[new["run"]["id"]] = new["run"]
    used = {row["run"]["id"] for row in merged["models"].values()}
    merged["runs"] = [r for r in runs.values() if r["id"] in used]
    if "ablation" not in merged and "ablation" in old:
        merged["ablation"] = old["ablation"]
    return merged


def run_materialize(ctx: StageContext) -> dict[str, Any]:
    """Export the feature tables, apply the Feast repo and materialise the online store (mmrec.feast)."""
    from mmrec.feast.materialize import run_materialize as materialize

    return materialize(ctx)


def format_metrics_table(report: dict[str, Any], k: int = 20) -> str:
    """A fixed-width comparison table (printed by the demo and `mmrec evaluate`)."""
    cols = [f"recall@{k}", f"ndcg@{k}", f"precision@{k}", f"hit@{k}", f"coverage@{k}"]
    head = f"{'model':<12} {'part':<6} " + " ".join(f"{c:>13}" for c in cols) + f" {'train s':>8} {'epochs':>6}"
    lines = [head, "-" * len(head)]
    for name, entry in report["models"].items():
        for part in ("valid", "test", "sparse", "cold"):
            if part not in entry:
                continue
            vals = " ".join(f"{entry[part].get(c, float('nan')):>13.4f}" for c in cols)
            tail = f" {entry['train_seconds']:>8.1f} {entry['epochs']:>6d}" if part == "valid" else ""
            lines.append(f"{name:<12} {part:<6} {vals}{tail}")
    return "\n".join(lines)


def format_metrics_markdown(report: dict[str, Any]) -> str:
    ks = sorted({int(key.split("@")[1]) for e in report["models"].values() for key in e["valid"] if "@" in key})
    out = [
        f"# Evaluation: {report['dataset']}",
        "",
        f"Split `{report['split']['kind']}`, hash `{report['split']['hash'][:12]}`. "
        f"Selection on validation `{report['selection_metric']}`: best model **{report['best_model']}**. "
        "Full ranking over all items; training items masked (and validation items for test).",
        "",
    ]
    for k in ks:
        cols = [f"recall@{k}", f"ndcg@{k}", f"precision@{k}", f"map@{k}", f"hit@{k}", f"coverage@{k}"]
        out += [
            f"## @{k}",
            "",
            "| model | part | " + " | ".join(cols) + " | train s | epochs |",
            "|" + "---|" * (len(cols) + 4),
        ]
        for name, entry in report["models"].items():
            for part in ("valid", "test", "cold"):
                if part in entry:
                    vals = " | ".join(f"{entry[part].get(c, float('nan')):.4f}" for c in cols)
                    out.append(f"| {name} | {part} | {vals} | {entry['train_seconds']:.1f} | {entry['epochs']} |")
        out.append("")
    return "\n".join(out)


STAGE_FUNCTIONS: dict[str, Callable[[StageContext], dict[str, Any]]] = {
    "ingest": run_ingest,
    "validate": run_validate,
    "ingest_events": run_ingest_events,
    "split": run_split,
    **{f"extract_{m}": functools.partial(run_extract, modality=m) for m in MODALITIES},
    "tune": run_tune_stage,
    "train": run_train,
    "evaluate": run_evaluate,
    "materialize": run_materialize,
}


def run_stage(name: str, ctx: StageContext) -> dict[str, Any]:
    if name not in STAGE_FUNCTIONS:
        raise ConfigError(f"unknown stage {name!r}; stages: {list(STAGE_FUNCTIONS)}")
    from mmrec.runtime import configure_threads

    configure_threads(ctx.params.runtime)  # one stage at a time in this process: the whole budget
    start = time.perf_counter()
    result = STAGE_FUNCTIONS[name](ctx)
    log.info("stage %s done in %.1fs", name, time.perf_counter() - start)
    return result
