"""The embedded default dataset: a synthetic shop whose content genuinely predicts behaviour.

`mmrec data synth --out DIR` calls :func:`generate_synthetic`. It writes a complete dataset folder
(interactions, items with real image / audio / video files and text, users, `dataset.yaml`) so
the whole platform can be demonstrated and tested offline, in seconds, without any licence.

Why synthetic, and why planted: a recommender demo on random data proves nothing, because no
model can beat popularity there. Here every item has latent attributes (category, colour, shape,
pattern, style, pitch, timbre, tempo, motion), each rendered into one or more modalities, and every
user has planted preferences over those attributes. Interactions are sampled from a softmax over
user-item affinity + item popularity, so a model that reads the content can learn the
preferences and beat popularity, while popularity still beats random. Attributes are correlated
across modalities (the category drives the typical colour, pitch and price; the style drives
the timbre) but not identical, so each modality carries a signal of its own.

Everything is deterministic in the seed: the same seed gives byte-identical CSV, PNG and WAV
files (MP4 containers decode to identical frames). Each item's media come from their own
random stream (seed, modality, item index), so changing one size never reshuffles the rest.

The ground truth (latent attributes and user preferences) is saved in `ground_truth.json` for
tests and teaching; models must not read it.
"""

from __future__ import annotations

import json
import logging
import math
import time
import wave
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmrec.constants import ITEM_ID, RATING, TIMESTAMP, USER_ID
from mmrec.errors import ConfigError
from mmrec.io import atomic_dir

log = logging.getLogger(__name__)

DATASET_NAME = "synth"
GROUND_TRUTH_FILE = "ground_truth.json"
START_TS = 1_704_067_200  # 2024-01-01T00:00:00Z: a fixed epoch keeps the files seed-deterministic
TIMELINE_DAYS = 180
MISSING_FRACTION = 0.03  # share of items lacking each of image / audio / video / description
VIDEO_FPS = 8
POPULARITY_STD = 0.9  # spread of the item popularity prior (log-odds)
AFFINITY_TEMPERATURE = 2.2  # logits = T * standardised affinity + popularity + Gumbel noise

# --- Latent attribute vocabularies -------------------------------------------------------------
# Each group is one latent attribute; each item takes one level per group.

CATEGORIES = ("outdoor", "kitchen", "tech", "fashion", "toys", "home", "sports", "beauty")
COLOURS = ("red", "orange", "yellow", "green", "teal", "blue", "purple", "pink")
SHAPES = ("circle", "square", "triangle", "star")
PATTERNS = ("plain", "stripes", "dots", "checker")
STYLES = ("vintage", "modern", "minimal", "playful", "luxury", "rugged")
PITCHES = ("low", "mid", "high")
TIMBRES = ("pure", "bright", "chord", "noisy")
TEMPOS = ("slow", "medium", "fast")
DIRECTIONS = ("left", "right", "up", "down")
SPEEDS = ("slow", "fast")

ATTRIBUTE_GROUPS: dict[str, tuple[str, ...]] = {
    "category": CATEGORIES,  # text (category, title, description) + correlated colour/pitch/price
    "colour": COLOURS,  # image + video (+ sometimes named in the text)
    "shape": SHAPES,  # image + video
    "pattern": PATTERNS,  # image background
    "style": STYLES,  # text (style words) + correlated timbre
    "pitch": PITCHES,  # audio
    "timbre": TIMBRES,  # audio
    "tempo": TEMPOS,  # audio pulse rate + correlated video speed
    "direction": DIRECTIONS,  # video
    "speed": SPEEDS,  # video
}
# Which modality each group is rendered into (documentation and the README).
GROUP_MODALITY = {
    "category": "text",
    "colour": "image+video",
    "shape": "image+video",
    "pattern": "image",
    "style": "text",
    "pitch": "audio",
    "timbre": "audio",
    "tempo": "audio",
    "direction": "video",
    "speed": "video",
}
# How much each group weighs in a user's affinity: every modality carries part of the signal.
GROUP_WEIGHT = {
    "category": 1.0,
    "colour": 0.8,
    "shape": 0.5,
    "pattern": 0.3,
    "style": 0.7,
    "pitch": 0.5,
    "timbre": 0.6,
    "tempo": 0.3,
    "direction": 0.4,
    "speed": 0.3,
}

# Cross-modal correlations: the category's "home" colour and pitch, the style's timbre.
CATEGORY_COLOUR = dict(zip(CATEGORIES, ("green", "red", "blue", "purple", "yellow", "orange", "teal", "pink"), strict=True))
CATEGORY_PITCH = dict(zip(CATEGORIES, ("low", "mid", "high", "mid", "high", "low", "high", "mid"), strict=True))
CATEGORY_PRICE = dict(zip(CATEGORIES, (60.0, 35.0, 90.0, 55.0, 25.0, 40.0, 45.0, 30.0), strict=True))
STYLE_TIMBRE = dict(zip(STYLES, ("chord", "bright", "pure", "bright", "chord", "noisy"), strict=True))
TEMPO_SPEED = {"slow": "slow", "medium": None, "fast": "fast"}
P_HOME_COLOUR = 0.55
P_HOME_PITCH = 0.5
P_STYLE_TIMBRE = 0.5
P_TEMPO_SPEED = 0.7

RGB = {
    "red": (210, 40, 40),
    "orange": (240, 140, 30),
    "yellow": (235, 205, 40),
    "green": (50, 160, 60),
    "teal": (30, 160, 160),
    "blue": (40, 80, 205),
    "purple": (130, 60, 180),
    "pink": (235, 110, 170),
}
PITCH_HZ = {"low": 196.0, "mid": 392.0, "high": 784.0}
TEMPO_HZ = {"slow": 2.0, "medium": 4.0, "fast": 8.0}
DIRECTION_VEC = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
SPEED_FRAC = {"slow": 0.025, "fast": 0.07}  # displacement per frame, as a share of the frame size

# --- Word lists for the text modality ----------------------------------------------------------

CATEGORY_NOUNS = {
    "outdoor": ("Tent", "Lantern", "Backpack", "Hammock", "Compass"),
    "kitchen": ("Kettle", "Skillet", "Blender", "Mug", "Teapot"),
    "tech": ("Headphones", "Speaker", "Charger", "Keyboard", "Webcam"),
    "fashion": ("Scarf", "Jacket", "Sneakers", "Handbag", "Hat"),
    "toys": ("Puzzle", "Robot", "Kite", "Blocks", "Plush"),
    "home": ("Lamp", "Cushion", "Vase", "Blanket", "Clock"),
    "sports": ("Ball", "Racket", "Yoga Mat", "Dumbbell", "Bottle"),
    "beauty": ("Serum", "Brush", "Mirror", "Perfume", "Lotion"),
}
CATEGORY_TOPICS = {
    "outdoor": ("camping", "hiking", "trail", "campfire", "wilderness", "weekend trips"),
    "kitchen": ("cooking", "recipes", "baking", "brunch", "espresso", "family dinners"),
    "tech": ("wireless", "battery life", "bluetooth", "streaming", "gaming", "the home office"),
    "fashion": ("outfits", "the runway", "layering", "your wardrobe", "tailoring", "street style"),
    "toys": ("kids", "playtime", "imagination", "building", "adventure", "rainy afternoons"),
    "home": ("cozy evenings", "the living room", "decor", "the bedroom", "relaxing", "hosting friends"),
    "sports": ("training", "fitness", "match day", "workouts", "endurance", "the gym"),
    "beauty": ("skincare", "a healthy glow", "fragrance", "your routine", "spa days", "self-care"),
}
STYLE_WORDS = {
    "vintage": ("retro", "classic", "heirloom", "nostalgic", "timeless"),
    "modern": ("sleek", "contemporary", "smart", "cutting-edge", "streamlined"),
    "minimal": ("simple", "clean", "understated", "essential", "quiet"),
    "playful": ("fun", "quirky", "cheerful", "bold", "whimsical"),
    "luxury": ("premium", "elegant", "refined", "exquisite", "handcrafted"),
    "rugged": ("tough", "durable", "weatherproof", "heavy-duty", "robust"),
}
NOISE_WORDS = (
    "great", "value", "gift", "popular", "new", "season", "shipping", "quality", "favourite",
    "everyday", "design", "customers", "love", "perfect", "choice", "bundle", "limited", "edition",
)
COUNTRIES = ("US", "GB", "DE", "FR", "IN", "BR", "JP", "CA", "ES", "NG")
COUNTRY_WEIGHTS = (0.25, 0.12, 0.1, 0.09, 0.12, 0.08, 0.07, 0.07, 0.05, 0.05)


@dataclass(frozen=True)
class SynthConfig:
    """Sizes and seed of one synthetic dataset; validated before anything is written.

    Attributes:
        seed: random seed; the same seed gives the same files.
        n_users: number of users (>= 2).
        n_items: number of items (>= 10).
        interactions_per_user: (min, max) interactions drawn per user; fewer when not enough
            items are released yet at the sampled times.
        image_size: side of the square PNG images, pixels.
        audio_seconds: length of each WAV clip.
        audio_rate: WAV sample rate, Hz (mono PCM16).
        video_frames: frames per MP4 clip (8 fps).
        video_size: side of the square video frames, pixels (even, for yuv420p).
    """

    seed: int = 42
    n_users: int = 300
    n_items: int = 240
    interactions_per_user: tuple[int, int] = (15, 60)
    image_size: int = 64
    audio_seconds: float = 1.0
    audio_rate: int = 16000
    video_frames: int = 8
    video_size: int = 64

    def validate(self) -> None:
        """Raise ConfigError naming the first bad argument and what values are accepted."""

        def _int(name: str, value: Any, lo: int, hi: int, flag: str) -> None:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigError(f"synth: {name} must be an integer, got {value!r} ({flag})")
            if not lo <= value <= hi:
                raise ConfigError(f"synth: {name} must be between {lo} and {hi}, got {value} ({flag})")

        _int("seed", self.seed, 0, 2**63 - 1, "--seed")
        _int("n_users", self.n_users, 2, 10_000_000, "--users")
        _int("n_items", self.n_items, 10, 1_000_000, "--items")
        ipu = self.interactions_per_user
        if not (isinstance(ipu, (tuple, list)) and len(ipu) == 2):
            raise ConfigError(f"synth: interactions_per_user must be a (min, max) pair, got {ipu!r}")
        lo, hi = ipu
        _int("interactions_per_user[0] (min)", lo, 1, self.n_items, "at least 1, at most n_items")
        _int("interactions_per_user[1] (max)", hi, 1, self.n_items, "at most n_items; raise --items")
        if lo > hi:
            raise ConfigError(f"synth: interactions_per_user min {lo} is larger than max {hi}; swap them")
        _int("image_size", self.image_size, 16, 1024, "pixels")
        _int("audio_rate", self.audio_rate, 8000, 96000, "Hz")
        _int("video_frames", self.video_frames, 1, 600, "frames")
        _int("video_size", self.video_size, 16, 1024, "pixels")
        if self.video_size % 2:
            raise ConfigError(f"synth: video_size must be even (yuv420p), got {self.video_size}")
        secs = self.audio_seconds
        if isinstance(secs, bool) or not isinstance(secs, (int, float)) or not 0.05 <= secs <= 60:
            raise ConfigError(f"synth: audio_seconds must be a number between 0.05 and 60, got {secs!r}")


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
        raise ConfigError(f"synth: interactions_per_user must be a (min, max) pair, got {interactions_per_user!r}") from exc
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
    items = _sample_items(rng, cfg)
    users, prefs_start, prefs_end = _sample_users(rng, cfg)
    inter = _sample_interactions(rng, cfg, items, users, prefs_start, prefs_end)
    missing = _choose_missing(rng, cfg.n_items)
    log.info("synth: %d interactions sampled", len(inter))

    texts = _item_texts(cfg, items, missing["description"])
    media = _write_media(folder, cfg, items, missing)

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
    _write_csv(folder / "interactions.csv", inter)
    _write_csv(folder / "items.csv", items_df)
    _write_csv(folder / "users.csv", users_df)
    (folder / "dataset.yaml").write_text(_dataset_yaml(cfg), encoding="utf-8")
    (folder / "README.md").write_text(_readme(cfg, len(inter), missing), encoding="utf-8")
    truth = _ground_truth(cfg, items, users, prefs_start, prefs_end, missing)
    (folder / GROUND_TRUTH_FILE).write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")


# --- Latent structure --------------------------------------------------------------------------


def _ids(prefix: str, n: int) -> list[str]:
    width = max(4, len(str(n)))
    return [f"{prefix}{k:0{width}d}" for k in range(1, n + 1)]


def _correlated(rng: np.random.Generator, n: int, levels: tuple[str, ...], home: np.ndarray, p_home: float) -> np.ndarray:
    """Level indices: the `home` level with probability p_home, else uniform over all levels."""
    other = rng.integers(0, len(levels), size=n)
    keep = rng.random(n) < p_home
    return np.where(keep, home, other)


def _sample_items(rng: np.random.Generator, cfg: SynthConfig) -> dict[str, Any]:
    """Latent attributes, price, popularity and release time of every item."""
    n = cfg.n_items
    cat = rng.integers(0, len(CATEGORIES), size=n)
    home_colour = np.array([COLOURS.index(CATEGORY_COLOUR[CATEGORIES[c]]) for c in cat])
    home_pitch = np.array([PITCHES.index(CATEGORY_PITCH[CATEGORIES[c]]) for c in cat])
    style = rng.integers(0, len(STYLES), size=n)
    style_timbre = np.array([TIMBRES.index(STYLE_TIMBRE[STYLES[s]]) for s in style])
    tempo = rng.integers(0, len(TEMPOS), size=n)
    tempo_speed = np.array(
        [SPEEDS.index(TEMPO_SPEED[TEMPOS[t]]) if TEMPO_SPEED[TEMPOS[t]] else 0 for t in tempo]
    )
    speed_p = np.array([P_TEMPO_SPEED if TEMPO_SPEED[TEMPOS[t]] else 0.0 for t in tempo])
    speed = np.where(rng.random(n) < speed_p, tempo_speed, rng.integers(0, len(SPEEDS), size=n))
    levels = {
        "category": cat,
        "colour": _correlated(rng, n, COLOURS, home_colour, P_HOME_COLOUR),
        "shape": rng.integers(0, len(SHAPES), size=n),
        "pattern": rng.integers(0, len(PATTERNS), size=n),
        "style": style,
        "pitch": _correlated(rng, n, PITCHES, home_pitch, P_HOME_PITCH),
        "timbre": _correlated(rng, n, TIMBRES, style_timbre, P_STYLE_TIMBRE),
        "tempo": tempo,
        "direction": rng.integers(0, len(DIRECTIONS), size=n),
        "speed": speed,
    }
    base_price = np.array([CATEGORY_PRICE[CATEGORIES[c]] for c in cat])
    style_mult = np.where(np.array([STYLES[s] for s in style]) == "luxury", 1.8, 1.0)
    price = np.round(base_price * style_mult * np.exp(rng.normal(0.0, 0.35, size=n)), 2)
    price = np.maximum(price, 0.99)
    log_price = np.log(price)
    # Popularity prior: a heavy-ish tail, and cheaper items sell a little more.
    popularity = rng.normal(0.0, POPULARITY_STD, size=n) - 0.25 * (log_price - log_price.mean()) / (log_price.std() + 1e-9)
    # Release: most items exist from the start; the rest appear during the timeline, so the
    # newest items have few interactions (the cold-start slice holds them out).
    horizon = TIMELINE_DAYS * 86400
    late = rng.random(n) < 0.25
    release = np.where(late, rng.uniform(0.3, 0.9, size=n) * horizon, 0.0).astype(np.int64)
    return {
        "item_id": _ids("i", n),
        "levels": levels,
        "category": [CATEGORIES[c] for c in cat],
        "price": price,
        "popularity": popularity,
        "release": release,  # seconds after START_TS
    }


def _sample_users(rng: np.random.Generator, cfg: SynthConfig) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """User attributes and planted preferences at the start and the end of the timeline.

    A preference is one weight per attribute level: one or two favourite levels get a large
    weight, every level gets individual noise. Over the timeline each user drifts a little
    (a new category interest and fresh noise), interpolated linearly in time.
    """
    n = cfg.n_users
    age = rng.integers(18, 76, size=n)
    country = rng.choice(len(COUNTRIES), size=n, p=np.array(COUNTRY_WEIGHTS) / sum(COUNTRY_WEIGHTS))
    young = age < 35
    start: dict[str, np.ndarray] = {}
    end: dict[str, np.ndarray] = {}
    rows = np.arange(n)
    for group, levels in ATTRIBUTE_GROUPS.items():
        k = len(levels)
        w = rng.normal(0.0, 0.35, size=(n, k))
        fav = rng.integers(0, k, size=n)
        if group == "category":
            # Users' age nudges their favourite category (young: toys/tech/sports; older: home/kitchen).
            nudge = rng.random(n) < 0.3
            young_pick = rng.choice([CATEGORIES.index(c) for c in ("toys", "tech", "sports")], size=n)
            old_pick = rng.choice([CATEGORIES.index(c) for c in ("home", "kitchen", "outdoor")], size=n)
            fav = np.where(nudge, np.where(young, young_pick, old_pick), fav)
        w[rows, fav] += 1.6
        second = rng.random(n) < 0.5
        fav2 = rng.integers(0, k, size=n)
        w[rows[second], fav2[second]] += 0.9
        start[group] = w
        drift = rng.normal(0.0, 0.15, size=(n, k))
        if group == "category":
            new_interest = rng.integers(0, k, size=n)
            drift[rows, new_interest] += 0.8
        end[group] = w + drift
    users = {
        "user_id": _ids("u", n),
        "age": age,
        "country": [COUNTRIES[c] for c in country],
    }
    return users, start, end


def _affinity(prefs: dict[str, np.ndarray], levels: dict[str, np.ndarray]) -> np.ndarray:
    """(n_users, n_items) affinity: the weighted sum of each user's weight for each item level."""
    total = None
    for group, w in prefs.items():
        part = GROUP_WEIGHT[group] * w[:, levels[group]]
        total = part if total is None else total + part
    assert total is not None
    return total


def _sample_interactions(
    rng: np.random.Generator,
    cfg: SynthConfig,
    items: dict[str, Any],
    users: dict[str, Any],
    prefs_start: dict[str, np.ndarray],
    prefs_end: dict[str, np.ndarray],
) -> pd.DataFrame:
    """Sample each user's events in time order by Gumbel-max over the current affinity.

    Vectorised over users: step k draws the k-th event of every user still active, from the
    items released by that time and not yet chosen by that user (no repeats per user).
    """
    n_u, n_i = cfg.n_users, cfg.n_items
    horizon = TIMELINE_DAYS * 86400
    lo, hi = cfg.interactions_per_user
    counts = rng.integers(lo, hi + 1, size=n_u)
    join = rng.uniform(0.0, 0.4, size=n_u) * horizon
    leave = rng.uniform(0.8, 1.0, size=n_u) * horizon
    max_n = int(counts.max())
    # (n_users, max_n) event times, sorted per user; steps past a user's count are ignored.
    times = np.sort(join[:, None] + rng.random((n_u, max_n)) * (leave - join)[:, None], axis=1).astype(np.int64)
    times[np.arange(max_n)[None, :] >= counts[:, None]] = np.iinfo(np.int64).max
    times = np.sort(times, axis=1)

    aff0 = _affinity(prefs_start, items["levels"])
    aff1 = _affinity(prefs_end, items["levels"])
    # Standardise per user so the temperature means the same for everyone.
    mu, sd = aff0.mean(axis=1, keepdims=True), aff0.std(axis=1, keepdims=True) + 1e-9
    aff0, aff1 = (aff0 - mu) / sd, (aff1 - mu) / sd
    beta = AFFINITY_TEMPERATURE  # affinity temperature: higher = content matters more than popularity
    pop = items["popularity"][None, :]
    release = items["release"][None, :]
    used = np.zeros((n_u, n_i), dtype=bool)

    rec_u: list[np.ndarray] = []
    rec_i: list[np.ndarray] = []
    rec_t: list[np.ndarray] = []
    rec_a: list[np.ndarray] = []
    for k in range(max_n):
        active = np.flatnonzero(counts > k)
        t = times[active, k]
        alpha = (t / horizon)[:, None]
        aff = (1.0 - alpha) * aff0[active] + alpha * aff1[active]
        logits = beta * aff + pop + rng.gumbel(size=(len(active), n_i))
        blocked = used[active] | (release > t[:, None])
        logits[blocked] = -np.inf
        choice = logits.argmax(axis=1)
        ok = np.isfinite(logits[np.arange(len(active)), choice])
        users_k, items_k = active[ok], choice[ok]
        used[users_k, items_k] = True
        rec_u.append(users_k)
        rec_i.append(items_k)
        rec_t.append(t[ok])
        rec_a.append(aff[np.flatnonzero(ok), items_k])
    u = np.concatenate(rec_u)
    i = np.concatenate(rec_i)
    ts = np.concatenate(rec_t)
    a = np.concatenate(rec_a)
    # Ratings follow affinity: liked-content items get 4-5 stars, the rest lower.
    rating = np.clip(np.rint(3.0 + 0.9 * (a - 1.0) + rng.normal(0.0, 0.7, size=len(a))), 1, 5).astype(np.int64)
    df = pd.DataFrame(
        {
            USER_ID: np.array(users["user_id"])[u],
            ITEM_ID: np.array(items["item_id"])[i],
            RATING: rating,
            TIMESTAMP: ts + START_TS,
        }
    )
    return df.sort_values([TIMESTAMP, USER_ID, ITEM_ID], kind="mergesort").reset_index(drop=True)


def _choose_missing(rng: np.random.Generator, n_items: int) -> dict[str, set[int]]:
    """Disjoint sets of items lacking image, audio, video or description (~3% each, >= 1)."""
    k = max(1, int(round(MISSING_FRACTION * n_items)))
    picks = rng.permutation(n_items)[: 4 * k]
    names = ("image", "audio", "video", "description")
    return {name: {int(x) for x in picks[j * k : (j + 1) * k]} for j, name in enumerate(names)}


# --- Text --------------------------------------------------------------------------------------


def _item_texts(cfg: SynthConfig, items: dict[str, Any], no_description: set[int]) -> dict[str, list[str]]:
    """Titles and descriptions assembled from the attribute word lists plus noise words."""
    titles: list[str] = []
    descriptions: list[str] = []
    lv = items["levels"]
    for idx in range(cfg.n_items):
        r = np.random.default_rng([cfg.seed, 1, idx])
        cat = CATEGORIES[lv["category"][idx]]
        style = STYLES[lv["style"][idx]]
        colour = COLOURS[lv["colour"][idx]]
        noun = CATEGORY_NOUNS[cat][r.integers(len(CATEGORY_NOUNS[cat]))]
        sw = list(STYLE_WORDS[style])
        r.shuffle(sw)
        topics = list(CATEGORY_TOPICS[cat])
        r.shuffle(topics)
        title_colour = colour.capitalize() + " " if r.random() < 0.6 else ""
        title = f"{sw[0].capitalize()} {title_colour}{noun} {chr(65 + int(r.integers(26)))}{int(r.integers(10, 100))}"
        titles.append(title)
        if idx in no_description:
            descriptions.append("")
            continue
        sentences = [
            f"A {sw[1]} {noun.lower()} made for {topics[0]} and {topics[1]}.",
            f"Its {style} look is {sw[2]} and {sw[3]}.",
        ]
        if r.random() < 0.7:
            sentences.append(f"Finished in {colour} with a {PATTERNS[lv['pattern'][idx]]} texture.")
        if r.random() < 0.5:
            sentences.append(f"Ideal for {topics[2]}.")
        order = r.permutation(len(sentences))
        noise = " ".join(r.choice(NOISE_WORDS, size=int(r.integers(2, 6)), replace=False))
        text = " ".join(sentences[j] for j in order) + f" {noise.capitalize()}."
        descriptions.append(text)
    return {"title": titles, "description": descriptions}


# --- Media -------------------------------------------------------------------------------------


def _write_media(folder: Path, cfg: SynthConfig, items: dict[str, Any], missing: dict[str, set[int]]) -> dict[str, list[str]]:
    """Render every item's PNG, WAV and MP4; return relative paths ("" where the item lacks one)."""
    for sub in ("images", "audio", "videos"):
        (folder / sub).mkdir()
    paths: dict[str, list[str]] = {"image": [], "audio": [], "video": []}
    lv = items["levels"]
    t0 = time.perf_counter()
    for idx, item_id in enumerate(items["item_id"]):
        attrs = {g: ATTRIBUTE_GROUPS[g][int(lv[g][idx])] for g in ATTRIBUTE_GROUPS}
        if idx in missing["image"]:
            paths["image"].append("")
        else:
            rel = f"images/{item_id}.png"
            _render_image(np.random.default_rng([cfg.seed, 2, idx]), attrs, cfg.image_size).save(
                folder / rel, format="PNG", optimize=False
            )
            paths["image"].append(rel)
        if idx in missing["audio"]:
            paths["audio"].append("")
        else:
            rel = f"audio/{item_id}.wav"
            samples = _render_audio(np.random.default_rng([cfg.seed, 3, idx]), attrs, cfg.audio_seconds, cfg.audio_rate)
            _write_wav(folder / rel, samples, cfg.audio_rate)
            paths["audio"].append(rel)
        if idx in missing["video"]:
            paths["video"].append("")
        else:
            rel = f"videos/{item_id}.mp4"
            frames = _render_video(np.random.default_rng([cfg.seed, 4, idx]), attrs, cfg.video_frames, cfg.video_size)
            write_mp4(folder / rel, frames, VIDEO_FPS)
            paths["video"].append(rel)
        if (idx + 1) % 100 == 0:
            log.info("synth: media for %d/%d items (%.1fs)", idx + 1, cfg.n_items, time.perf_counter() - t0)
    return paths


def _jitter_colour(r: np.random.Generator, colour: str, amount: int = 18) -> tuple[int, int, int]:
    base = np.array(RGB[colour]) + r.integers(-amount, amount + 1, size=3)
    c = np.clip(base, 0, 255)
    return int(c[0]), int(c[1]), int(c[2])


def _shape_points(shape: str, cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    """Polygon vertices of a square, triangle or five-pointed star (circles use ellipse)."""
    if shape == "square":
        n, radii = 4, [radius]
        angle += math.pi / 4
    elif shape == "triangle":
        n, radii = 3, [radius]
        angle -= math.pi / 2
    else:  # star
        n, radii = 10, [radius, radius * 0.45]
        angle -= math.pi / 2
    return [
        (cx + radii[j % len(radii)] * math.cos(angle + 2 * math.pi * j / n), cy + radii[j % len(radii)] * math.sin(angle + 2 * math.pi * j / n))
        for j in range(n)
    ]


def _draw_shape(draw: Any, shape: str, cx: float, cy: float, radius: float, angle: float, fill: tuple[int, int, int]) -> None:
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
    else:
        draw.polygon(_shape_points(shape, cx, cy, radius, angle), fill=fill)


def _background(r: np.random.Generator, pattern: str, size: int) -> np.ndarray:
    """(size, size, 3) uint8 light textured background carrying the item's pattern."""
    base = np.array([228, 224, 214], dtype=np.float64) + r.integers(-12, 13, size=3)
    yy, xx = np.mgrid[0:size, 0:size]
    period = max(4, size // int(r.integers(5, 9)))
    phase = int(r.integers(0, period))
    if pattern == "stripes":
        mask = ((xx + yy + phase) // max(2, period // 2)) % 2 == 0
    elif pattern == "dots":
        cy = (yy + phase) % period - period / 2
        cx = (xx + phase) % period - period / 2
        mask = cy**2 + cx**2 < (period / 4) ** 2
    elif pattern == "checker":
        mask = (((xx + phase) // period) + ((yy + phase) // period)) % 2 == 0
    else:
        mask = np.zeros((size, size), dtype=bool)
    img = np.broadcast_to(base, (size, size, 3)).copy()
    img[mask] -= 45.0
    img += r.normal(0.0, 6.0, size=(size, size, 1))  # paper-like grain, so no two are identical
    return np.clip(img, 0, 255).astype(np.uint8)


def _render_image(r: np.random.Generator, attrs: dict[str, str], size: int) -> Any:
    """The item's shape in its colour on its patterned background, with jitter."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(_background(r, attrs["pattern"], size), mode="RGB")
    draw = ImageDraw.Draw(img)
    radius = size * float(r.uniform(0.24, 0.34))
    cx = size / 2 + float(r.uniform(-0.08, 0.08)) * size
    cy = size / 2 + float(r.uniform(-0.08, 0.08)) * size
    _draw_shape(draw, attrs["shape"], cx, cy, radius, float(r.uniform(-0.3, 0.3)), _jitter_colour(r, attrs["colour"]))
    return img


def _render_audio(r: np.random.Generator, attrs: dict[str, str], seconds: float, rate: int) -> np.ndarray:
    """Mono float samples in [-1, 1]: pitch, timbre and tempo made audible.

    pitch -> fundamental (low/mid/high, +-1.5 semitones); timbre -> pure sine, bright
    harmonics, major chord, or noise bursts over a tone; tempo -> pulse rate (2/4/8 per second).
    """
    n = max(1, int(round(seconds * rate)))
    t = np.arange(n) / rate
    f0 = PITCH_HZ[attrs["pitch"]] * 2 ** (float(r.uniform(-1.5, 1.5)) / 12)
    timbre = attrs["timbre"]
    if timbre == "pure":
        wave_ = np.sin(2 * np.pi * f0 * t)
    elif timbre == "bright":
        wave_ = np.sum([np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 7)], axis=0)
    elif timbre == "chord":
        wave_ = np.sum([np.sin(2 * np.pi * f0 * m * t) for m in (1.0, 1.26, 1.5)], axis=0)
    else:  # noisy: smoothed noise bursts over a quiet tone
        noise = r.normal(0.0, 1.0, size=n)
        width = max(1, int(rate / (4 * f0)))
        noise = np.convolve(noise, np.ones(width) / width, mode="same") * math.sqrt(width)
        wave_ = 0.4 * np.sin(2 * np.pi * f0 * t) + noise
    pulse_hz = TEMPO_HZ[attrs["tempo"]] * float(r.uniform(0.9, 1.1))
    phase = (t * pulse_hz + float(r.uniform(0, 1))) % 1.0
    envelope = np.exp(-phase * 6.0)
    signal = wave_ * envelope + r.normal(0.0, 0.003, size=n)
    return 0.8 * signal / (np.abs(signal).max() + 1e-9)


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    pcm = np.clip(np.rint(samples * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def _render_video(r: np.random.Generator, attrs: dict[str, str], n_frames: int, size: int) -> list[np.ndarray]:
    """RGB frames of the item's shape moving in its direction at its speed over a plain backdrop."""
    from PIL import Image, ImageDraw

    backdrop = np.clip(
        np.array([200, 200, 205], dtype=np.float64) + r.integers(-15, 16, size=3) + r.normal(0, 4.0, size=(size, size, 1)),
        0,
        255,
    ).astype(np.uint8)
    fill = _jitter_colour(r, attrs["colour"])
    radius = size * float(r.uniform(0.14, 0.2))
    dx, dy = DIRECTION_VEC[attrs["direction"]]
    step = SPEED_FRAC[attrs["speed"]] * size * float(r.uniform(0.85, 1.15))
    span = step * (n_frames - 1)
    cx0 = size / 2 - dx * span / 2 + float(r.uniform(-0.05, 0.05)) * size
    cy0 = size / 2 - dy * span / 2 + float(r.uniform(-0.05, 0.05)) * size
    angle = float(r.uniform(-0.3, 0.3))
    frames = []
    for f in range(n_frames):
        img = Image.fromarray(backdrop, mode="RGB")
        _draw_shape(ImageDraw.Draw(img), attrs["shape"], cx0 + dx * step * f, cy0 + dy * step * f, radius, angle, fill)
        frames.append(np.asarray(img))
    return frames


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """BT.601 limited-range YUV 4:2:0 planes stacked as PyAV's (h * 3 / 2, w) uint8 layout.

    Converting in numpy fixes the encoder's input exactly, independent of swscale's SIMD paths.
    """
    x = np.asarray(rgb, dtype=np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    h, w = y.shape

    def sub(c: np.ndarray) -> np.ndarray:  # 2x2 mean (dimensions are even for the synthetic sizes)
        return c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    planes = [np.rint(y), np.rint(sub(u)).reshape(h // 4, w), np.rint(sub(v)).reshape(h // 4, w)]
    return np.clip(np.concatenate(planes, axis=0), 0, 255).astype(np.uint8)


def write_mp4(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """Encode RGB frames as a small yuv420p MP4 (MPEG-4 part 2; h264 if that encoder is absent).

    One encoder thread and fixed options keep the output reproducible.
    """
    import av

    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w", format="mp4") as container:
        stream: Any = None  # av.VideoStream; Any because add_stream's return type is a union
        # MPEG-4 part 2 first: libx264 gave different bytes for the same frames in different
        # processes (even single-threaded), which broke "same seed, same files".
        for codec, options in (
            ("mpeg4", {"qscale": "2", "threads": "1"}),
            ("libx264", {"preset": "veryfast", "crf": "18", "threads": "1", "bframes": "0"}),
        ):
            try:
                stream = container.add_stream(codec, rate=fps, options=options)
                break
            except Exception:  # noqa: BLE001 - encoder not in this PyAV build: try the next one
                continue
        if stream is None:
            raise ConfigError("synth: PyAV has neither a libx264 nor an mpeg4 encoder; reinstall `av`")
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        for arr in frames:
            frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(arr), format="yuv420p")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


# --- Files -------------------------------------------------------------------------------------


def _write_csv(path: Path, df: pd.DataFrame) -> None:
    df.to_csv(path, index=False, lineterminator="\n")


def _dataset_yaml(cfg: SynthConfig) -> str:
    return f"""\
# Synthetic multimodal shop written by `mmrec data synth` (seed {cfg.seed}).
# No `root:` key: the data root is the folder holding this file.
name: {DATASET_NAME}
description: >-
  Synthetic shop: {cfg.n_users} users, {cfg.n_items} items with PNG images, WAV audio, MP4 video
  and text; users have planted preferences over visual, textual and audio attributes.
interactions:
  path: interactions.csv
  columns: {{user_id: user_id, item_id: item_id, timestamp: timestamp, rating: rating}}
  timestamp_format: unix_s
items:
  path: items.csv
  columns: {{item_id: item_id}}
  text_fields: {{title: title, category: category, description: description}}
  media: {{image: image_path, audio: audio_path, video: video_path}}
  metadata: [price]
users:
  path: users.csv
  columns: {{user_id: user_id}}
  attributes: [age, country]
"""


def _readme(cfg: SynthConfig, n_interactions: int, missing: dict[str, set[int]]) -> str:
    groups = "\n".join(
        f"| {g} | {GROUP_MODALITY[g]} | {', '.join(levels)} | {GROUP_WEIGHT[g]} |" for g, levels in ATTRIBUTE_GROUPS.items()
    )
    gaps = ", ".join(f"{len(v)} without {k}" for k, v in missing.items())
    return f"""\
# Synthetic multimodal shop (`mmrec data synth`)

Generated by `mmrec.data.synth.generate_synthetic` with seed {cfg.seed}: {cfg.n_users} users,
{cfg.n_items} items, {n_interactions} interactions over {TIMELINE_DAYS} days starting
{START_TS} (2024-01-01 UTC, unix seconds). The same seed always gives the same files.

## Files
- `interactions.csv`: user_id, item_id, rating (1-5), timestamp (unix seconds).
- `items.csv`: item_id, title, category, description, price, image_path, audio_path, video_path.
- `users.csv`: user_id, age, country.
- `images/<item_id>.png` ({cfg.image_size}x{cfg.image_size} RGB), `audio/<item_id>.wav`
  (mono PCM16, {cfg.audio_rate} Hz, {cfg.audio_seconds} s), `videos/<item_id>.mp4`
  ({cfg.video_frames} frames of {cfg.video_size}x{cfg.video_size}, yuv420p, {VIDEO_FPS} fps).
- `dataset.yaml`: the mmrec data contract for this folder.
- `ground_truth.json`: the latent item attributes and user preferences. **Models must not read
  it**; it exists for tests and for checking what a model has learnt.

## Planted structure
Every item has one level of each latent attribute below; each is rendered into a modality.

| attribute | modality | levels | weight in affinity |
| --- | --- | --- | --- |
{groups}

Cross-modal correlations (so modalities overlap but each keeps its own signal): the category
sets the typical colour ({int(P_HOME_COLOUR * 100)}%), pitch ({int(P_HOME_PITCH * 100)}%) and price; the style sets the
typical timbre ({int(P_STYLE_TIMBRE * 100)}%); the audio tempo sets the typical video speed ({int(P_TEMPO_SPEED * 100)}%). Text: the title
and description use the category's nouns and topic words, the style's adjectives, often the
colour and pattern, plus noise words.

Every user has one or two favourite levels per attribute plus individual noise (their age
nudges the favourite category). Preferences drift linearly over the timeline (a new category
interest and fresh noise), so the future differs from the past but content still predicts it.
Each user's events are drawn in time order, without repeats, by a softmax over
affinity(user, item) + item popularity (Gumbel-max); only released items can be drawn, and
about a quarter of the items are released during the timeline, so the newest items have few
interactions. Ratings grow with affinity.

## Gaps (a missing modality is data, not an error)
{gaps} (empty cells in items.csv).
"""


def _ground_truth(
    cfg: SynthConfig,
    items: dict[str, Any],
    users: dict[str, Any],
    prefs_start: dict[str, np.ndarray],
    prefs_end: dict[str, np.ndarray],
    missing: dict[str, set[int]],
) -> dict[str, Any]:
    lv = items["levels"]
    item_rows = {
        item_id: {
            **{g: ATTRIBUTE_GROUPS[g][int(lv[g][idx])] for g in ATTRIBUTE_GROUPS},
            "popularity": round(float(items["popularity"][idx]), 6),
            "release_ts": int(items["release"][idx]) + START_TS,
        }
        for idx, item_id in enumerate(items["item_id"])
    }
    user_rows = {
        user_id: {
            "start": {g: [round(float(x), 6) for x in prefs_start[g][idx]] for g in ATTRIBUTE_GROUPS},
            "end": {g: [round(float(x), 6) for x in prefs_end[g][idx]] for g in ATTRIBUTE_GROUPS},
        }
        for idx, user_id in enumerate(users["user_id"])
    }
    return {
        "warning": "ground truth of the generator; models must NOT read this file",
        "config": {**asdict(cfg), "interactions_per_user": list(cfg.interactions_per_user)},
        "timeline": {"start_ts": START_TS, "days": TIMELINE_DAYS},
        "attributes": {g: list(levels) for g, levels in ATTRIBUTE_GROUPS.items()},
        "attribute_modality": GROUP_MODALITY,
        "attribute_weight": GROUP_WEIGHT,
        "missing": {k: sorted(items["item_id"][i] for i in v) for k, v in missing.items()},
        "items": item_rows,
        "users": user_rows,
    }


__all__ = ["ATTRIBUTE_GROUPS", "GROUND_TRUTH_FILE", "SynthConfig", "generate_synthetic", "write_dataset", "write_mp4"]

