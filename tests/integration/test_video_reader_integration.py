"""The one plain clip reader (arvid_ray.video.reader): every caller reads videos.parquet through storage.

Issue 25: three readers of clips from videos.parquet, one of which (tokenizer training's parquet_clips)
opened the path with pyarrow directly — no ingest output directory, no storage.s3_endpoint."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from arvid_ray import schemas as S
from arvid_ray.config import ExperimentConfig
from arvid_ray.tokenizer.clips import parquet_clips
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


def test_tokenizer_clips_read_from_object_storage(s3_server, tmp_path):
    """storage.s3_endpoint reaches the tokenizer's reader now (pyarrow on its own asks AWS)."""
    import boto3

    from arvid_ray import storage as st

    out = _ingest_output(tmp_path / "out")
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket="clips")
    storage = ExperimentConfig().storage.__class__(s3_endpoint=s3_server)
    st.upload_dir(str(out), "s3://clips/ds", storage)
    local = parquet_clips(out, ("val",), 17, 32)
    np.testing.assert_array_equal(parquet_clips("s3://clips/ds", ("val",), 17, 32, storage=storage), local)
