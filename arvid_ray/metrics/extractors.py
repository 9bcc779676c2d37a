"""Video feature extractors for Fréchet distances: the standard TorchScript I3D, and the built-in SynthC3D.

Design trade-off: FVD is only meaningful with the exact I3D network everyone uses, and that network's
weights cannot ship with this package (size, licence) nor be downloaded at run time. So the I3D path
loads a TorchScript file the user supplies and refuses anything else with a message that says what to
provide; numbers from it are the only ones logged as ``eval/fvd``. For CPU-only runs on the built-in
synthetic dataset a small 3D CNN (SynthC3D), trained by ``experiments/train_synthc3d.py`` on motion-
dependent labels, gives ``eval/fd_synthc3d``: cheap and sensitive to temporal damage, but only valid on
that dataset — it is never relabelled as FVD. Every extractor carries an id and its weights' sha256 so
cached real-data statistics can never be mixed across extractors.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

__all__ = [
    "InputSpec",
    "FeatureExtractor",
    "I3DExtractor",
    "SynthC3D",
    "SynthC3DExtractor",
    "load_extractor",
    "synthc3d_weights_path",
    "file_sha256",
    "prepare_clips",
    "I3D_HELP",
]

log = logging.getLogger(__name__)

I3D_HELP = (
    "provide the standard Kinetics-400 I3D as TorchScript ('i3d_torchscript.pt', the file used by "
    "StyleGAN-V and universome/fvd-comparison, published at "
    "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt) by local path in eval.i3d_path or the "
    "ARVID_I3D_PATH environment variable; arvid-ray never downloads it. Without it use "
    "eval.extractor=synthc3d (reported as eval/fd_synthc3d, not FVD)"
)
ASSETS = Path(__file__).resolve().parent.parent / "assets"


@dataclass(frozen=True)
class InputSpec:
    """What an extractor expects: frames per clip, square size, and the value range of its input."""

    num_frames: int
    size: int
    value_range: tuple[float, float]


@runtime_checkable
class FeatureExtractor(Protocol):
    id: str
    sha256: str
    spec: InputSpec
    dim: int

    def __call__(self, videos: np.ndarray | torch.Tensor) -> np.ndarray:
        """uint8 videos (B, T, H, W, 3) → float64 features (B, dim)."""
        ...


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def prepare_clips(videos: np.ndarray | torch.Tensor, spec: InputSpec, device: torch.device) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) → float (B, 3, spec.num_frames, size, size) in spec.value_range."""
    x = torch.as_tensor(np.asarray(videos) if not isinstance(videos, torch.Tensor) else videos)
    if x.ndim != 5 or x.shape[-1] != 3:
        raise ValueError(f"videos must be uint8 (B, T, H, W, 3); got shape {tuple(x.shape)}")
    if x.shape[1] < spec.num_frames:
        raise ValueError(f"this extractor needs clips of at least {spec.num_frames} frames; got {x.shape[1]} "
                         f"(generate longer videos or use a different extractor)")
    x = x[:, : spec.num_frames].to(device)  # (B, T, H, W, 3): the first spec.num_frames frames
    b, t, h, w, _ = x.shape
    x = x.permute(0, 1, 4, 2, 3).reshape(b * t, 3, h, w).float()  # (B*T, 3, H, W)
    if (h, w) != (spec.size, spec.size):  # box filter when shrinking (cheap, alias-free), bilinear when growing
        mode = "area" if min(h, w) > spec.size else "bilinear"
        x = nn.functional.interpolate(x, size=(spec.size, spec.size), mode=mode,
                                      align_corners=None if mode == "area" else False)
    lo, hi = spec.value_range
    x = x / 255.0 * (hi - lo) + lo
    return x.reshape(b, t, 3, spec.size, spec.size).permute(0, 2, 1, 3, 4).contiguous()  # (B, 3, T, S, S)


class I3DExtractor:
    """The TorchScript I3D: input (B, 3, T>=16, 224, 224) in [-1, 1]; 400-d pre-softmax features."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", batch_size: int = 16):
        from arvid_ray import storage as st

        path = Path(st.local_copy(str(path))) if st.is_remote(str(path)) else Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"I3D TorchScript not found at '{path}': {I3D_HELP}")
        try:
            self.module = torch.jit.load(str(path), map_location=device).eval()
        except Exception as exc:  # torch raises RuntimeError/ValueError variants for non-TorchScript files
            raise ValueError(f"'{path}' is not a TorchScript file ({type(exc).__name__}): {I3D_HELP}") from exc
        self.sha256 = file_sha256(path)
        self.id = f"i3d-{self.sha256[:12]}"
        self.spec = InputSpec(num_frames=16, size=224, value_range=(-1.0, 1.0))
        self.device = torch.device(device)
        self.batch_size = batch_size
        probe = self._forward(torch.zeros(1, 3, self.spec.num_frames, 224, 224, device=self.device))
        if probe.ndim != 2:
            raise ValueError(f"'{path}' returned features of shape {tuple(probe.shape)}, expected (B, D): {I3D_HELP}")
        self.dim = int(probe.shape[1])

    @torch.no_grad()
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            return self.module(x, rescale=False, resize=False, return_features=True)
        except RuntimeError as exc:
            raise ValueError(f"the TorchScript module does not take the I3D call signature "
                             f"(videos, rescale=, resize=, return_features=): {exc}. {I3D_HELP}") from exc

    def __call__(self, videos: np.ndarray | torch.Tensor) -> np.ndarray:
        out = []
        for i in range(0, len(videos), self.batch_size):
            x = prepare_clips(videos[i:i + self.batch_size], self.spec, self.device)
            out.append(self._forward(x).double().cpu().numpy())
        return np.concatenate(out)


class SynthC3D(nn.Module):
    """Small 3D CNN: (B, 3, T, S, S) in [0, 1] → 128-d feature, class and temporal-integrity heads."""

    def __init__(self, num_classes: int = 16, num_integrity: int = 4, width: int = 16, dim: int = 128,
                 stem: int = 0):
        super().__init__()

        def block(cin: int, cout: int, stride: tuple[int, int, int], k=(3, 3, 3)) -> nn.Sequential:
            pad = tuple(x // 2 for x in k)
            return nn.Sequential(nn.Conv3d(cin, cout, k, stride=stride, padding=pad, bias=False),
                                 nn.GroupNorm(min(4, cout), cout), nn.SiLU())

        w = width
        # stem > 0: a cheap per-frame 3x3 conv at full resolution first — shape (square vs circle) lives
        # in a few edge pixels that a stride-2 first layer blurs away
        first = [block(3, stem, (1, 1, 1), k=(1, 3, 3)), block(stem, w, (1, 2, 2))] if stem else [
            block(3, w, (1, 2, 2))]
        self.body = nn.Sequential(
            *first, block(w, 2 * w, (1, 2, 2)), block(2 * w, 2 * w, (1, 1, 1)),
            block(2 * w, 4 * w, (2, 2, 2)), block(4 * w, 4 * w, (1, 1, 1)), block(4 * w, dim, (2, 2, 2)),
        )
        self.class_head = nn.Linear(dim, num_classes)
        self.integrity_head = nn.Linear(dim, num_integrity)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3, 4))  # (B, dim, t, h, w) → (B, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.features(x)
        return feats, self.class_head(feats), self.integrity_head(feats)


FEATURES_VERSION = "f2"  # f2: embedding ++ native-resolution detail energies (f1, the embedding alone, was blind to blur)
DETAIL_LEVELS = 3
DETAIL_SCALE = 0.5  # log-energies vary ~±1 across the dataset's random colours/sizes; halved, they raise
# the real-vs-real floor at N=48 from 1.2 to 4.1 (unscaled: 9.4) while blur/noise score 15 (3.7x the floor)


def detail_energies(videos: torch.Tensor, levels: int = DETAIL_LEVELS) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) at native resolution → (B, 3 * levels) log high-pass energies.

    Per colour channel and octave: the mean squared difference between the frame and its 3x3 box
    mean, then a 2x box downsample for the next octave. Blur lowers these energies, noise and
    blocking artefacts raise them; the SynthC3D embedding (trained on shape x direction, at 32 px)
    is blind to both, so Fréchet features carry these 9 numbers beside it.
    """
    b, t, h, w, _ = videos.shape
    x = videos.permute(0, 1, 4, 2, 3).reshape(b * t, 3, h, w).float() / 255.0
    out = []
    for level in range(levels):
        local = nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        out.append((x - local).pow(2).reshape(b, t, 3, -1).mean(dim=(1, 3)))  # (B, 3)
        if level + 1 < levels and min(x.shape[-2:]) >= 4:
            x = nn.functional.avg_pool2d(x, 2)
    return DETAIL_SCALE * torch.cat(out, dim=1).clamp_min(1e-8).log()


def synthc3d_weights_path() -> Path:
    return ASSETS / "synthc3d.pt"


class SynthC3DExtractor:
    """The built-in SynthC3D with its shipped, sha-pinned weights; valid on the synthetic dataset only."""

    def __init__(self, path: str | Path | None = None, device: str | torch.device = "cpu", batch_size: int = 32):
        path = Path(path) if path else synthc3d_weights_path()
        if not path.is_file():
            raise FileNotFoundError(f"SynthC3D weights not found at '{path}'; produce them with "
                                    f"`python experiments/train_synthc3d.py` (or reinstall arvid-ray)")
        self.sha256 = file_sha256(path)
        meta_path = path.with_suffix(".json")
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        if meta.get("sha256") and meta["sha256"] != self.sha256:
            raise ValueError(f"SynthC3D weights '{path}' have sha256 {self.sha256[:12]}… but {meta_path.name} "
                             f"pins {meta['sha256'][:12]}…; re-run experiments/train_synthc3d.py")
        payload = torch.load(path, map_location="cpu", weights_only=True)
        arch = payload["arch"]
        self.model = SynthC3D(**arch).eval()
        self.model.load_state_dict({k: v.float() for k, v in payload["state_dict"].items()})
        self.device = torch.device(device)
        self.model.to(self.device)
        self.spec = InputSpec(num_frames=int(payload["num_frames"]), size=int(payload["size"]), value_range=(0.0, 1.0))
        self.dim = int(arch.get("dim", 128)) + 3 * DETAIL_LEVELS  # embedding ++ detail energies
        self.id = f"synthc3d-{self.sha256[:12]}-{FEATURES_VERSION}"
        self.batch_size = batch_size
        self.meta = meta

    @torch.no_grad()
    def outputs(self, videos: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features (B, dim), class logits (B, C) and integrity logits (B, K) as float64 numpy arrays.

        Features = the 128-d embedding ++ ``detail_energies`` of the native-resolution frames."""
        parts: list[tuple[torch.Tensor, ...]] = []
        for i in range(0, len(videos), self.batch_size):
            chunk = videos[i:i + self.batch_size]  # uint8 (B, T, H, W, 3)
            chunk = chunk if isinstance(chunk, torch.Tensor) else torch.as_tensor(np.asarray(chunk))
            feats, class_logits, integrity_logits = self.model(prepare_clips(chunk, self.spec, self.device))
            native = chunk[:, : self.spec.num_frames].to(self.device)
            feats = torch.cat([feats, detail_energies(native)], dim=1)
            parts.append(tuple(o.double().cpu() for o in (feats, class_logits, integrity_logits)))
        return tuple(torch.cat([p[k] for p in parts]).numpy() for k in range(3))  # type: ignore[return-value]

    def __call__(self, videos: np.ndarray | torch.Tensor) -> np.ndarray:
        return self.outputs(videos)[0]

    def predict_class(self, videos: np.ndarray | torch.Tensor) -> np.ndarray:
        return self.outputs(videos)[1].argmax(-1)


def load_extractor(name: str, path: str | Path | None = None, device: str | torch.device = "cpu"):
    """'i3d' (path or ARVID_I3D_PATH required), 'synthc3d' (shipped weights, or ``path``), or a .pt path."""
    if name == "i3d":
        path = path or os.environ.get("ARVID_I3D_PATH")
        if not path:
            raise FileNotFoundError(f"eval.extractor=i3d but no I3D path is set: {I3D_HELP}")
        return I3DExtractor(path, device=device)
    if name == "synthc3d":
        return SynthC3DExtractor(path, device=device)
    if Path(name).suffix in (".pt", ".pth", ".jit") and Path(name).exists():
        return I3DExtractor(name, device=device)
    raise ValueError(f"unknown feature extractor '{name}': use 'synthc3d', 'i3d' (with eval.i3d_path or "
                     f"ARVID_I3D_PATH) or a path to a TorchScript I3D file")
