"""arvid_ray.storage (URIs → filesystems, string joins, the storage root) and arvid_ray.preflight.

S3 checks run against a real S3-compatible server (moto) on 127.0.0.1; the token-cache regression runs
the sweep's own input preparation with the storage root on that server.
"""

from __future__ import annotations

import pytest

from arvid_ray import storage as st
from arvid_ray.config import ExperimentConfig
from arvid_ray.preflight import (
    PreflightError,
    check_inputs,
)


def test_s3_roundtrip_upload_and_local_copy(s3_server, tmp_path):
    import boto3

    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket="roundtrip")
    storage = ExperimentConfig().storage.__class__(s3_endpoint=s3_server)
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "w.pt").write_bytes(b"weights")
    st.upload_dir(str(tmp_path / "d"), "s3://roundtrip/up", storage)
    assert st.is_file("s3://roundtrip/up/sub/w.pt", storage)
    assert st.read_bytes("s3://roundtrip/up/sub/w.pt", storage) == b"weights"
    local = st.local_copy("s3://roundtrip/up/sub/w.pt", storage)
    assert open(local, "rb").read() == b"weights" and local == st.local_copy("s3://roundtrip/up/sub/w.pt", storage)


def test_s3_filesystem_carries_no_keys_into_what_is_pickled(s3_server, monkeypatch):
    """Tune pickles the storage filesystem into tuner.pkl under the storage root: a filesystem built with
    explicit keys would write the secret there in clear text. Arrow reads the environment itself."""
    import pickle

    import boto3

    secret = "Sup3rSecretKeyThatMustNeverBeWritten0000"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAARVIDTESTKEY0001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "arvid-session-token-0001")
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket="nokeys")
    storage = ExperimentConfig().storage.__class__(s3_endpoint=s3_server)
    filesystem, path = st.resolve("s3://nokeys/root", storage)
    blob = pickle.dumps(filesystem)
    for value in (secret, "AKIAARVIDTESTKEY0001", "arvid-session-token-0001"):
        assert value.encode() not in blob
    st.write_text("s3://nokeys/root/x.txt", "ok", storage)  # and it still authenticates, from the environment
    assert pickle.loads(blob).open_input_stream("nokeys/root/x.txt").read() == b"ok"


def test_s3_region_is_asked_of_the_bucket_when_none_is_configured(s3_server, monkeypatch):
    """The bucket made in us-west-2 (as cluster/README.md does), no region in the environment: the
    filesystem uses us-west-2 (Arrow does not follow S3's region redirect), looked up once per bucket."""
    import boto3

    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    boto3.client("s3", endpoint_url=s3_server, region_name="us-west-2").create_bucket(
        Bucket="west-bucket", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    boto3.client("s3", endpoint_url=s3_server, region_name="eu-central-1").create_bucket(
        Bucket="central-bucket", CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    monkeypatch.setattr(st, "_REGIONS", {})
    storage = ExperimentConfig().storage.__class__(s3_endpoint=s3_server)
    assert st.resolve("s3://west-bucket/root", storage)[0].region == "us-west-2"
    assert st.resolve("s3://central-bucket/x", storage)[0].region == "eu-central-1"  # per bucket
    assert st._REGIONS == {(s3_server, "west-bucket"): "us-west-2", (s3_server, "central-bucket"): "eu-central-1"}
    calls = []
    monkeypatch.setattr(st, "_region_from_head", lambda *a: calls.append(a))
    assert st.resolve("s3://west-bucket/other", storage)[0].region == "us-west-2" and not calls  # cached
    # GetBucketLocation answers when the header does not (the S3 API, default credential chain)
    monkeypatch.setattr(st, "_REGIONS", {})
    assert st.resolve("s3://west-bucket/root", storage)[0].region == "us-west-2" and calls
    # a configured region wins over the lookup
    assert st.resolve("s3://west-bucket/root", storage.__class__(s3_endpoint=s3_server,
                                                                  s3_region="ap-south-1"))[0].region == "ap-south-1"
    monkeypatch.setenv("AWS_REGION", "sa-east-1")
    assert st.resolve("s3://west-bucket/root", storage)[0].region == "sa-east-1"


# ------------------------------------------------------------------------------------ pre-flight
def test_preflight_refuses_driver_local_inputs_with_a_remote_root(s3_server, tmp_path):
    import boto3

    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket="preflight")
    (tmp_path / "tok.pt").write_bytes(b"x")
    cfg = ExperimentConfig.from_flat({"storage.root": "s3://preflight/root", "storage.s3_endpoint": s3_server,
                                      "tokenizer.name": str(tmp_path / "tok.pt")})
    with pytest.raises(PreflightError, match=r"tokenizer.name=.*driver's disk.*storage.root='s3://preflight/root'"):
        check_inputs(cfg)
    check_inputs(cfg.replace(**{"tokenizer.name": "builtin"}))  # package data is fine
    with pytest.raises(PreflightError, match=r"data.source='s3://preflight/missing' does not exist"):
        check_inputs(cfg.replace(**{"tokenizer.name": "builtin", "data.source": "s3://preflight/missing"}))
    with pytest.raises(PreflightError, match=r"bucket 'nobucket' does not exist"):
        check_inputs(cfg.replace(**{"tokenizer.name": "builtin", "storage.root": "s3://nobucket/x"}))
    with pytest.raises(PreflightError, match="eval.i3d_path"):
        check_inputs(cfg.replace(**{"tokenizer.name": "builtin", "eval.extractor": "i3d"}))


# ------------------------------------------------------------------------------------ regression
@pytest.mark.ray
def test_token_cache_lands_under_an_s3_root(ray_session, s3_server, tmp_path, monkeypatch):
    """The sweep's input preparation with an s3:// root: videos and token cache are written to the bucket
    (it used to build the cache path with pathlib: 's3:/bucket/…', a local folder named 's3:')."""
    import boto3

    from arvid_ray.sweep import prepare_inputs

    monkeypatch.chdir(tmp_path)
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    s3.create_bucket(Bucket="arvid")
    cfg = ExperimentConfig.from_flat({
        "storage.root": "s3://arvid/rf", "storage.s3_endpoint": s3_server, "experiment.workdir": str(tmp_path),
        "synth.num_videos": 12, "synth.num_frames": 9, "data.num_frames": 5, "data.resolution": 32,
        "synth.resolution": 32, "data.cache_clip_hop": 0})
    out = prepare_inputs(cfg)
    assert out.data.source.startswith("s3://arvid/rf/synthetic/") and out.data.source.endswith("videos.parquet")
    assert out.data.tokens_path.startswith("s3://arvid/rf/synthetic/") and "s3:/" not in out.data.tokens_path[5:]
    assert st.is_file(out.data.tokens_path, out.storage)
    assert not (tmp_path / "s3:").exists() and not list(tmp_path.glob("**/*.parquet"))
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="arvid", Prefix="rf/")["Contents"]}
    assert any(k.endswith("/_COMPLETE") for k in keys) and any("/raw/" in k and k.endswith(".mp4") for k in keys)
    assert prepare_inputs(cfg).data.tokens_path == out.data.tokens_path  # cached: found, not rebuilt
