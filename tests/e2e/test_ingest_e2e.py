"""Ingest: every input ends accepted or rejected (with its reason); manifests; segments; S3 in and out."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from video_fixtures import make_video

from arvid_ray import schemas as S


@pytest.mark.ray
def test_cli_ingest_of_nothing_usable_exits_1_keeps_the_old_dataset_and_prints_once(
        ray_session, tmp_path, capsys, caplog):
    from arvid_ray.cli import main

    good = tmp_path / "good"
    good.mkdir()
    make_video(good / "a.mp4", "h264_mp4", seconds=1.2)
    out = tmp_path / "out"
    assert main(["ingest", str(good), str(out), "data.decode_cpus=0.5"]) == 0
    first = capsys.readouterr().out
    assert first.count("ingested 1 inputs") == 1 and "ingested 1 inputs" not in caplog.text  # printed once
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "README.txt").write_text("these are my videos\n")
    (bad / "empty.mp4").write_bytes(b"")
    assert main(["ingest", str(bad), str(out), "data.decode_cpus=0.5"]) == 1
    err = capsys.readouterr().err
    assert "none of the 2 inputs is a usable video" in err
    table = pq.read_table(out / "videos.parquet")
    assert [Path(u).name for u in table.column(S.SOURCE_URI).to_pylist()] == ["a.mp4"]
