"""What test_video_reader.py and test_video_reader_integration.py share (moved here from both when the tests were split)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from arvid_ray import schemas as S
from arvid_ray.config import ExperimentConfig
from arvid_ray.video.io import encode_mp4
from arvid_ray.video.synthetic import render_video

SYNTH = ExperimentConfig().synth


def _rows():
    rows = []
    for i in range(5):
        v = render_video(i, SYNTH)
        rows.append({"video_id": f"v{i}", "source_uri": f"mem://{i}", "video": encode_mp4(v.frames[:20]),
                     "num_frames": 20 if i != 3 else 9, "fps": 8.0, "width": 64, "height": 64, "label": i,
                     "caption": f"clip {i}", "split": "val" if i < 2 else "train", "segment_start": 0})
    return rows


def _ingest_output(out):
    """What `arvid-ray ingest` leaves: out/videos.parquet/ shards beside rejects.jsonl and classes.txt."""
    (out / "videos.parquet").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(_rows(), schema=S.VIDEOS_SCHEMA), out / "videos.parquet" / "0.parquet")
    (out / "rejects.jsonl").write_text('{"source_uri": "x", "reason": "empty"}\n')
    (out / "classes.txt").write_text("a\nb\n")
    return out
