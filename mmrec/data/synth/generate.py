"""`generate_synthetic`: the whole synthetic dataset folder from a `SynthConfig` (what `mmrec data synth` calls)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mmrec.constants import ITEM_ID, USER_ID
from mmrec.data.synth.attributes import GROUND_TRUTH_FILE
from mmrec.data.synth.config import SynthConfig
from mmrec.data.synth.files import dataset_yaml, ground_truth_record, readme_text, write_csv
from mmrec.data.synth.media import write_media
from mmrec.data.synth.sampling import choose_missing, sample_interactions, sample_items, sample_users
from mmrec.data.synth.text import item_texts
from mmrec.errors import ConfigError
from mmrec.io import atomic_dir

log = logging.getLogger(__name__)


def generate_synthetic(
    out_dir: Path,
    *,
    seed: int = 42,
    n_users: int = 300,
    n_items: int = 240,
    interactions_per_user: tuple[int, int] | None = None,
    image_size: int = 64,
    audio_seconds: float = 1.0,
    audio_rate: int = 16000,
    video_frames: int = 8,
    video_size: int = 64,
    overwrite: bool = False,
) -> Path:
    """Write the synthetic multimodal shop into `out_dir` and return its `dataset.yaml`.

    The folder is built beside `out_dir` and renamed into place, so a crash never leaves half a
    dataset behind.

    Args:
        out_dir: destination folder; must be absent or empty unless `overwrite` is set.
        seed: random seed (same seed, same files).
        n_users: number of users.
        n_items: number of items.
        interactions_per_user: (min, max) interactions per user; by default (15, 60), scaled
            down for small catalogues to (n_items // 8, n_items // 4) so `--items 40` just works.
        image_size: PNG side in pixels.
        audio_seconds: WAV length in seconds.
        audio_rate: WAV sample rate in Hz.
        video_frames: frames per MP4 clip.
        video_size: video frame side in pixels.
        overwrite: replace a non-empty `out_dir`.

    Returns:
        The path of the written `dataset.yaml`.

    Raises:
        ConfigError: an argument is out of range, or `out_dir` is not empty and `overwrite` is
            False.
    """
    if interactions_per_user is None:
        interactions_per_user = (max(1, min(15, n_items // 8)), max(2, min(60, n_items // 4)))
    try:
        ipu = tuple(interactions_per_user)
    except TypeError as exc:
        raise ConfigError(
            f"synth: interactions_per_user must be a (min, max) pair, got {interactions_per_user!r}"
        ) from exc
    cfg = SynthConfig(
        seed=seed,
        n_users=n_users,
        n_items=n_items,
        interactions_per_user=ipu,  # type: ignore[arg-type]
        image_size=image_size,
        audio_seconds=audio_seconds,
        audio_rate=audio_rate,
        video_frames=video_frames,
        video_size=video_size,
    )
    cfg.validate()
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"synth: {out} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(
            f"synth: output folder {out} is not empty; pass --overwrite (overwrite=True) to replace it, "
            f"or choose another --out"
        )

    t0 = time.perf_counter()
    log.info("synth: generating %d users x %d items (seed %d) into %s", cfg.n_users, cfg.n_items, cfg.seed, out)
    with atomic_dir(out) as tmp:
        write_dataset(tmp, cfg)
    log.info("synth: done in %.1fs", time.perf_counter() - t0)
    return out / "dataset.yaml"


def write_dataset(folder: Path, cfg: SynthConfig) -> None:
    """Generate every file of the dataset into an existing (empty) folder."""
    rng = np.random.default_rng([cfg.seed, 0])
    items = sample_items(rng, cfg)
    users, prefs_start, prefs_end = sample_users(rng, cfg)
    inter = sample_interactions(rng, cfg, items, users, prefs_start, prefs_end)
    missing = choose_missing(rng, cfg.n_items)
    log.info("synth: %d interactions sampled", len(inter))

    texts = item_texts(cfg, items, missing["description"])
    media = write_media(folder, cfg, items, missing)

    items_df = pd.DataFrame(
        {
            ITEM_ID: items["item_id"],
            "title": texts["title"],
            "category": items["category"],
            "description": texts["description"],
            "price": [f"{p:.2f}" for p in items["price"]],
            "image_path": media["image"],
            "audio_path": media["audio"],
            "video_path": media["video"],
        }
    )
    users_df = pd.DataFrame({USER_ID: users["user_id"], "age": users["age"], "country": users["country"]})
    write_csv(folder / "interactions.csv", inter)
    write_csv(folder / "items.csv", items_df)
    write_csv(folder / "users.csv", users_df)
    (folder / "dataset.yaml").write_text(dataset_yaml(cfg), encoding="utf-8")
    (folder / "README.md").write_text(readme_text(cfg, len(inter), missing), encoding="utf-8")
    truth = ground_truth_record(cfg, items, users, prefs_start, prefs_end, missing)
    (folder / GROUND_TRUTH_FILE).write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
