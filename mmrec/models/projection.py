"""The cross-modal projection of a joint-embedding model: raw encoder vectors -> the joint space.

`two_tower` learns, for each modality m, a projection head h_m over the modality's encoder
vectors after two fixed input steps fitted on the training catalogue (mean-centring + L2
normalisation, then PCA to `input_dim`); its alignment term pulls h_text(i) and h_image(i) of the
same item together. Those three steps, frozen, are what cross-modal search needs: a text query
embedded by the dataset's text encoder goes through the text steps and lands next to the images
whose image steps put them there. This module holds them as plain arrays, so they are saved with
the model (`state.npz`) and applied without torch.

`CrossModalProjection.randomised(seed)` is the control of the search evaluation: the same input
steps and head shapes, with the learned head weights replaced by random ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from mmrec.errors import ModelError

#: prefix of the projection's arrays inside a model's saved state
STATE_PREFIX = "xproj__"


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 1e-12)


def gelu(x: np.ndarray) -> np.ndarray:
    """The exact (erf) GELU, as torch.nn.functional.gelu computes it by default."""
    from scipy.special import erf

    return (0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))).astype(np.float32)


@dataclass(frozen=True)
class ModalityProjection:
    """One modality's frozen path into the joint space.

    Attributes:
        mean: (d_in,) mean of the training catalogue's raw vectors (centring).
        pca_mean: (d_in,) mean of the centred unit vectors, or None when no PCA was applied.
        components: (d_in, k) principal directions, or None (no reduction).
        w1, b1: first layer of the head; w2, b2: second layer, or None for a linear head.
    """

    mean: np.ndarray
    pca_mean: np.ndarray | None
    components: np.ndarray | None
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray | None = None
    b2: np.ndarray | None = None

    @property
    def input_dim(self) -> int:
        """The raw encoder dimension this projection expects."""
        return int(self.mean.shape[0])

    @property
    def dim(self) -> int:
        """The joint space's dimension."""
        return int((self.w2 if self.w2 is not None else self.w1).shape[1])

    def reduce(self, vectors: np.ndarray) -> np.ndarray:
        """The fixed input steps: centre, L2-normalise, PCA (what the model's head was trained on)."""
        x = unit_rows(np.asarray(vectors, dtype=np.float32) - self.mean)
        if self.components is None or self.pca_mean is None:
            return x
        return ((x.astype(np.float64) - self.pca_mean) @ self.components).astype(np.float32)

    def head(self, reduced: np.ndarray) -> np.ndarray:
        """The learned head h_m on reduced inputs (n, dim), before normalisation."""
        h = reduced @ self.w1 + self.b1
        if self.w2 is not None and self.b2 is not None:
            h = gelu(h) @ self.w2 + self.b2
        return np.asarray(h, dtype=np.float32)

    def state(self, prefix: str) -> dict[str, np.ndarray]:
        arrays = {
            "mean": self.mean,
            "pca_mean": self.pca_mean,
            "components": self.components,
            "w1": self.w1,
            "b1": self.b1,
            "w2": self.w2,
            "b2": self.b2,
        }
        return {
            f"{prefix}{k}": np.asarray(v, np.float32 if k != "pca_mean" else np.float64)
            for k, v in arrays.items()
            if v is not None
        }

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray], prefix: str) -> ModalityProjection:
        def get(key: str) -> np.ndarray | None:
            value = state.get(prefix + key)
            return None if value is None else np.asarray(value)

        mean, w1, b1 = get("mean"), get("w1"), get("b1")
        if mean is None or w1 is None or b1 is None:
            raise ModelError(f"saved cross-modal projection {prefix!r} is incomplete (mean, w1 and b1 are required)")
        return cls(
            mean=mean.astype(np.float32),
            pca_mean=get("pca_mean"),
            components=get("components"),
            w1=w1.astype(np.float32),
            b1=b1.astype(np.float32),
            w2=get("w2"),
            b2=get("b2"),
        )


@dataclass(frozen=True)
class CrossModalProjection:
    """Per-modality paths into one joint space, plus the training catalogue's items placed in it.

    Attributes:
        modalities: modality -> its frozen projection.
        item_vectors: modality -> (n_items, dim) unit joint vectors of the model's items, computed
            from their own features of that modality (rows of items without it are zero).
        item_masks: modality -> (n_items,) which items have that modality.
    """

    modalities: Mapping[str, ModalityProjection]
    item_vectors: Mapping[str, np.ndarray] = field(default_factory=dict)
    item_masks: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return next(iter(self.modalities.values())).dim

    def project(self, modality: str, vectors: np.ndarray) -> np.ndarray:
        """Raw encoder vectors (n, d_in) of `modality` -> (n, dim) unit vectors in the joint space.

        Raises:
            ModelError: a modality the model has no projection for, or vectors of the wrong width
                (another encoder than the one the model was trained on).
        """
        proj = self.modalities.get(modality)
        if proj is None:
            raise ModelError(f"no cross-modal projection for {modality!r}; this model has {sorted(self.modalities)}")
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != proj.input_dim:
            raise ModelError(
                f"{modality} vectors have shape {x.shape}, the projection expects (n, {proj.input_dim}): "
                "embed queries with the encoder the model was trained on (extract.{modality}.encoder)"
            )
        if not np.isfinite(x).all():
            raise ModelError(f"{modality} vectors contain non-finite values")
        return unit_rows(proj.head(proj.reduce(x)))

    def place_items(self, features: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]) -> CrossModalProjection:
        """A copy with the items' joint vectors computed from raw `features` (absent rows zero)."""
        vectors, out_masks = {}, {}
        for m in self.modalities:
            if m not in features:
                continue
            mask = np.asarray(masks[m], dtype=bool)
            v = np.zeros((len(mask), self.dim), np.float32)
            if mask.any():
                v[mask] = self.project(m, np.asarray(features[m])[mask])
            vectors[m], out_masks[m] = v, mask
        return replace(self, item_vectors=vectors, item_masks=out_masks)

    def randomised(self, seed: int) -> CrossModalProjection:
        """The control: same input steps and head shapes, head weights drawn at random (Glorot).

        Whatever search quality survives this is owed to the encoders and the PCA, not to what
        the alignment term learned. Item vectors are dropped (re-place them with `place_items`).
        """
        rng = np.random.default_rng(seed)

        def glorot(w: np.ndarray) -> np.ndarray:
            scale = np.sqrt(2.0 / (w.shape[0] + w.shape[1]))
            return (rng.standard_normal(w.shape) * scale).astype(np.float32)

        mods = {
            m: replace(
                p,
                w1=glorot(p.w1),
                b1=np.zeros_like(p.b1),
                w2=None if p.w2 is None else glorot(p.w2),
                b2=None if p.b2 is None else np.zeros_like(p.b2),
            )
            for m, p in self.modalities.items()
        }
        return CrossModalProjection(mods)

    def state(self) -> dict[str, np.ndarray]:
        """Flat arrays for a model's `state.npz` (keys under `STATE_PREFIX`)."""
        out: dict[str, np.ndarray] = {}
        for m, p in self.modalities.items():
            out.update(p.state(f"{STATE_PREFIX}{m}__"))
        for m, v in self.item_vectors.items():
            out[f"{STATE_PREFIX}{m}__items"] = np.asarray(v, np.float32)
            out[f"{STATE_PREFIX}{m}__item_mask"] = np.asarray(self.item_masks[m], bool)
        return out

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray]) -> CrossModalProjection | None:
        """The projection saved by `state()`, or None when the state holds none (an older model)."""
        names = sorted({k[len(STATE_PREFIX) :].split("__", 1)[0] for k in state if k.startswith(STATE_PREFIX)})
        if not names:
            return None
        mods = {m: ModalityProjection.from_state(state, f"{STATE_PREFIX}{m}__") for m in names}
        vectors = {
            m: np.asarray(state[f"{STATE_PREFIX}{m}__items"], np.float32)
            for m in names
            if f"{STATE_PREFIX}{m}__items" in state
        }
        masks = {m: np.asarray(state[f"{STATE_PREFIX}{m}__item_mask"], bool) for m in vectors}
        return cls(mods, vectors, masks)
