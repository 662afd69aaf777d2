"""The index's tables, declared once (Arrow schemas), and the schema version they make up.

`videos` holds one row per indexed content (keyed by content hash); `files` maps every path seen to
its content and status, so failures are listed by file and an unchanged library is skipped without
re-hashing; `segments` holds pooled vectors of shots, fixed windows and the whole video;
`video_features` holds each video's timed unit vectors (frames or merged groups of frames) and audio
vectors; `spans` holds timed text with sentence vectors. Times are float seconds from the file start.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1
SPAN_DIM = 384  # sentence encoder (all-MiniLM-L6-v2)


def files_schema() -> pa.Schema:
    return pa.schema(
        [
            ("path", pa.string()),
            ("size", pa.int64()),
            ("mtime", pa.float64()),
            ("video_id", pa.string()),  # content hash; null when the file could not be read
            ("status", pa.string()),  # "indexed" | "failed" | "deleted" (removed by a user: kept out of later runs)
            ("error", pa.string()),
            ("updated_at", pa.float64()),
        ]
    )


def videos_schema() -> pa.Schema:
    return pa.schema(
        [
            ("video_id", pa.string()),
            ("path", pa.string()),
            ("title", pa.string()),
            ("metadata", pa.string()),  # JSON object from the manifest
            ("duration", pa.float64()),
            ("fps", pa.float64()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("size_bytes", pa.int64()),
            ("has_audio", pa.bool_()),
            ("n_units", pa.int32()),
            ("decoder", pa.string()),
            ("fingerprint", pa.string()),
            ("indexed_at", pa.float64()),
        ]
    )


def segments_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            ("segment_id", pa.string()),
            ("video_id", pa.string()),
            ("kind", pa.string()),  # "shot" | "window" | "video"
            ("start", pa.float64()),
            ("end", pa.float64()),
            ("vector", pa.list_(pa.float32(), dim)),
            ("fingerprint", pa.string()),
        ]
    )


# Each unit's where-cue (x, y of what moved, in [-1, 1]; search/motion_channel.py). Added after the
# first indexes were made: a table without it gets it (null for the rows already there) at its next
# write, and a search reads a null or empty list as "no cues" for that video.
UNIT_CUES = pa.field("unit_cues", pa.list_(pa.list_(pa.float32(), 2)))

# Each unit's silhouette reading (the share of its frames with an outline of what moved, then the
# outline's radial harmonics 1..5; encoders/silhouettes.py, search/shape_channel.py). Added after
# UNIT_CUES, the same way: a table without it gets it at its next write, a null row reads as none.
UNIT_SHAPES = pa.field("unit_shapes", pa.list_(pa.list_(pa.float32(), 6)))

# The soundtrack every quarter second (start, level in dB, peak frequency, tonality, crest;
# encoders/sound_cues.py, search/sound_channel.py): its own time grid, not the units'. Added the same way.
SOUND_CUES = pa.field("sound_cues", pa.list_(pa.list_(pa.float32(), 5)))


def video_features_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            ("video_id", pa.string()),
            ("fingerprint", pa.string()),
            ("unit_start", pa.list_(pa.float32())),
            ("unit_end", pa.list_(pa.float32())),
            ("unit_vectors", pa.list_(pa.list_(pa.float32(), dim))),
            ("audio_start", pa.list_(pa.float32())),
            ("audio_end", pa.list_(pa.float32())),
            ("audio_vectors", pa.list_(pa.list_(pa.float32()))),
            UNIT_CUES,
            UNIT_SHAPES,
            SOUND_CUES,
        ]
    )


def spans_schema() -> pa.Schema:
    return pa.schema(
        [
            ("span_id", pa.string()),
            ("video_id", pa.string()),
            ("source", pa.string()),  # "speech" | "ocr" | "subtitle" | "metadata"
            ("start", pa.float64()),
            ("end", pa.float64()),
            ("text", pa.string()),
            ("vector", pa.list_(pa.float32(), SPAN_DIM)),
            ("fingerprint", pa.string()),
        ]
    )


def meta_schema() -> pa.Schema:
    return pa.schema([("key", pa.string()), ("value", pa.string())])
