"""Arrow schemas and column names: the contracts between pipeline stages.

`videos.parquet` (ingest → decode) and `tokens.parquet` (tokenize → train) are written with these
explicit schemas so that a stage never infers types from data, and so that plain pyarrow can read
every artifact without importing arvid_ray. Token grids are stored flattened (list<int32>) together
with their shape, which keeps rows readable by any Parquet reader.
"""

from __future__ import annotations

import pyarrow as pa

# ---- videos.parquet: one row per accepted source video (or segment of a long video) ----
VIDEO_ID = "video_id"
SOURCE_URI = "source_uri"
VIDEO = "video"
NUM_FRAMES = "num_frames"
FPS = "fps"
WIDTH = "width"
HEIGHT = "height"
LABEL = "label"
CAPTION = "caption"
SPLIT = "split"
SEGMENT_START = "segment_start"  # first source frame of this segment (0 for unsegmented videos)

VIDEOS_SCHEMA = pa.schema(
    [
        pa.field(VIDEO_ID, pa.string(), nullable=False),
        pa.field(SOURCE_URI, pa.string(), nullable=False),
        pa.field(VIDEO, pa.large_binary(), nullable=False),
        pa.field(NUM_FRAMES, pa.int32(), nullable=False),
        pa.field(FPS, pa.float32(), nullable=False),
        pa.field(WIDTH, pa.int32(), nullable=False),
        pa.field(HEIGHT, pa.int32(), nullable=False),
        pa.field(LABEL, pa.int32(), nullable=False),
        pa.field(CAPTION, pa.string(), nullable=False),
        pa.field(SPLIT, pa.string(), nullable=False),
        pa.field(SEGMENT_START, pa.int32(), nullable=False),
    ]
)
NO_LABEL = -1
# Layout written by ingest: ~64 MiB files of row groups of this many rows. Row groups are the unit the
# clip stream plans its reads in (arvid_ray.clips), so small ones let any number of decoders share a file.
VIDEOS_ROW_GROUP_ROWS = 8
VIDEOS_FILE_BYTES = 64 * 2**20

# ---- rejects.jsonl: one JSON object per refused input ----
REJECT_FIELDS = (SOURCE_URI, "reason")

# ---- decoded clip rows (Ray Data stream between decode and tokenize/train) ----
FRAMES = "frames"  # uint8 [T, H, W, 3]
CLIP_START = "clip_start"
CLIP_COLUMNS = (FRAMES, LABEL, CAPTION, VIDEO_ID, CLIP_START)

# ---- tokens.parquet: one row per clip ----
TOKENS = "tokens"  # list<int32>, row-major flattening of [t, h, w]
TOKENS_SHAPE = "tokens_shape"  # [t, h, w]

TOKENS_SCHEMA = pa.schema(
    [
        pa.field(VIDEO_ID, pa.string(), nullable=False),
        pa.field(CLIP_START, pa.int32(), nullable=False),
        pa.field(NUM_FRAMES, pa.int32(), nullable=False),
        pa.field(TOKENS, pa.list_(pa.int32()), nullable=False),
        pa.field(TOKENS_SHAPE, pa.list_(pa.int32(), 3), nullable=False),
        pa.field(LABEL, pa.int32(), nullable=False),
        pa.field(CAPTION, pa.string(), nullable=False),
        pa.field(SPLIT, pa.string(), nullable=False),
    ]
)
# file-level metadata keys in tokens.parquet
META_TOKENIZER_ID = b"arvid.tokenizer_id"
META_TOKENIZER_SHA256 = b"arvid.tokenizer_sha256"
META_VOCAB_SIZE = b"arvid.vocab_size"
