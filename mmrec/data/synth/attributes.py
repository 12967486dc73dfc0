"""The synthetic shop's latent attributes: vocabularies, how they correlate across modalities, how they render (colours, pitches, motion), the word lists of the text, and the generator's fixed constants."""

from __future__ import annotations

DATASET_NAME = "synth"


GROUND_TRUTH_FILE = "ground_truth.json"


START_TS = 1_704_067_200  # 2024-01-01T00:00:00Z: a fixed epoch keeps the files seed-deterministic


TIMELINE_DAYS = 180


MISSING_FRACTION = 0.03  # share of items lacking each of image / audio / video / description


VIDEO_FPS = 8


POPULARITY_STD = 0.9  # spread of the item popularity prior (log-odds)


AFFINITY_TEMPERATURE = 2.2  # logits = T * standardised affinity + popularity + Gumbel noise


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
CATEGORY_COLOUR = dict(
    zip(CATEGORIES, ("green", "red", "blue", "purple", "yellow", "orange", "teal", "pink"), strict=True)
)


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
    "great",
    "value",
    "gift",
    "popular",
    "new",
    "season",
    "shipping",
    "quality",
    "favourite",
    "everyday",
    "design",
    "customers",
    "love",
    "perfect",
    "choice",
    "bundle",
    "limited",
    "edition",
)


COUNTRIES = ("US", "GB", "DE", "FR", "IN", "BR", "JP", "CA", "ES", "NG")


COUNTRY_WEIGHTS = (0.25, 0.12, 0.1, 0.09, 0.12, 0.08, 0.07, 0.07, 0.05, 0.05)
