"""Offline sources: the parquet tables `mmrec.feast.export.export_tables` writes for one dataset.

Where the tables are: `$MMREC_FEAST_DATA` (a folder; relative paths are relative to this repo),
default `../data/synth/feast/tables`, i.e. the embedded default dataset of a checkout. mmrec sets
the variable itself when it applies this repo for another dataset (`mmrec stage materialize
--dataset ...`), so the definitions here never name a dataset.

Every table has `event_timestamp` (when the value became true: for statistics the end of the day
they summarise, for embeddings and recommendations when they were computed) and `created` (when
the export wrote the row), which Feast uses to break ties between rows with the same event time.
"""

import os
from pathlib import Path

from feast import FileSource

#: Folder of the exported tables (see the module docstring).
DATA = Path(os.environ.get("MMREC_FEAST_DATA", "../data/synth/feast/tables"))

EVENT_TIMESTAMP = "event_timestamp"
CREATED = "created"

MODALITIES = ("text", "image", "audio", "video")


def table_source(table: str, description: str) -> FileSource:
    """One exported parquet table as a Feast file source named after the table."""
    return FileSource(
        name=table,
        path=str(DATA / f"{table}.parquet"),
        timestamp_field=EVENT_TIMESTAMP,
        created_timestamp_column=CREATED,
        description=description,
    )


item_embedding_sources = {
    m: table_source(f"item_{m}_embedding", f"Item {m} vectors of the configured {m} encoder (extract stage).")
    for m in MODALITIES
}
item_text_embedding_source = item_embedding_sources["text"]
item_image_embedding_source = item_embedding_sources["image"]
item_audio_embedding_source = item_embedding_sources["audio"]
item_video_embedding_source = item_embedding_sources["video"]

item_fused_embedding_source = table_source(
    "item_fused_embedding",
    "Concatenation of the L2-normalised per-modality vectors (missing modality = zeros), unit length.",
)
item_model_embedding_source = table_source("item_model_embedding", "The champion model's item factors.")
user_embedding_source = table_source("user_embedding", "The champion model's user factors.")
item_stats_source = table_source(
    "item_stats", "Daily item statistics over the training interactions, plus a current snapshot."
)
user_stats_source = table_source(
    "user_stats", "Daily user statistics over the training interactions, plus a current snapshot."
)
user_recommendations_source = table_source("user_recommendations", "The nightly top-K of the champion per user.")
