"""Per-modality ablation: what each modality adds, measured against a random-vector control.

A multimodal model that beats its ID-only counterpart may do so because of the content or
merely because it has more parameters (or a regulariser that happens to help). The ablation
trains the same model on each modality alone, on all of them, and on *controls* where a
modality's vectors are replaced by seeded Gaussian vectors of the same dimension and missing
pattern (`mmrec.models.item_features.random_control_features`). Only what a modality adds over its
control is content; the verdicts below say so per modality, with a paired bootstrap CI over
users, and say "adds nothing" when that is what the numbers show.

Variant names (params `evaluate.ablation.variants`):
- a modality (`text`, `image`, ...): that modality alone;
- `all`: the modalities the model is configured with;
- `random_<modality>`: that modality alone, replaced by the control;
- `random`: all configured modalities, each replaced by its control.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import scipy.sparse as sp

from mmrec.analysis import bootstrap_ratio, compact_history, seconds_per_epoch
from mmrec.constants import MODALITIES
from mmrec.errors import ConfigError, DataError
from mmrec.evaluate import UserMetrics, user_metrics
from mmrec.models import available_models, create_model
from mmrec.models.item_features import load_item_features, modalities_of, random_control_features, with_features
from mmrec.models.modalities import feature_availability, resolve_model_params
from mmrec.stage_inputs import seed_everything

if TYPE_CHECKING:
    from mmrec.config import Params
    from mmrec.data.interactions import SplitData
    from mmrec.paths import DatasetPaths

log = logging.getLogger(__name__)

RANDOM_PREFIX = "random_"


@dataclass(frozen=True)
class Variant:
    """One ablation run: the modalities the model gets, and which of them are random controls."""

    name: str
    modalities: tuple[str, ...]
    random: tuple[str, ...] = ()

    @property
    def is_control(self) -> bool:
        return bool(self.random)


def parse_variants(names: Sequence[str], configured: Sequence[str]) -> list[Variant]:
    """Variants from their names (see the module docstring), in the given order.

    Args:
        names: `evaluate.ablation.variants`.
        configured: the modalities the ablated model is configured with (what `all` means).

    Raises:
        ConfigError: an unknown or repeated name, naming the allowed forms.
    """
    allowed = f"a modality {list(MODALITIES)}, 'all', 'random', or 'random_<modality>'"
    if not names:
        raise ConfigError(f"evaluate.ablation.variants is empty; list some of: {allowed}")
    if len(set(names)) != len(names):
        raise ConfigError(f"evaluate.ablation.variants repeats a name: {list(names)}")
    base = tuple(configured)
    out: list[Variant] = []
    for name in names:
        if name == "all":
            out.append(Variant(name, base))
        elif name == "random":
            out.append(Variant(name, base, base))
        elif name in MODALITIES:
            out.append(Variant(name, (name,)))
        elif name.startswith(RANDOM_PREFIX) and name[len(RANDOM_PREFIX) :] in MODALITIES:
            m = name[len(RANDOM_PREFIX) :]
            out.append(Variant(name, (m,), (m,)))
        else:
            raise ConfigError(f"evaluate.ablation.variants: unknown variant {name!r}; expected {allowed}")
    return out


def control_of(variant: Variant, variants: Sequence[Variant]) -> Variant | None:
    """The control a real-feature variant is judged against: same modalities, all random."""
    if variant.is_control:
        return None
    for v in variants:
        if v.is_control and set(v.modalities) == set(variant.modalities) and set(v.random) == set(v.modalities):
            return v
    return None


def variant_params(base: dict[str, Any], variant: Variant) -> dict[str, Any]:
    """The model's hyper-parameters for one variant: `modalities` set, per-modality weights of
    modalities the variant drops removed (content_knn's `weights`)."""
    params = {**base, "modalities": list(variant.modalities)}
    weights = params.get("weights")
    if isinstance(weights, dict):
        params["weights"] = {m: w for m, w in weights.items() if m in variant.modalities}
    return params


def verdict(ratio: dict[str, Any]) -> str:
    """'adds' when the CI lies above 1, 'worse' when below, else 'nothing' (not distinguishable)."""
    if ratio.get("ratio") is None:
        return "nothing"
    if ratio["low"] > 1.0:
        return "adds"
    if ratio["high"] < 1.0:
        return "worse"
    return "nothing"


def sentence(name: str, control: str, part: str, metric: str, value: float, ref: float, ratio: dict[str, Any]) -> str:
    """The report's one-line reading of a variant against its control."""
    what = "all modalities together" if name == "all" else name
    adds, is_ = ("add", "are") if name == "all" else ("adds", "is")
    where = {"test": "warm test", "cold": "the cold slice"}.get(part, part)
    if ratio.get("ratio") is None:
        return f"{what}: no {metric} on {where} to compare with the control ({control} scores 0)."
    ci = f"×{ratio['ratio']:.2f}, {int(round(ratio['confidence'] * 100))}% CI [{ratio['low']:.2f}, {ratio['high']:.2f}]"
    numbers = f"{metric} {value:.4f} vs {ref:.4f}, {ci}"
    v = verdict(ratio)
    if v == "adds":
        return (
            f"{what} {adds} {value - ref:+.4f} {metric} on {where} over the random control `{control}` "
            f"({value:.4f} vs {ref:.4f}, {ci}): content, not capacity."
        )
    if v == "worse":
        return f"{what} {is_} worse than the random control `{control}` on {where} ({numbers})."
    return (
        f"{what} {adds} nothing beyond the random control `{control}` on {where} ({numbers}): "
        "any gain there is capacity, not content."
    )


def run_ablation(
    params: Params,
    paths: DatasetPaths,
    data: SplitData,
    history: sp.csr_matrix,
    spec: Any = None,
) -> dict[str, Any]:
    """Train and evaluate every configured variant of `evaluate.ablation.model`.

    With the dataset's `spec`, the model's modalities are narrowed to what the dataset has (as
    for training, `mmrec.models.modalities`) and variants that need a modality it lacks are left
    out with a log line and a `dropped_variants` entry.

    Models are trained in memory (never saved over the pipeline's models) with the train stage's
    seed; warm test and the cold slice are evaluated as for the main models.

    Returns:
        `{"model", "params", "metric", "variants": {name: {...}}, "verdicts": [...]}`; with
        `"skipped": reason` (and no variants) when a needed feature file is missing, e.g. a
        pipeline run with extraction turned off.
    """
    ev = params.evaluate
    ab = ev.ablation
    name = ab.model
    if name is None:
        raise ConfigError("evaluate.ablation.model is not set")
    if name not in available_models():
        raise ConfigError(f"evaluate.ablation.model: unknown model {name!r}; available: {available_models()}")
    base = {**params.train.params.get(name, {}), **ab.params}
    probe = create_model(name, **base)
    if "modalities" not in probe.param_names():
        raise ConfigError(f"evaluate.ablation.model: {name!r} takes no `modalities` argument, so it cannot be ablated")
    dropped_variants: dict[str, str] = {}
    if spec is not None:
        try:
            available = feature_availability(spec, paths, params.extract, list(data.item_ids))
        except DataError as exc:
            log.warning("ablation of %s skipped: %s", name, exc)
            return {"model": name, "params": base, "variants": {}, "verdicts": [], "skipped": str(exc)}
        base, _ = resolve_model_params(name, base, available)
        probe = create_model(name, **base)
        variants = parse_variants(ab.variants, modalities_of(probe))
        usable = set(available.usable)
        for v in variants:
            missing = [m for m in v.modalities if m not in usable]
            if missing:
                dropped_variants[v.name] = "; ".join(f"{m}: {available.reason(m)}" for m in missing)
        if dropped_variants:
            log.info(
                "ablation of %s: variants %s left out (%s)",
                name,
                sorted(dropped_variants),
                "; ".join(f"{k}: {w}" for k, w in dropped_variants.items()),
            )
        variants = [v for v in variants if v.name not in dropped_variants]
        if not variants:
            reason = (
                f"no variant of {list(ab.variants)} can run on the modalities {list(available.usable)} of this dataset"
            )
            log.warning("ablation of %s skipped: %s", name, reason)
            return {
                "model": name,
                "params": base,
                "variants": {},
                "verdicts": [],
                "skipped": reason,
                "dropped_variants": dropped_variants,
            }
    else:
        variants = parse_variants(ab.variants, modalities_of(probe))
    needed = sorted({m for v in variants for m in v.modalities})
    try:
        feats, masks = load_item_features(paths, params.extract, data.item_ids, needed)
    except DataError as exc:
        # Documented fallback: a pipeline run without extraction still gets its report; the
        # report and metrics.json say the ablation was skipped and why (never silently).
        log.warning("ablation of %s skipped: %s", name, exc)
        return {"model": name, "params": base, "variants": {}, "verdicts": [], "skipped": str(exc)}
    control_feats, control_masks = random_control_features(feats, masks, seed=ev.seed)
    ks = tuple(ev.ks)
    bs = ev.batch_size
    has_cold = data.cold_test is not None and data.cold_test.nnz > 0 and len(data.cold_items) > 0
    out: dict[str, Any] = {"model": name, "params": base, "variants": {}, "verdicts": []}
    if dropped_variants:
        out["dropped_variants"] = dropped_variants
    per_user: dict[str, dict[str, UserMetrics]] = {}
    for variant in variants:
        vf = {m: (control_feats if m in variant.random else feats)[m] for m in variant.modalities}
        vm = {m: (control_masks if m in variant.random else masks)[m] for m in variant.modalities}
        model = create_model(name, **variant_params(base, variant))
        seed_everything(params.train.seed)
        log.info("ablation %s: %s (random: %s)", name, list(variant.modalities), list(variant.random))
        model.fit(with_features(data.train, vf, vm), data.valid)
        test = user_metrics(model.score, data.test, history, ks, batch_size=bs)
        entry: dict[str, Any] = {
            "modalities": list(variant.modalities),
            "random": list(variant.random),
            "test": test.summary(ks),
            "train_seconds": round(model.train_seconds, 3),
            "epochs": model.epochs,
            "seconds_per_epoch": round(seconds_per_epoch(model.history, model.train_seconds, model.epochs), 4),
            "history": compact_history(model.history),
        }
        per_user[variant.name] = {"test": test}
        if has_cold:
            assert data.cold_test is not None
            cold = user_metrics(model.score, data.cold_test, history, ks, candidates=data.cold_items, batch_size=bs)
            entry["cold"] = cold.summary(ks)
            per_user[variant.name]["cold"] = cold
        out["variants"][variant.name] = entry
    metric = f"recall@{20 if 20 in ks else max(ks)}"
    out["metric"] = metric
    for variant in variants:
        control = control_of(variant, variants)
        if control is None:
            continue
        for part in per_user[variant.name]:
            a, b = per_user[variant.name][part], per_user[control.name][part]
            ratio = bootstrap_ratio(a.values[metric], b.values[metric], ev.bootstrap_resamples, ev.seed, ev.confidence)
            value, ref = float(a.values[metric].mean()), float(b.values[metric].mean())
            out["verdicts"].append(
                {
                    "variant": variant.name,
                    "control": control.name,
                    "part": part,
                    "metric": metric,
                    "value": value,
                    "control_value": ref,
                    **{k: ratio[k] for k in ("ratio", "low", "high")},
                    "verdict": verdict(ratio),
                    "sentence": sentence(variant.name, control.name, part, metric, value, ref, ratio),
                }
            )
    missing = [v.name for v in variants if not v.is_control and control_of(v, variants) is None]
    if missing:
        out["note"] = f"no random control for {missing}; add random_<modality> (or random for all) to the variants"
    return out
