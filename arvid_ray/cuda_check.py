"""The image's CUDA contract, checked when a GPU node starts: ``python -m arvid_ray.cuda_check``.

cluster/Dockerfile installs a torch built for one CUDA major version (chosen on purpose: the PyTorch
cu128 index, CUDA 12.8); a GPU node whose NVIDIA driver is older than that build needs cannot run it,
and torch then says only that CUDA "is not available" once a trial is already billed. This check runs in
the GPU nodes' start commands (launcher ``worker_start_ray_commands``, KubeRay's GPU container
``postStart``) and fails the node with one line naming the build, the driver it needs and the driver
found. Exit 0 and one ``cuda ok`` line otherwise. No Ray, no MLflow: torch and ``nvidia-smi`` only.
"""

from __future__ import annotations

import subprocess
import sys

__all__ = ["MIN_DRIVER", "min_driver", "verdict", "driver_version", "main"]

# oldest Linux NVIDIA driver that runs a CUDA major version's builds (CUDA minor-version compatibility:
# 12.x needs >= 525.60.13, 13.x needs >= 580); NVIDIA's CUDA toolkit release notes, table 2/3
MIN_DRIVER: dict[int, tuple[int, ...]] = {11: (450, 80, 2), 12: (525, 60, 13), 13: (580, 65, 6)}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.strip().split(".") if p.isdigit())


def min_driver(cuda: str) -> tuple[int, ...]:
    """The oldest driver for a torch build's CUDA version (``torch.version.cuda``, e.g. '12.8')."""
    major = _version(cuda)[0]
    if major not in MIN_DRIVER:
        raise ValueError(f"no driver floor known for CUDA {cuda}; add it to arvid_ray.cuda_check.MIN_DRIVER")
    return MIN_DRIVER[major]


def driver_version() -> str | None:
    """The node's NVIDIA driver version from ``nvidia-smi``, or None when there is none."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    return lines[0] if lines else None


def verdict(torch_version: str, cuda: str | None, driver: str | None, gpus: int) -> tuple[bool, str]:
    """(usable, the one line to print) for a torch build, the node's driver and the GPUs torch sees."""
    build = f"torch {torch_version}"
    if not cuda:
        return False, f"arvid-ray: GPU node unusable: {build} is a CPU-only build; build the image from cluster/Dockerfile"
    need = ".".join(map(str, min_driver(cuda)))
    if driver is None:
        return False, (f"arvid-ray: GPU node unusable: no NVIDIA driver (nvidia-smi not found or failing); "
                       f"{build} (CUDA {cuda}) needs driver >= {need}")
    if _version(driver) < min_driver(cuda):
        return False, (f"arvid-ray: GPU node unusable: NVIDIA driver {driver} is older than {need}, which {build} "
                       f"(CUDA {cuda}) needs; boot an image with a newer driver or build for an older CUDA")
    if gpus < 1:
        return False, (f"arvid-ray: GPU node unusable: driver {driver} is fine for {build} (CUDA {cuda}) but torch "
                       f"sees no GPU (CUDA_VISIBLE_DEVICES, the container runtime's --gpus / device plugin)")
    return True, f"cuda ok: {build} (CUDA {cuda}), driver {driver} >= {need}, {gpus} GPU(s)"


def main() -> int:
    import torch

    gpus = torch.cuda.device_count() if torch.version.cuda else 0
    ok, line = verdict(torch.__version__, torch.version.cuda, driver_version(), gpus)
    print(line, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
