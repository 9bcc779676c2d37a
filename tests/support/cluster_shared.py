"""What test_cluster.py and test_cluster_integration.py share (moved here from both when the tests were split)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


CLUSTER = ROOT / "cluster"


CRDS = Path(__file__).resolve().parents[1] / "data" / "crds"


LAUNCHERS = ["aws.yaml", "gcp.yaml"]


KUBERAY = {"raycluster.yaml": "ray.io_rayclusters.yaml", "rayjob.yaml": "ray.io_rayjobs.yaml"}


ENTRY = "experiments/tune_window.py"


IMAGE_ROOT = "/home/ray/arvid-ray/"  # where cluster/Dockerfile puts the repository


K8S_METADATA = {"name", "namespace", "labels", "annotations", "generateName"}


def _load(path: Path):
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _commands(cfg: dict, key: str) -> str:
    return "\n".join(cfg.get(key, []))


# --------------------------------------------------------------- the documented commands, dry run
DATASET_CONFIGS = ["ucf101", "taichi", "sky_timelapse", "ffs", "t2v_captions", "paper_B"]
