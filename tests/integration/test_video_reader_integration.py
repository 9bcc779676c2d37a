"""The one plain clip reader (arvid_ray.video.reader): every caller reads videos.parquet through storage.

Issue 25: three readers of clips from videos.parquet, one of which (tokenizer training's parquet_clips)
opened the path with pyarrow directly — no ingest output directory, no storage.s3_endpoint."""

from __future__ import annotations

import numpy as np
from video_reader_shared import _ingest_output

from arvid_ray.config import ExperimentConfig
from arvid_ray.tokenizer.clips import parquet_clips


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
