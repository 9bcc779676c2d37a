"""Ingest: every input ends accepted or rejected (with its reason); manifests; segments; S3 in and out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from ingest_shared import _cfg
from video_fixtures import make_video

from arvid_ray import schemas as S
from arvid_ray.ingest import _Input, ingest, list_inputs, process_input, video_id_of
from arvid_ray.video.decode import decode_clip


def test_manifest_csv_and_jsonl(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "m.csv").write_text("path,label,caption,split\nclips/a.mp4,dog,a dog,train\n"
                                    "/abs/b.mp4,cat,,val\nclips/c.mp4,,,\n")
    inputs, classes = list_inputs(str(tmp_path / "m.csv"), _cfg(**{"ingest.default_split": "test"}))
    assert classes == ["cat", "dog"]
    assert [(i.uri, i.label, i.caption, i.split) for i in inputs] == [
        (str(tmp_path / "clips/a.mp4"), 1, "a dog", "train"), ("/abs/b.mp4", 0, "", "val"),
        (str(tmp_path / "clips/c.mp4"), S.NO_LABEL, "", "test")]
    (tmp_path / "m.jsonl").write_text(json.dumps({"path": "x.mp4", "label": 3}) + "\n")
    inputs, classes = list_inputs(str(tmp_path / "m.jsonl"), _cfg())
    assert classes == [] and inputs[0].label == 3 and inputs[0].split == "train"
    (tmp_path / "bad.csv").write_text("file,label\nx.mp4,1\n")
    with pytest.raises(ValueError, match="no 'path'"):
        list_inputs(str(tmp_path / "bad.csv"), _cfg())
    with pytest.raises(FileNotFoundError, match="neither a directory"):
        list_inputs(str(tmp_path / "nope"), _cfg())


def test_hash_split_assignment_is_stable(tmp_path):
    for i in range(200):
        (tmp_path / f"v{i}.mp4").write_bytes(b"")
    cfg = _cfg(**{"ingest.val_fraction": 0.25})
    first = [i.split for i in list_inputs(str(tmp_path), cfg)[0]]
    assert first == [i.split for i in list_inputs(str(tmp_path), cfg)[0]]
    assert 0.15 < first.count("val") / 200 < 0.35 and set(first) == {"train", "val"}


def test_hash_split_follows_the_dataset_when_it_moves(tmp_path):
    # the hash reads the path relative to the folder / manifest: a copy elsewhere keeps every video's split
    names = [f"c{i % 3}/v{i}.mp4" for i in range(60)]
    for root in ("a", "deeper/b"):
        for n in names:
            (tmp_path / root / n).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / root / n).write_bytes(b"")
        (tmp_path / root / "m.csv").write_text("path\n" + "\n".join(names) + "\n")
    cfg = _cfg(**{"ingest.val_fraction": 0.25})
    tree = [[i.split for i in list_inputs(str(tmp_path / r), cfg)[0]] for r in ("a", "deeper/b")]
    csv_ = [[i.split for i in list_inputs(str(tmp_path / r / "m.csv"), cfg)[0]] for r in ("a", "deeper/b")]
    assert tree[0] == tree[1] and csv_[0] == csv_[1] and "val" in tree[0] and "train" in tree[0]
    by_name = dict(zip(sorted(names), tree[0]))  # the tree lists files sorted; the manifest in its own order
    assert csv_[0] == [by_name[n] for n in names]  # folder and manifest agree on each video


def test_long_video_is_cut_into_even_segments(tmp_path):
    path = make_video(tmp_path / "long.mp4", "h264_mp4", seconds=2.5)  # 25 frames
    cfg = _cfg(**{"ingest.max_segment_frames": 12, "ingest.min_frames": 4})
    rows, rejected = process_input(_Input(str(path), 2, "cap", "train"), cfg)
    assert rejected is None
    assert [(r[S.SEGMENT_START], r[S.NUM_FRAMES]) for r in rows] == [(0, 8), (8, 9), (17, 8)]
    original = decode_clip(path)
    for r in rows:
        seg = decode_clip(r[S.VIDEO])
        assert seg.shape[0] == r[S.NUM_FRAMES]
        ref = original[r[S.SEGMENT_START]:r[S.SEGMENT_START] + r[S.NUM_FRAMES]]
        assert np.abs(seg.astype(int) - ref).mean() < 6  # re-encoded (yuv420p, CRF 17) from a lossy source
        assert r[S.VIDEO_ID] == video_id_of(str(path)) and r[S.LABEL] == 2
    short, _ = process_input(_Input(str(path), 0), _cfg())
    assert len(short) == 1 and short[0][S.VIDEO] == path.read_bytes()  # untouched bytes


# ---- newcomer traps (issue 25) ------------------------------------------------------------------------
def test_a_readme_never_takes_the_small_folders_val_slot(tmp_path):
    from arvid_ray.ingest import _split_hash

    readme = _split_hash(_Input("", split_key="README.txt"))
    names = [n for n in (f"v{i}.mp4" for i in range(100)) if _split_hash(_Input("", split_key=n)) > readme][:2]
    for name in ["README.txt", *names]:
        (tmp_path / name).write_bytes(b"")
    # a fraction so small that no hash falls under it: the guaranteed val input is chosen, by smallest hash
    inputs, _ = list_inputs(str(tmp_path), _cfg(**{"ingest.val_fraction": 1e-9}))
    split = {Path(i.uri).name: i.split for i in inputs}
    assert split["README.txt"] == "train"  # it has the smallest hash, but it is no video
    assert sorted(split[n] for n in names) == ["train", "val"]


def test_no_val_hint_does_not_ask_for_a_value_already_set():
    from arvid_ray.ingest import IngestSummary

    text = IngestSummary(out="o", inputs=2, accepted=1, rows=1, splits={"train": 1}, val_fraction=0.1).format()
    assert "no 'val' split" in text and "set ingest.val_fraction > 0" not in text
    text = IngestSummary(out="o", inputs=2, accepted=1, rows=1, splits={"train": 1}, val_fraction=0.0).format()
    assert "set ingest.val_fraction > 0" in text


def test_an_interrupted_reingest_leaves_the_previous_dataset(tmp_path, monkeypatch):
    import arvid_ray.ingest.driver as ingest_mod

    out = tmp_path / "out"
    (out / "videos.parquet").mkdir(parents=True)
    pq.write_table(S.VIDEOS_SCHEMA.empty_table(), out / "videos.parquet" / "old.parquet")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.mp4").write_bytes(b"")

    def interrupted(inputs, videos_path, *args, **kwargs):
        assert not videos_path.endswith("/videos.parquet")  # the new dataset is written beside the old
        raise KeyboardInterrupt

    monkeypatch.setattr(ingest_mod, "_run_stage", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ingest(tmp_path / "src", out, _cfg())
    assert sorted(p.name for p in out.iterdir()) == ["videos.parquet"]
    assert [p.name for p in (out / "videos.parquet").iterdir()] == ["old.parquet"]
