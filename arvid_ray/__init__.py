"""arvid-ray: train autoregressive video models faster with Local Optimization + ReCo on Ray.

Importing this package has no side effects and imports neither Ray, MLflow nor Optuna.
"""

__version__ = "0.1.0"
