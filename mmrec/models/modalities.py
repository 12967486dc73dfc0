"""Which modalities a multimodal model actually uses on a dataset: what it asks for, intersected
with what the dataset has.

params.yaml names the modalities each multimodal model *may* read (`train.params.<model>.modalities`,
e.g. all four for the synthetic shop); a catalogue with text and images only (ml100k-mm, most shop
catalogues) must train the same models on text and images, not fail on audio. So before a model
is built its `modalities` argument is narrowed to the ones the dataset can provide, with one log
line naming each dropped modality and why; only a model left with none is an error, and that
error names the fix (the dataset's modalities, the params key to change).

A modality is available when the dataset declares it (`text_fields` for text, `items.media` for
the others) and its extracted feature file holds a vector for at least one item of the index.
A declared modality whose feature file is missing is not dropped: extraction has not run, and the
error says to run it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmrec.constants import MODALITIES
from mmrec.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModalityAvailability:
    """What a dataset can give the multimodal models.

    Attributes:
        dataset: the dataset's name (for messages).
        declared: modalities the dataset.yaml declares, in MODALITIES order.
        usable: declared modalities the models can read now (None: not checked against feature
            files, e.g. for a pre-flight before extraction: then every declared one counts).
        reasons: modality -> why it cannot be used (absent from `usable`).
    """

    dataset: str
    declared: tuple[str, ...]
    usable: tuple[str, ...]
    reasons: Mapping[str, str] = field(default_factory=dict)

    def reason(self, modality: str) -> str:
        if modality in self.reasons:
            return self.reasons[modality]
        if modality not in self.declared:
            return f"dataset {self.dataset!r} declares no {modality}"
        return "not available"


def declared_availability(spec: Any) -> ModalityAvailability:
    """Availability from the dataset.yaml alone (every declared modality assumed extractable)."""
    declared = tuple(m for m in MODALITIES if m in spec.modalities)
    reasons = {m: _undeclared_reason(spec, m) for m in MODALITIES if m not in declared}
    return ModalityAvailability(spec.name, declared, declared, reasons)


def _undeclared_reason(spec: Any, modality: str) -> str:
    where = "items.text_fields" if modality == "text" else f"items.media.{modality}"
    return f"dataset {spec.name!r} declares no {modality} ({where} in {spec.spec_path or 'dataset.yaml'})"


def feature_availability(
    spec: Any, paths: Any, extract: Any, item_ids: Sequence[str], wanted: Collection[str] | None = None
) -> ModalityAvailability:
    """Availability from the dataset.yaml and the extracted feature files.

    A declared modality with a feature file that has no vector for any item of `item_ids` (every
    file missing or undecodable) is unavailable, with the extraction report as the reason. Only
    the `wanted` modalities (None: every declared one) are looked at, so a run whose models read
    text and images does not need the audio features the dataset also declares.

    Raises:
        DataError: a wanted, declared modality has no feature file yet (run its extract stage).
    """
    from mmrec.models.item_features import align_features, feature_path

    base = declared_availability(spec)
    usable: list[str] = []
    reasons = dict(base.reasons)
    for modality in base.declared:
        if wanted is not None and modality not in wanted:
            continue
        path = feature_path(paths, extract, modality)
        if not path.is_file():
            raise DataError(
                f"{path}: {modality} features missing; dataset {spec.name!r} declares {modality}, so run "
                f"`mmrec stage extract_{modality} --dataset {spec.spec_path or 'PATH/dataset.yaml'}` first"
            )
        _, mask = align_features(path, item_ids)
        if not mask.any():
            reasons[modality] = (
                f"none of the {len(item_ids)} items has a {modality} vector in {path} (every file missing or "
                f"failed to decode; see reports/{spec.name}/extraction.json)"
            )
            continue
        usable.append(modality)
    return ModalityAvailability(spec.name, base.declared, tuple(usable), reasons)


def wanted_modalities(name: str, params: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The modalities model `name` would read with `params` (None: the model reads none)."""
    from mmrec.models.registry import get_model_class

    cls = get_model_class(name)
    required = tuple(getattr(cls, "required_modalities", ()))
    if "modalities" not in cls.param_names():
        return required or None
    if "modalities" in params:
        asked = tuple(str(m) for m in params["modalities"] or ())
    else:
        import inspect

        default = inspect.signature(cls.__init__).parameters["modalities"].default
        asked = tuple(default) if default is not inspect.Parameter.empty else ()
    return tuple(dict.fromkeys(required + asked))


def resolve_model_params(
    name: str, params: Mapping[str, Any], available: ModalityAvailability
) -> tuple[dict[str, Any], dict[str, str]]:
    """`params` with `modalities` narrowed to what the dataset has (and their `weights` likewise).

    Returns:
        (params for `create_model`, dropped modality -> reason).

    Raises:
        ConfigError: none of the model's modalities is available, or a modality it cannot do
            without (`required_modalities`) is missing; the message names the dataset's
            modalities and the params key to change.
    """
    from mmrec.models.registry import get_model_class

    out = dict(params)
    wanted = wanted_modalities(name, params)
    if not wanted:
        return out, {}
    usable = set(available.usable)
    kept = [m for m in wanted if m in usable]
    dropped = {m: available.reason(m) for m in wanted if m not in usable}
    cls = get_model_class(name)
    required_missing = [m for m in getattr(cls, "required_modalities", ()) if m not in usable]
    if not kept or required_missing:
        missing = required_missing or list(wanted)
        have = list(available.usable) or "none"
        raise ConfigError(
            f"model {name!r} needs {missing} but dataset {available.dataset!r} can give it only {have} "
            f"({'; '.join(f'{m}: {r}' for m, r in dropped.items())}). Fix: set train.params.{name}.modalities "
            f"to some of {list(available.declared) or 'the dataset modalities'} in the dataset's params.yaml, "
            f"declare the modality in dataset.yaml (items.text_fields / items.media), or remove {name!r} "
            f"from train.models"
        )
    if "modalities" in cls.param_names():
        out["modalities"] = kept
        weights = out.get("weights")
        if isinstance(weights, Mapping) and dropped:
            out["weights"] = {m: w for m, w in weights.items() if m not in dropped}
    return out, dropped


def resolve_all(
    names: Sequence[str], params_by_model: Mapping[str, Mapping[str, Any]], available: ModalityAvailability
) -> dict[str, dict[str, Any]]:
    """`resolve_model_params` for every model, logging one INFO line per model that lost modalities."""
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        resolved, dropped = resolve_model_params(name, params_by_model.get(name, {}), available)
        if dropped:
            log.info(
                "%s: using %s; dropped %s",
                name,
                resolved.get("modalities"),
                "; ".join(f"{m} ({why})" for m, why in dropped.items()),
            )
        out[name] = resolved
    return out


def uses_modalities(names: Sequence[str], params_by_model: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether any of the models reads modality features (so feature files must be looked at)."""
    return any(wanted_modalities(n, params_by_model.get(n, {})) for n in names)
