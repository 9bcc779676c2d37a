"""Ingest: every input ends accepted or rejected (with its reason); manifests; segments; S3 in and out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from ingest_shared import _cfg
from video_fixtures import make_video, write_mixed_folder

from arvid_ray import schemas as S
from arvid_ray.ingest import ingest, video_id_of


@pytest.mark.ray
def test_ingest_mixed_folder(ray_session, tmp_path):
    src = tmp_path / "src"
    expected = write_mixed_folder(src)
    summary = ingest(src, tmp_path / "out", _cfg())
    accepted = {rel for rel, code in expected.items() if code is None}
    rejected = {rel: code for rel, code in expected.items() if code is not None}
    assert (summary.inputs, summary.accepted, summary.rows) == (len(expected), len(accepted), len(accepted))
    assert summary.rejected == {code: 1 for code in rejected.values()}
    table = pq.read_table(tmp_path / "out" / "videos.parquet")
    assert table.schema.remove_metadata().equals(S.VIDEOS_SCHEMA)
    got = {str(Path(u).relative_to(src)) for u in table.column(S.SOURCE_URI).to_pylist()}
    assert got == accepted
    lines = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    reasons = {str(Path(x[S.SOURCE_URI]).relative_to(src)): x["reason"] for x in lines}
    assert {rel: r.split(":")[0] for rel, r in reasons.items()} == rejected
    assert all(len(r) > len(code) + 5 for r, code in zip(reasons.values(), rejected.values()))
    assert (tmp_path / "out" / "classes.txt").read_text().split() == ["juggling", "surfing"]
    for row in table.drop_columns([S.VIDEO]).to_pylist():
        assert row[S.LABEL] == (0 if "/juggling/" in row[S.SOURCE_URI] else 1)
        assert row[S.NUM_FRAMES] >= 10 and row[S.FPS] == pytest.approx(10) and row[S.SPLIT] in ("train", "val")
    # a folder names no split: ingest.val_fraction hash-assigns 'val' (one input at least, maybe a rejected one)
    splits = table.column(S.SPLIT).to_pylist()
    assert summary.splits == {s: splits.count(s) for s in set(splits)}
    text = summary.format()
    assert "accepted: 3" in text and "rejected: 6" in text and "truncated" in text


@pytest.mark.ray
def test_ingest_from_s3_and_stream_from_s3(ray_session, s3_server, tmp_path):
    import boto3

    from arvid_ray.data import clip_dataset

    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    s3.create_bucket(Bucket="vids")
    for i, cls in enumerate(["run", "run", "jump"]):
        path = make_video(tmp_path / f"{i}.mp4", "h264_mp4", seconds=1.7)  # 17 frames
        s3.upload_file(str(path), "vids", f"raw/{cls}/{i}.mp4")
    s3.put_object(Bucket="vids", Key="raw/jump/broken.mp4", Body=b"\x00\x00\x00\x18ftypmp42 garbage")
    cfg = _cfg(**{"storage.s3_endpoint": s3_server, "data.num_frames": 9, "data.resolution": 32,
                  "data.frame_stride": 2, "ingest.val_fraction": 0.0})  # all three stream as 'train'
    summary = ingest("s3://vids/raw", "s3://vids/out", cfg)
    assert (summary.accepted, summary.rejected) == (3, {"truncated": 1})
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="vids", Prefix="out/")["Contents"]}
    assert {"out/rejects.jsonl", "out/classes.txt", "out/summary.json"} <= keys
    assert any(k.startswith("out/videos.parquet/") and k.endswith(".parquet") for k in keys)
    rows = clip_dataset(cfg.replace(**{"data.source": "s3://vids/out/videos.parquet"}), "train",
                        train=False).take_all()
    assert len(rows) == 3
    assert sorted(r["label"] for r in rows) == [0, 1, 1]  # classes sorted: jump=0, run=1
    for r in rows:
        assert r["frames"].shape == (9, 32, 32, 3) and r["frames"].dtype == np.uint8 and r["clip_start"] == 0
        assert r["video_id"] in {video_id_of(f"s3://vids/raw/{c}/{i}.mp4") for i, c in enumerate(["run", "run", "jump"])}


@pytest.mark.ray
def test_reingest_replaces_the_dataset_and_drops_a_stale_classes_file(ray_session, tmp_path):
    labelled = tmp_path / "labelled" / "juggling"
    labelled.mkdir(parents=True)
    make_video(labelled / "a.mp4", "h264_mp4", seconds=1.2)
    out = tmp_path / "out"
    ingest(tmp_path / "labelled", out, _cfg())
    assert (out / "classes.txt").read_text().split() == ["juggling"]
    flat = tmp_path / "flat"
    flat.mkdir()
    make_video(flat / "b.mp4", "h264_mp4", seconds=1.2)
    summary = ingest(flat, out, _cfg())
    assert summary.accepted == 1 and summary.classes == []
    assert not (out / "classes.txt").exists()  # would name classes of the dataset that is gone
    table = pq.read_table(out / "videos.parquet")
    assert [Path(u).name for u in table.column(S.SOURCE_URI).to_pylist()] == ["b.mp4"]
    assert sorted(p.name for p in out.iterdir()) == ["rejects.jsonl", "summary.json", "videos.parquet"]
