"""Column names, defaults and seeds used everywhere; the one place they are spelled out."""

from __future__ import annotations

# Contract column names (ids are strings at every boundary).
USER_ID = "user_id"
ITEM_ID = "item_id"
TIMESTAMP = "timestamp"  # UTC, pandas datetime64[ns, UTC] inside the warehouse
RATING = "rating"
WEIGHT = "weight"
EVENT = "event"
ROW_HASH = "row_hash"  # content hash of a normalised row, recorded at ingestion
REASON = "reason"  # why a row was quarantined
SOURCE_ROW = "source_row"  # 1-based data-row number in the raw file (header excluded)

#: The platform's one image size limit (width x height, Pillow's own MAX_IMAGE_PIXELS default):
#: validation quarantines larger images from their header alone, extraction refuses them before
#: decoding and the API does not serve them. `extract.image.max_pixels` sets it per project.
MAX_IMAGE_PIXELS = 89_478_485

MODALITIES = ("text", "image", "audio", "video")
MEDIA_COLUMNS = ("image", "audio", "video")  # item columns holding paths relative to the dataset
TEXT = "text"  # the item's text document: field names + values, in configured order

TABLES = ("interactions", "items", "users")

SPLIT_KINDS = ("temporal", "random", "global_time")
SPLIT_PARTS = ("train", "valid", "test", "cold_valid", "cold_test")

DEFAULT_KS = (10, 20)
DEFAULT_K = 20
SEED = 42
