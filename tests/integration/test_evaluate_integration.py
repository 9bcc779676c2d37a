"""evaluate: metrics on given videos, real-feature cache, reports, and `evaluate` of a debug checkpoint on
local Ray logging metrics and artifacts to a real MLflow server."""

from __future__ import annotations

import math

import pytest
from evaluate_shared import _cfg


@pytest.mark.ray
def test_evaluate_debug_checkpoint_on_ray_logs_to_mlflow(tmp_path, ray_session, mlflow_server):
    import mlflow

    from arvid_ray.cli import main
    from arvid_ray.model import build_model
    from arvid_ray.tokenizer import load_tokenizer
    from arvid_ray.train.checkpoint import save_checkpoint

    cfg = _cfg(tmp_path, **{"tracking.enabled": True, "tracking.uri": mlflow_server,
                            "tracking.system_metrics": False, "experiment.name": "eval-test"})
    tok = load_tokenizer(cfg.tokenizer)
    model = build_model(cfg.model, tok.vocab_size, cfg.latent_shape())
    ckpt = save_checkpoint(tmp_path / "run" / "step_0000003", cfg, step=3, data_position=0, model=model)
    # through the CLI: the checkpoint's config plus overrides; runs as a Ray task because Ray is up
    assert main(["evaluate", str(ckpt), "--out", str(tmp_path / "out"), "eval.num_videos=4",
                 "eval.shuffled_control=true"]) == 0
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("eval-test")
    (run,) = client.search_runs([exp.experiment_id])
    metrics = run.data.metrics
    for key in ("eval/fd_synthc3d", "eval/fd_floor", "eval/num_videos", "eval/warp_error", "eval/motion",
                "eval/drift_2x", "eval/traj_error", "eval/class_retention"):
        assert key in metrics and math.isfinite(metrics[key]), key
    assert metrics["eval/num_videos"] == 4
    for key in ("control/fd_synthc3d", "control/drift_2x", "control/traj_error_2x_seg1"):  # the broken control
        assert key in metrics and math.isfinite(metrics[key]), key
    assert run.data.tags["eval.extractor"].startswith("synthc3d-")
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
    arts |= {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"samples/sample_00.mp4", "samples/sample_grid.gif", "plots/drift.png"} <= arts
    assert (tmp_path / "out" / "metrics.json").is_file()
