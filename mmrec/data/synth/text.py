"""The text modality: each item's title, description and metadata written from its attributes, with noise words."""

from __future__ import annotations

from typing import Any

import numpy as np

from mmrec.data.synth.attributes import (
    CATEGORIES,
    CATEGORY_NOUNS,
    CATEGORY_TOPICS,
    COLOURS,
    NOISE_WORDS,
    PATTERNS,
    STYLE_WORDS,
    STYLES,
)
from mmrec.data.synth.config import SynthConfig


def item_texts(cfg: SynthConfig, items: dict[str, Any], no_description: set[int]) -> dict[str, list[str]]:
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
