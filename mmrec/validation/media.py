"""Media checks: every image/audio/video path of an item must exist and decode.

A broken media file does not invalidate the item (its text, other media and interactions are
still good): the path is set to null in the validated items table, so encoders see a missing
modality, and the file is listed in `quarantine/items_media.parquet` with the reason.

Decoding is I/O and C-library bound (PIL, libsndfile and FFmpeg release the GIL), so files are
checked in a thread pool; images decode at reduced scale (JPEG draft mode), which reads the whole
compressed stream, so truncation and corruption are still caught, at a fraction of the cost.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mmrec.constants import ITEM_ID, MAX_IMAGE_PIXELS, MEDIA_COLUMNS, REASON, SOURCE_ROW
from mmrec.data.contract import DatasetSpec

MODALITY = "modality"
PATH = "path"
CHECK = "check"
MEDIA_QUARANTINE_COLUMNS = [ITEM_ID, SOURCE_ROW, MODALITY, PATH, REASON, CHECK]
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_AUDIO_FRAMES = 4096


def _short(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def decode_image(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """Open an image, refuse it from its header when above `max_pixels`, else decode it fully
    (at reduced scale for JPEG).

    The size comes from the header, before a single pixel is decoded: a 20 000 x 20 000 PNG
    would otherwise take ~1 GB to check (Pillow itself only refuses twice its own limit).
    """
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = Image.open(path)
    with im:
        width, height = im.size
        if width * height > max_pixels:
            raise ValueError(
                f"{im.format or 'image'} is {width}x{height} = {width * height:,} pixels, above the limit of "
                f"{max_pixels:,} (extract.image.max_pixels); shrink the image or raise the limit"
            )
        im.draft("RGB", (64, 64))  # JPEG: DCT-domain downscale; other formats ignore it
        im.load()
        if im.width <= 0 or im.height <= 0:
            raise ValueError(f"image has size {im.size}")


def decode_audio(path: Path) -> None:
    """Read the header and the first frames of an audio file (libsndfile; stdlib wave as fallback)."""
    try:
        import soundfile as sf
    except (ImportError, OSError):  # libsndfile missing: WAV can still be checked
        sf = None
    if sf is not None:
        try:
            with sf.SoundFile(path) as f:
                if f.frames == 0 or f.samplerate <= 0:
                    raise ValueError(f"audio has {f.frames} frames at {f.samplerate} Hz")
                f.read(min(_AUDIO_FRAMES, f.frames))
            return
        except sf.LibsndfileError:
            if path.suffix.lower() not in (".wav", ".wave"):
                raise
    import wave

    with wave.open(str(path), "rb") as w:
        if w.getnframes() == 0:
            raise ValueError("audio has 0 frames")
        if not w.readframes(min(_AUDIO_FRAMES, w.getnframes())):
            raise ValueError("no audio frames could be read")


def decode_video(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """Open a video container and decode its first frame (PyAV / FFmpeg); frames above
    `max_pixels` are refused from the stream header, as extraction does."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        ctx = container.streams.video[0].codec_context
        if ctx.width * ctx.height > max_pixels:
            raise ValueError(
                f"video frames are {ctx.width}x{ctx.height}, above the limit of {max_pixels:,} pixels "
                "(extract.image.max_pixels)"
            )
        for _frame in container.decode(video=0):
            return
    raise ValueError("no frame could be decoded")


DECODERS: dict[str, Callable[[Path], None]] = {"image": decode_image, "audio": decode_audio, "video": decode_video}


def check_file(
    path: Path, modality: str, shown: str | None = None, max_pixels: int = MAX_IMAGE_PIXELS
) -> tuple[str, str] | None:
    """None when the file exists and decodes; else (check name, human-readable reason).

    Args:
        shown: the path as the data names it (relative to the dataset root), for the reason.
        max_pixels: images (and video frames) above this are refused from their header.
    """
    name = repr(shown) if shown is not None else str(path)
    if not path.is_file():
        return "media_exists", f"{modality} file {name} does not exist (looked for {path})"
    try:
        if modality == "audio":
            DECODERS[modality](path)
        else:
            DECODERS[modality](path, max_pixels)  # type: ignore[call-arg]
    except Exception as exc:  # noqa: BLE001 - any decoder failure means the file is unusable
        return "media_decodes", f"{modality} file {name} does not decode ({_short(exc)})"
    return None


@dataclass
class MediaResult:
    """Outcome of the media checks over the valid items.

    Attributes:
        items: the items table with failing media paths set to null.
        quarantine: one row per failing file (MEDIA_QUARANTINE_COLUMNS).
        summary: per modality: checked, ok, failed, missing, corrupt, skipped_uris.
    """

    items: pd.DataFrame
    quarantine: pd.DataFrame
    summary: dict[str, dict[str, int]] = field(default_factory=dict)


def empty_media_quarantine() -> pd.DataFrame:
    return pd.DataFrame(
        {
            ITEM_ID: pd.Series(dtype=object),
            SOURCE_ROW: pd.Series(dtype="int64"),
            MODALITY: pd.Series(dtype=object),
            PATH: pd.Series(dtype=object),
            REASON: pd.Series(dtype=object),
            CHECK: pd.Series(dtype=object),
        }
    )


def default_workers() -> int:
    return min(32, 4 * (os.cpu_count() or 2))


def check_media(
    spec: DatasetSpec, items: pd.DataFrame, workers: int | None = None, max_pixels: int = MAX_IMAGE_PIXELS
) -> MediaResult:
    """Check every non-null media path of `items`; null the failing ones.

    URIs (scheme://...) are counted as skipped: validation runs offline. Images above
    `max_pixels` (extraction's own limit) fail from their header.
    """
    tasks: list[tuple[int, str, str, Path]] = []  # (row position, modality, value, resolved path)
    summary: dict[str, dict[str, int]] = {}
    for modality in MEDIA_COLUMNS:
        if modality not in spec.items.media or modality not in items.columns:
            continue
        counts = summary.setdefault(
            modality, {"checked": 0, "ok": 0, "failed": 0, "missing": 0, "corrupt": 0, "skipped_uris": 0}
        )
        values = items[modality]
        for pos in range(len(items)):
            value = values.iat[pos]
            if value is None or (isinstance(value, float) and pd.isna(value)):
                continue
            value = str(value)
            if _URI.match(value):
                counts["skipped_uris"] += 1
                continue
            tasks.append((pos, modality, value, spec.resolve_media(value)))

    results: list[tuple[str, str] | None]
    if len(tasks) > 1:
        with ThreadPoolExecutor(max_workers=workers or default_workers(), thread_name_prefix="mmrec-media") as pool:
            results = list(pool.map(lambda t: check_file(t[3], t[1], t[2], max_pixels), tasks))
    else:
        results = [check_file(t[3], t[1], t[2], max_pixels) for t in tasks]

    rows: list[dict[str, Any]] = []
    out = items
    null_positions: dict[str, list[int]] = {}
    for (pos, modality, value, _path), res in zip(tasks, results, strict=True):
        counts = summary[modality]
        counts["checked"] += 1
        if res is None:
            counts["ok"] += 1
            continue
        check, reason = res
        counts["failed"] += 1
        counts["missing" if check == "media_exists" else "corrupt"] += 1
        null_positions.setdefault(modality, []).append(pos)
        rows.append(
            {
                ITEM_ID: items[ITEM_ID].iat[pos],
                SOURCE_ROW: int(items[SOURCE_ROW].iat[pos]) if SOURCE_ROW in items.columns else pos + 1,
                MODALITY: modality,
                PATH: value,
                REASON: reason,
                CHECK: check,
            }
        )
    if null_positions:
        out = items.copy()
        for modality, positions in null_positions.items():
            col = out[modality].astype(object)
            col.iloc[positions] = None
            out[modality] = col
    quarantine = pd.DataFrame(rows, columns=MEDIA_QUARANTINE_COLUMNS) if rows else empty_media_quarantine()
    if rows:
        quarantine[SOURCE_ROW] = quarantine[SOURCE_ROW].astype("int64")
        quarantine = quarantine.sort_values([SOURCE_ROW, MODALITY], kind="stable").reset_index(drop=True)
    return MediaResult(out, quarantine, summary)
