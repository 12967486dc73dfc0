"""Sampling the latent structure: items with attributes and popularity, users with planted preferences, interactions from a softmax over affinity + popularity, and which items lack which modality."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mmrec.constants import ITEM_ID, RATING, TIMESTAMP, USER_ID
from mmrec.data.synth.attributes import (
    AFFINITY_TEMPERATURE,
    ATTRIBUTE_GROUPS,
    CATEGORIES,
    CATEGORY_COLOUR,
    CATEGORY_PITCH,
    CATEGORY_PRICE,
    COLOURS,
    COUNTRIES,
    COUNTRY_WEIGHTS,
    DIRECTIONS,
    GROUP_WEIGHT,
    MISSING_FRACTION,
    P_HOME_COLOUR,
    P_HOME_PITCH,
    P_STYLE_TIMBRE,
    P_TEMPO_SPEED,
    PATTERNS,
    PITCHES,
    POPULARITY_STD,
    SHAPES,
    SPEEDS,
    START_TS,
    STYLE_TIMBRE,
    STYLES,
    TEMPO_SPEED,
    TEMPOS,
    TIMBRES,
    TIMELINE_DAYS,
)
from mmrec.data.synth.config import SynthConfig


def make_ids(prefix: str, n: int) -> list[str]:
    width = max(4, len(str(n)))
    return [f"{prefix}{k:0{width}d}" for k in range(1, n + 1)]


def correlated_levels(
    rng: np.random.Generator, n: int, levels: tuple[str, ...], home: np.ndarray, p_home: float
) -> np.ndarray:
    """Level indices: the `home` level with probability p_home, else uniform over all levels."""
    other = rng.integers(0, len(levels), size=n)
    keep = rng.random(n) < p_home
    return np.where(keep, home, other)


def sample_items(rng: np.random.Generator, cfg: SynthConfig) -> dict[str, Any]:
    """Latent attributes, price, popularity and release time of every item."""
    n = cfg.n_items
    cat = rng.integers(0, len(CATEGORIES), size=n)
    home_colour = np.array([COLOURS.index(CATEGORY_COLOUR[CATEGORIES[c]]) for c in cat])
    home_pitch = np.array([PITCHES.index(CATEGORY_PITCH[CATEGORIES[c]]) for c in cat])
    style = rng.integers(0, len(STYLES), size=n)
    style_timbre = np.array([TIMBRES.index(STYLE_TIMBRE[STYLES[s]]) for s in style])
    tempo = rng.integers(0, len(TEMPOS), size=n)
    tempo_speed = np.array([SPEEDS.index(TEMPO_SPEED[TEMPOS[t]]) if TEMPO_SPEED[TEMPOS[t]] else 0 for t in tempo])
    speed_p = np.array([P_TEMPO_SPEED if TEMPO_SPEED[TEMPOS[t]] else 0.0 for t in tempo])
    speed = np.where(rng.random(n) < speed_p, tempo_speed, rng.integers(0, len(SPEEDS), size=n))
    levels = {
        "category": cat,
        "colour": correlated_levels(rng, n, COLOURS, home_colour, P_HOME_COLOUR),
        "shape": rng.integers(0, len(SHAPES), size=n),
        "pattern": rng.integers(0, len(PATTERNS), size=n),
        "style": style,
        "pitch": correlated_levels(rng, n, PITCHES, home_pitch, P_HOME_PITCH),
        "timbre": correlated_levels(rng, n, TIMBRES, style_timbre, P_STYLE_TIMBRE),
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
    popularity = rng.normal(0.0, POPULARITY_STD, size=n) - 0.25 * (log_price - log_price.mean()) / (
        log_price.std() + 1e-9
    )
    # Release: most items exist from the start; the rest appear during the timeline, so the
    # newest items have few interactions (the cold-start slice holds them out).
    horizon = TIMELINE_DAYS * 86400
    late = rng.random(n) < 0.25
    release = np.where(late, rng.uniform(0.3, 0.9, size=n) * horizon, 0.0).astype(np.int64)
    return {
        "item_id": make_ids("i", n),
        "levels": levels,
        "category": [CATEGORIES[c] for c in cat],
        "price": price,
        "popularity": popularity,
        "release": release,  # seconds after START_TS
    }


def sample_users(
    rng: np.random.Generator, cfg: SynthConfig
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray]]:
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
        "user_id": make_ids("u", n),
        "age": age,
        "country": [COUNTRIES[c] for c in country],
    }
    return users, start, end


def affinity_matrix(prefs: dict[str, np.ndarray], levels: dict[str, np.ndarray]) -> np.ndarray:
    """(n_users, n_items) affinity: the weighted sum of each user's weight for each item level."""
    total = None
    for group, w in prefs.items():
        part = GROUP_WEIGHT[group] * w[:, levels[group]]
        total = part if total is None else total + part
    assert total is not None
    return total


def sample_interactions(
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

    aff0 = affinity_matrix(prefs_start, items["levels"])
    aff1 = affinity_matrix(prefs_end, items["levels"])
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


def choose_missing(rng: np.random.Generator, n_items: int) -> dict[str, set[int]]:
    """Disjoint sets of items lacking image, audio, video or description (~3% each, >= 1)."""
    k = max(1, int(round(MISSING_FRACTION * n_items)))
    picks = rng.permutation(n_items)[: 4 * k]
    names = ("image", "audio", "video", "description")
    return {name: {int(x) for x in picks[j * k : (j + 1) * k]} for j, name in enumerate(names)}
