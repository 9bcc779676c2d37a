"""arvid_ray.storage (URIs → filesystems, string joins, the storage root) and arvid_ray.preflight.

S3 checks run against a real S3-compatible server (moto) on 127.0.0.1; the token-cache regression runs
the sweep's own input preparation with the storage root on that server.
"""

from __future__ import annotations

import pytest
from storage_shared import GPU8, HEAD

from arvid_ray import storage as st
from arvid_ray.config import ExperimentConfig
from arvid_ray.preflight import (
    NodeType,
    PreflightError,
    check_inputs,
    check_resources,
    driver_resources,
    max_concurrent_trials,
)


def test_joins_keep_uris_intact(tmp_path):
    assert st.join("s3://bucket/x", "tokens-a", "tokens.parquet") == "s3://bucket/x/tokens-a/tokens.parquet"
    assert st.join("s3://bucket/", "/a/") == "s3://bucket/a"
    assert st.parent("s3://bucket/x/videos.parquet") == "s3://bucket/x"
    assert st.parent("gs://bucket") == "gs://bucket"
    assert st.basename("s3://b/x/model.pt") == "model.pt"
    assert st.join(str(tmp_path), "a", "b") == str(tmp_path / "a" / "b")
    assert st.absolute("~/x").startswith("/") and st.absolute("file:///tmp/x") == "/tmp/x"
    assert st.is_remote("gs://b/x") and not st.is_remote("/tmp/x") and not st.is_remote("file:///tmp")


def test_resolve_schemes(monkeypatch):
    from pyarrow import fs

    filesystem, path = st.resolve("s3://bucket/a/b/")
    assert isinstance(filesystem, fs.S3FileSystem) and path == "bucket/a/b"
    filesystem, path = st.resolve("gs://bucket/a", ExperimentConfig().storage.__class__(gcs_anonymous=True))
    assert isinstance(filesystem, fs.GcsFileSystem) and path == "bucket/a"
    with pytest.raises(st.StorageError, match="names no bucket"):
        st.resolve("s3://")
    with pytest.raises(st.StorageError, match="unsupported location"):
        st.resolve("nosuchscheme://x/y")


def test_storage_root_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv(st.STORAGE_ENV, raising=False)
    cfg = ExperimentConfig.from_flat({"experiment.workdir": str(tmp_path)})
    assert st.storage_root(cfg) == str(tmp_path)
    monkeypatch.setenv(st.STORAGE_ENV, "s3://bucket/root/")
    assert st.storage_root(cfg) == "s3://bucket/root"
    assert st.storage_root(cfg.replace(**{"storage.root": "gs://other/x"})) == "gs://other/x"


def test_local_read_write_roundtrip(tmp_path):
    target = str(tmp_path / "a" / "b.txt")
    st.write_text(target, "hello")
    assert st.read_text(target) == "hello" and st.is_file(target) and st.is_dir(str(tmp_path / "a"))
    assert not st.exists(str(tmp_path / "nope"))


def test_preflight_local_paths_on_one_machine(tmp_path):
    cfg = ExperimentConfig.from_flat({"experiment.workdir": str(tmp_path), "data.source": str(tmp_path / "x")})
    with pytest.raises(PreflightError, match=r"data.source=.* does not exist"):
        check_inputs(cfg)
    (tmp_path / "x").mkdir()
    check_inputs(cfg)
    # a cluster with a shared-mount root: local paths must be under it
    with pytest.raises(PreflightError, match="shared storage root"):
        check_inputs(cfg.replace(**{"storage.root": str(tmp_path / "shared")}), cluster=True)


def test_preflight_refuses_an_mlflow_directory_store_naming_the_field_and_the_fix(tmp_path, monkeypatch):
    # MLflow 3 raises on a directory store only when the sweep opens its parent run: after the data prep
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = ExperimentConfig.from_flat({"experiment.workdir": str(tmp_path)})
    for uri in (f"file://{tmp_path}/mlruns", str(tmp_path / "mlruns")):
        with pytest.raises(PreflightError, match=rf"tracking.uri=.*directory store.*sqlite:///{tmp_path}/mlruns.db"):
            check_inputs(cfg.replace(**{"tracking.uri": uri}))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "./mlruns")
    with pytest.raises(PreflightError, match="MLFLOW_TRACKING_URI="):
        check_inputs(cfg)
    check_inputs(cfg.replace(**{"tracking.enabled": False}))  # nothing is logged: nothing to refuse
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow's own opt-out is honoured
    check_inputs(cfg)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    for uri in (None, f"sqlite:///{tmp_path}/m.db", "http://127.0.0.1:5000", "postgresql://u@127.0.0.1/db"):
        check_inputs(cfg.replace(**{"tracking.uri": uri}))


def test_resources_from_declared_node_types_not_current_nodes():
    cfg = ExperimentConfig.from_flat({"train.use_gpu": True, "train.num_workers": 8})
    check_resources(cfg, [HEAD, GPU8])  # no GPU node is up (scaled to zero), but the type can launch
    assert max_concurrent_trials(cfg, [HEAD, GPU8], 0.25) == 4  # 32 GPUs / 8 per trial, not 0 // 8 -> 1
    with pytest.raises(PreflightError, match="no node type of this cluster has a GPU"):
        check_resources(cfg, [HEAD])
    with pytest.raises(PreflightError, match="room for 32"):
        check_resources(cfg.replace(**{"train.num_workers": 33}), [HEAD, GPU8])
    with pytest.raises(PreflightError, match="accelerator_type='A100'"):
        check_resources(cfg.replace(**{"train.accelerator_type": "A100"}), [HEAD, GPU8])
    check_resources(cfg.replace(**{"train.accelerator_type": "H100"}), [HEAD, GPU8])


def test_trial_drivers_are_pinned_to_non_preemptible_nodes():
    cfg = ExperimentConfig()
    assert driver_resources(cfg, [HEAD, GPU8]) == {"arvid_driver": 0.001}
    assert driver_resources(cfg, [NodeType("h", {"CPU": 4.0}, 1), GPU8]) == {"node:__internal_head__": 0.001}
    assert driver_resources(cfg, [NodeType("local", {"CPU": 4.0}, 1, static=True)]) == {}
    assert driver_resources(cfg.replace(**{"sweep.driver_resource": ""}), [HEAD, GPU8]) == {}
    with pytest.raises(PreflightError, match="sweep.driver_resource='ondemand'"):
        driver_resources(cfg.replace(**{"sweep.driver_resource": "ondemand"}), [HEAD, GPU8])


def test_declared_node_types_from_autoscaling_yaml(tmp_path, monkeypatch):
    import yaml

    from arvid_ray.preflight import AUTOSCALING_CONFIG_ENV, _from_yaml

    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump({"max_workers": 3, "head_node_type": "head", "available_node_types": {
        "head": {"resources": {"CPU": 4}, "node_config": {}},
        "gpu": {"resources": {"CPU": 8, "GPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 2}}}))
    monkeypatch.setenv(AUTOSCALING_CONFIG_ENV, str(path))
    types = {t.name: t for t in _from_yaml(str(path))}
    assert types["head"].max_count == 1 and types["gpu"].max_count == 2 and types["gpu"].resources["GPU"] == 1.0


def test_one_accelerator_per_sweep_priced_from_the_table():
    """A cluster whose GPU types carry different accelerators: the sweep pins the cheapest one in
    cost.price_per_hour that hosts the trial (its hours priced by cost/usd), or the one asked for; it
    refuses when the types cannot be told apart."""
    from pathlib import Path

    from arvid_ray.preflight import _from_yaml, pin_accelerator

    cluster = Path(__file__).resolve().parents[2] / "cluster"
    aws, gcp = _from_yaml(str(cluster / "aws.yaml")), _from_yaml(str(cluster / "gcp.yaml"))
    cfg = ExperimentConfig.from_flat({"train.use_gpu": True, "train.num_workers": 8})
    pinned = pin_accelerator(cfg, aws)
    assert pinned.train.accelerator_type == "A10G" and pinned.cost.accelerator == "A10G"
    check_resources(pinned, aws)
    assert pin_accelerator(cfg.replace(**{"train.num_workers": 16}), aws).train.accelerator_type == "A100"
    assert pin_accelerator(cfg, gcp).train.accelerator_type == "L4"
    dearer = cfg.replace(**{"cost.price_per_hour": {"A10G": 9.0, "A100": 3.0, "H100": 4.5}})
    assert pin_accelerator(dearer, aws).train.accelerator_type == "A100"  # the table decides
    asked = pin_accelerator(cfg.replace(**{"train.accelerator_type": "H100"}), aws)
    assert asked.train.accelerator_type == "H100" and asked.cost.accelerator == "H100"
    assert pin_accelerator(cfg.replace(**{"train.use_gpu": False}), aws).train.accelerator_type is None
    unlabeled = [HEAD, NodeType("g1", {"CPU": 8.0, "GPU": 1.0}, 8), NodeType("g8", {"CPU": 96.0, "GPU": 8.0}, 2)]
    with pytest.raises(PreflightError, match="none declares its accelerator"):
        pin_accelerator(cfg, unlabeled)
    with pytest.raises(PreflightError, match="cost.price_per_hour"):
        pin_accelerator(cfg.replace(**{"cost.price_per_hour": {"cpu": 0.05}}), aws)
    single = [HEAD, NodeType("gpu", {"CPU": 8.0, "GPU": 1.0}, 8)]
    assert pin_accelerator(cfg, single).train.accelerator_type is None  # nothing to mix
