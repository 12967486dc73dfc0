"""Serving an item's media file: checked at request time, typed by its content, never active.

The catalogue resolved every media path inside the dataset folder when it was built, but files
can change afterwards. At request time:
- the path is resolved again (symlinks followed) and must still lie inside the dataset folder,
  so swapping a file for a symlink to `/etc/...` serves nothing;
- the content type comes from the file's own bytes (PNG, JPEG, WAV, MP4, ...), never from its
  name: a file named `.html`, or any content that is not a recognised image/audio/video
  format, is refused, so nothing served here can run as a page on the API's origin;
- images above the platform's pixel limit (`MAX_IMAGE_PIXELS`, the limit validation and
  extraction use) are refused from their header;
- the response carries `Content-Security-Policy: default-src 'none'; sandbox` (and, from the
  access guard, `X-Content-Type-Options: nosniff`), so even a browser that opened it as a
  document would run nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from mmrec.constants import MAX_IMAGE_PIXELS
from mmrec.errors import NotFoundError

#: Pillow format -> content type of the images that are served
IMAGE_TYPES = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}
MEDIA_CSP = "default-src 'none'; sandbox"
_HEAD_BYTES = 64


def sniff_audio_video(head: bytes, modality: str) -> str | None:
    """The content type of an audio or video file from its first bytes, or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav" if modality == "audio" else None
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video/x-msvideo" if modality == "video" else None
    if head[4:8] == b"ftyp":  # ISO base media (MP4, M4A, MOV)
        brand = head[8:12]
        if modality == "audio":
            return "audio/mp4"
        return "video/quicktime" if brand == b"qt  " else "video/mp4"
    if head[:4] == b"OggS":
        return f"{modality}/ogg"
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML: WebM or Matroska
        kind = "webm" if b"webm" in head else "x-matroska"
        return f"{modality}/{kind}"
    if modality == "audio":
        if head[:4] == b"fLaC":
            return "audio/flac"
        if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
            return "audio/mpeg"
    return None


def _image_type(path: Path, max_pixels: int) -> str:
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # reads the header only
                fmt, (width, height) = im.format, im.size
    except Image.DecompressionBombError:
        fmt, width, height = "image", max_pixels, 2
    except Exception:  # noqa: BLE001 - anything Pillow cannot identify is not served
        fmt, width, height = None, 0, 0
    if fmt not in IMAGE_TYPES and fmt != "image":
        raise ValueError("it is not a recognised image (PNG, JPEG, GIF, WebP, BMP or TIFF)")
    if width * height > max_pixels:
        raise ValueError(f"it is {width}x{height} pixels, above the limit of {max_pixels:,}")
    return IMAGE_TYPES[fmt]


def checked_media(
    path: Path, root: Path, modality: str, item_id: str, max_pixels: int = MAX_IMAGE_PIXELS
) -> tuple[Path, str]:
    """(the real file, its content type) when `path` may be served now, else NotFoundError.

    Args:
        path: the file the catalogue resolved for the item.
        root: the dataset folder (already resolved).
        modality: image, audio or video.
        max_pixels: images above this are not served.
    """

    def refuse(why: str) -> NotFoundError:
        return NotFoundError(
            "media", f"{item_id}/{modality}", f"item {item_id!r}'s {modality} file is not served: {why}"
        )

    real = Path(os.path.realpath(path))
    if not real.is_relative_to(root):
        raise refuse("it now resolves outside the dataset folder (a symlink was swapped in)")
    try:
        with open(real, "rb") as f:
            head = f.read(_HEAD_BYTES)
    except OSError:
        raise refuse("it no longer exists or cannot be read") from None
    if modality == "image":
        try:
            return real, _image_type(real, max_pixels)
        except ValueError as exc:
            raise refuse(str(exc)) from None
    content_type = sniff_audio_video(head, modality)
    if content_type is None:
        raise refuse(f"it is not a recognised {modality} format")
    return real, content_type
