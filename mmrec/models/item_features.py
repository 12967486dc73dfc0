"""Item features for the multimodal models: feature files -> matrices aligned with an item index.

The extract stages write one file per modality (`data/<name>/features/<modality>/<encoder>.parquet`,
only the items that have a vector). Models need dense (n_items, d) float32 matrices in the split's
item order; an item without a vector gets a zero row *and* a False in the presence mask, so a
model can tell "no content" from "content that happens to be zero" and never learns from the
padding.

The train stage calls `load_item_features(paths, params.extract, item_ids)` and attaches the
result with `with_features(split.train, features, masks)`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmrec.constants import MODALITIES
from mmrec.data.interactions import Interactions
from mmrec.errors import ConfigError, DataError, ModelError
from mmrec.paths import DatasetPaths

log = logging.getLogger(__name__)


def feature_path(paths: DatasetPaths, extract: Any, modality: str) -> Path:
    """Where the configured encoder of `modality` wrote its features.

    The file stem is the encoder's id, which is its registered name unless the encoder says
    otherwise; building the encoder (cheap: weights load lazily) asks it.
    """
    from mmrec.extract import build_encoder, extract_params

    ex = extract_params(extract)
    try:
        encoder_id = build_encoder(modality, ex).id
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - an encoder that cannot even be built: fall back to its name
        log.debug("could not build the %s encoder to ask its id (%s); using the configured name", modality, exc)
        encoder_id = ex.modality(modality).encoder
    return paths.features(modality, encoder_id)


def align_features(path: str | Path, item_ids: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One feature file as a (len(item_ids), d) float32 matrix in `item_ids` order, and its mask.

    Raises:
        DataError: missing file, or non-finite values (a corrupt file: re-run the extraction).
    """
    from mmrec.encoders.store import read_features

    feats = read_features(path)
    matrix, mask = feats.aligned([str(i) for i in item_ids])
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        bad = [str(item_ids[i]) for i in np.flatnonzero(~finite)[:5]]
        raise DataError(f"{path}: non-finite values in the vectors of items {bad}; delete the file and re-extract")
    if matrix.shape[1] == 0:
        raise DataError(f"{path}: vectors have dimension 0; delete the file and re-extract")
    return np.ascontiguousarray(matrix, dtype=np.float32), mask


def load_item_features(
    paths: DatasetPaths,
    extract: Any,
    item_ids: Sequence[str] | np.ndarray,
    modalities: Iterable[str] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The feature matrices and presence masks of a dataset, aligned with `item_ids`.

    Args:
        paths: the dataset's output locations.
        extract: `params.extract` (ExtractParams), the whole Params, a dict or None (defaults).
        item_ids: the model's item index (e.g. `split.train.item_ids`).
        modalities: the modalities to load; a named one whose file is missing is an error.
            None loads every modality whose configured feature file exists (and none is fine:
            collaborative models need nothing).

    Returns:
        (features, masks): modality -> (n_items, d) float32, modality -> (n_items,) bool.

    Raises:
        ConfigError: an unknown modality name.
        DataError: a requested feature file is missing or corrupt.
    """
    explicit = modalities is not None
    wanted = list(modalities) if modalities is not None else list(MODALITIES)
    unknown = [m for m in wanted if m not in MODALITIES]
    if unknown:
        raise ConfigError(f"unknown modality {unknown}; expected some of {list(MODALITIES)}")
    features: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    for modality in wanted:
        path = feature_path(paths, extract, modality)
        if not path.is_file():
            if explicit and (path.parent / "SKIPPED.json").is_file():  # written by the extract stage (mmrec.extract)
                raise DataError(
                    f"{path}: the dataset has no {modality} (its extract stage was skipped: "
                    f"{path.parent / 'SKIPPED.json'}); leave {modality} out of the modalities configured in params.yaml"
                )
            if explicit:
                raise DataError(f"{path}: {modality} features missing; run `mmrec stage extract_{modality}` first")
            continue
        matrix, mask = align_features(path, item_ids)
        if not mask.any():
            log.warning("%s: no item of the index has a %s vector; %s left out", path, modality, modality)
            if explicit:
                raise DataError(f"{path}: none of the {len(item_ids)} items has a {modality} vector")
            continue
        if not mask.all():
            log.info("%s: %d of %d items have no %s vector (masked)", path, int((~mask).sum()), len(mask), modality)
        features[modality], masks[modality] = matrix, mask
    return features, masks


def with_features(
    train: Interactions, features: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray] | None = None
) -> Interactions:
    """`train` with item features attached (checked against its item index).

    A mask defaults to "rows that are not all zero" only when none is given; pass the real masks
    from `load_item_features` so a genuinely zero vector is not mistaken for a missing one.

    Raises:
        DataError: a matrix or mask whose row count is not the number of items.
    """
    masks = dict(masks or {})
    feats: dict[str, np.ndarray] = {}
    out_masks: dict[str, np.ndarray] = {}
    for modality, matrix in features.items():
        m = np.asarray(matrix, dtype=np.float32)
        if m.ndim != 2 or m.shape[0] != train.n_items:
            raise DataError(
                f"{modality} features have shape {m.shape}, expected ({train.n_items}, d) aligned with the item index"
            )
        mask = masks.get(modality)
        mask = np.abs(m).sum(axis=1) > 0 if mask is None else np.asarray(mask, dtype=bool)
        if mask.shape != (train.n_items,):
            raise DataError(f"{modality} mask has shape {mask.shape}, expected ({train.n_items},)")
        feats[modality], out_masks[modality] = m, mask
    return dataclasses.replace(train, features=feats, feature_masks=out_masks)


def modality_mask(train: Interactions, modality: str) -> np.ndarray:
    """The presence mask of `modality` (all True when the caller attached features without one)."""
    mask = train.feature_masks.get(modality)
    if mask is None:
        return np.ones(train.n_items, dtype=bool)
    return np.asarray(mask, dtype=bool)


def centred_unit(matrix: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Rows mean-centred over the items that have the modality, then L2-normalised; absent rows 0.

    Centring removes the direction every item of an encoder shares (cosines of raw sentence or
    CNN embeddings all sit near 0.5-0.9), which otherwise swamps the differences between items.
    """
    x = np.asarray(matrix, dtype=np.float32)
    out = np.zeros_like(x)
    if mask.any():
        present = x[mask]
        centred = present - present.mean(axis=0, keepdims=True)
        norms = np.linalg.norm(centred, axis=1, keepdims=True)
        out[mask] = np.divide(centred, norms, out=np.zeros_like(centred), where=norms > 1e-12)
    return out


def check_modalities(model: str, modalities: Sequence[str]) -> tuple[str, ...]:
    """Validate a model's `modalities` argument (non-empty, known, no repeats)."""
    mods = tuple(str(m) for m in modalities)
    if not mods:
        raise ModelError(f"{model}: modalities must name at least one of {list(MODALITIES)}")
    unknown = [m for m in mods if m not in MODALITIES]
    if unknown or len(set(mods)) != len(mods):
        raise ModelError(f"{model}: bad modalities {list(mods)}; expected distinct names from {list(MODALITIES)}")
    return mods


def check_weights(model: str, weights: Mapping[str, float] | None, modalities: Sequence[str]) -> dict[str, float]:
    """Validate per-modality fusion weights: only used modalities, >= 0, at least one > 0.

    Unnamed modalities weigh 1, so `{}` means "all equal".
    """
    out = {str(m): float(w) for m, w in (weights or {}).items()}
    stray = sorted(set(out) - set(modalities))
    if stray:
        raise ModelError(f"{model}: weights name {stray}, which are not in modalities {list(modalities)}")
    if any(w < 0 for w in out.values()) or not any(out.get(m, 1.0) > 0 for m in modalities):
        raise ModelError(f"{model}: weights must be >= 0 with at least one > 0, got {out}")
    return out


def modalities_of(model: Any) -> tuple[str, ...]:
    """The modalities a (constructed) model needs: its class's `required_modalities` plus its
    `modalities` hyper-parameter when it has one. The train stage loads exactly these."""
    needed = list(getattr(model, "required_modalities", ()))
    needed += [m for m in getattr(model, "modalities", ()) or () if m not in needed]
    return tuple(needed)


def random_control_features(
    features: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray], seed: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Seeded Gaussian stand-ins for modality features: the ablation's capacity control.

    A multimodal model fed these has exactly the parameters, dimensions and missing-modality
    pattern of the real one, but no content: whatever it gains over its ID-only counterpart is
    extra capacity or regularisation, and only what the real features add *beyond* this control
    can be credited to content. Each present row is drawn independently from a Gaussian with the
    per-dimension mean and standard deviation of the real present rows (so scale-sensitive
    training behaves alike); absent rows stay zero and keep their False mask, as in the real
    input. Every modality gets its own stream derived from `seed` and its name, so modalities
    are independent of each other and the same seed reproduces the same vectors.

    Args:
        features: modality -> (n_items, d) matrix (as from `load_item_features`).
        masks: modality -> (n_items,) presence mask; every modality of `features` needs one.
        seed: the control's seed.

    Returns:
        (features, masks): new random matrices (float32, same shapes) and copies of the masks.

    Raises:
        DataError: a modality without a mask, or a mask that does not fit its matrix.
    """
    out_f: dict[str, np.ndarray] = {}
    out_m: dict[str, np.ndarray] = {}
    for modality, matrix in features.items():
        x = np.asarray(matrix, dtype=np.float32)
        if modality not in masks:
            raise DataError(
                f"random control: {modality} features have no presence mask; pass the masks of load_item_features"
            )
        mask = np.asarray(masks[modality], dtype=bool)
        if x.ndim != 2 or mask.shape != (x.shape[0],):
            raise DataError(f"random control: {modality} matrix {x.shape} and mask {mask.shape} do not line up")
        stream = int.from_bytes(modality.encode(), "little") % (2**32)
        rng = np.random.default_rng([int(seed), stream])
        present = x[mask]
        mean = present.mean(axis=0) if len(present) else np.zeros(x.shape[1], np.float32)
        std = present.std(axis=0) if len(present) else np.ones(x.shape[1], np.float32)
        std = np.where(std > 0, std, 1.0)  # a constant dimension still gets noise, not a constant
        noise = np.zeros_like(x)
        noise[mask] = (rng.standard_normal((int(mask.sum()), x.shape[1])) * std + mean).astype(np.float32)
        out_f[modality], out_m[modality] = noise, mask.copy()
    return out_f, out_m


def pca_basis(matrix: np.ndarray, mask: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The centre (d,) and top `dim` principal directions (d, dim) of the present rows, or None
    when no reduction applies (`dim` 0, or not more columns / present rows than `dim`).

    Deterministic: seeded randomised SVD with fixed signs (see `pca_reduce`).
    """
    x = np.asarray(matrix, dtype=np.float32)
    if dim <= 0 or x.shape[1] <= dim or mask.sum() <= dim:
        return None
    present = x[mask].astype(np.float64)
    mean = present.mean(axis=0)
    centred = present - mean[None, :]
    # Randomised range finder with power iterations (Halko et al. 2011), seeded: the top `dim`
    # directions at a fraction of a full SVD/eigh (seconds -> tens of milliseconds at d ~ 1000).
    rng = np.random.default_rng(0)
    y = centred @ rng.standard_normal((centred.shape[1], dim + 16))
    for _ in range(3):
        y, _ = np.linalg.qr(y)
        y = centred @ (centred.T @ y)
    q, _ = np.linalg.qr(y)
    _, _, vt = np.linalg.svd(q.T @ centred, full_matrices=False)
    top = vt[:dim].T
    top *= np.where(top[np.abs(top).argmax(axis=0), np.arange(dim)] < 0, -1.0, 1.0)  # fixed signs
    return mean, top


def pca_reduce(matrix: np.ndarray, mask: np.ndarray, dim: int) -> np.ndarray:
    """Project the present rows onto their top `dim` principal components (absent rows stay 0).

    Pretrained encoders give 384-1280 dimensions of which a few hundred carry almost all the
    variance across one catalogue; trainable projections on the reduced input cost a fraction
    of the FLOPs for the same ranking quality. Deterministic (seeded randomised SVD); a no-op
    when the matrix is already narrow.

    Args:
        matrix: (n_items, d) rows, typically `centred_unit` output.
        mask: items that have the modality.
        dim: target width (0 keeps every dimension).
    """
    x = np.asarray(matrix, dtype=np.float32)
    basis = pca_basis(x, mask, dim)
    if basis is None:
        return x
    mean, top = basis
    out = np.zeros((x.shape[0], dim), np.float32)
    out[mask] = ((x[mask].astype(np.float64) - mean[None, :]) @ top).astype(np.float32)
    return out
