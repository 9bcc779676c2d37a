"""Evaluation: checkpoint → N sampled videos → Fréchet distance, consistency, drift → run artifacts.

One home per job: ``reference`` (real clips and their cached features), ``rollouts`` (sampling, the
metrics of generated videos, long-horizon drift, the shuffled control) and ``run`` (evaluate a model or
a checkpoint into files and an MLflow run; the end-of-training hook). The names below are the package's
face; import them from ``arvid_ray.evaluate``.
"""

from arvid_ray.evaluate.reference import RealClips, real_clips, real_features
from arvid_ray.evaluate.rollouts import evaluate_videos, metric_names, reconstruction_fd, segment_starts
from arvid_ray.evaluate.run import evaluate_checkpoint, evaluate_model, final_eval

__all__ = ["RealClips", "real_clips", "real_features", "evaluate_videos", "evaluate_model",
           "evaluate_checkpoint", "metric_names", "segment_starts", "reconstruction_fd", "final_eval"]
