"""Decode encoded video bytes into a uint8 [T, H, W, 3] clip: frame window, stride, resize + crop.

Design trade-off: clips are decoded sequentially from the start of the (short) stored segment and
decoding stops as soon as the window is complete, instead of seeking. Ingest keeps segments to at
most a few hundred frames, so a sequential decode costs little and is exact for every codec
(seeking lands on keyframes and needs per-container timestamp arithmetic). Colour conversion and
resizing happen in one libswscale call per frame (PyAV ``reformat``), like the ffmpeg CLI, and
rotation metadata is applied the way the ffmpeg CLI's autorotate does, so frames match its output.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Union

import numpy as np

from arvid_ray import schemas as S

__all__ = ["decode_clip", "iter_frames", "frame_to_rgb", "open_container", "frame_rotation", "resize_crop_shape",
           "VideoSource", "decode_batch"]

log = logging.getLogger(__name__)

VideoSource = Union[bytes, bytearray, memoryview, str, Path, BinaryIO]


def open_container(data: VideoSource):
    """Open ``data`` (bytes, a local path or a binary file object) with PyAV for reading."""
    import av

    if isinstance(data, (bytes, bytearray, memoryview)):
        data = io.BytesIO(bytes(data))
    elif isinstance(data, Path):
        data = str(data)
    return av.open(data, mode="r", metadata_errors="ignore")


def frame_rotation(frame) -> int:
    """Display rotation of a decoded frame: counter-clockwise degrees (0, 90, 180, 270) to display it.

    PyAV reads it from the display matrix side data; the ffmpeg CLI's autorotate applies the same
    turn (tests compare against the CLI on videos with rotation metadata).
    """
    angle = getattr(frame, "rotation", 0) or 0
    return int(round(angle / 90.0)) % 4 * 90


def _apply_rotation(img: np.ndarray, ccw: int) -> np.ndarray:
    """Rotate an [H, W, 3] image counter-clockwise by 0/90/180/270 degrees."""
    if ccw == 0:
        return img
    return np.ascontiguousarray(np.rot90(img, k=ccw // 90, axes=(0, 1)))


def resize_crop_shape(height: int, width: int, size: int | tuple[int, int]) -> tuple[int, int, int, int]:
    """For a frame (height, width) → (resized_h, resized_w, out_h, out_w) for a cover-resize + center crop.

    An ``int`` size gives a square ``size x size`` output (shorter side resized to ``size``); a
    ``(h, w)`` tuple resizes so the frame covers (h, w) and crops the centre.
    """
    out_h, out_w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if out_h < 1 or out_w < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    scale = max(out_h / height, out_w / width)
    new_h = max(out_h, int(round(height * scale)))
    new_w = max(out_w, int(round(width * scale)))
    return new_h, new_w, out_h, out_w


def frame_to_rgb(frame, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """One decoded av.VideoFrame → uint8 [H, W, 3], rotated, resized (area filter) and centre-cropped."""
    rot = frame_rotation(frame)
    if size is None:
        # BICUBIC: the ffmpeg CLI default. threads=1 here and below: PyAV >= 17 defaults to 0 (auto),
        # which starts a swscale thread pool for every frame
        return _apply_rotation(frame.to_ndarray(format="rgb24", interpolation="BICUBIC", threads=1), rot)
    disp_h, disp_w = (frame.width, frame.height) if rot in (90, 270) else (frame.height, frame.width)
    new_h, new_w, out_h, out_w = resize_crop_shape(disp_h, disp_w, size)
    src_w, src_h = (new_h, new_w) if rot in (90, 270) else (new_w, new_h)  # resize before rotating
    img = frame.to_ndarray(format="rgb24", width=src_w, height=src_h, interpolation="AREA", threads=1)
    img = _apply_rotation(img, rot)  # (new_h, new_w, 3)
    y0, x0 = (new_h - out_h) // 2, (new_w - out_w) // 2
    return np.ascontiguousarray(img[y0:y0 + out_h, x0:x0 + out_w])


def iter_frames(data: VideoSource, threads: int | None = None) -> Iterator:
    """Yield every decodable av.VideoFrame of the first video stream, in presentation order.

    ``threads``: None lets ffmpeg pick (frame + slice threads, good for one big video); an int pins
    the decoder's thread count — Ray decode tasks pass their CPU share so K tasks on K cores do not
    oversubscribe them (for small clips one thread is also the fastest: no thread-pool start-up).
    """
    with open_container(data) as container:
        if not container.streams.video:
            raise ValueError("the input has no video stream")
        stream = container.streams.video[0]
        if threads is None:
            stream.thread_type = "AUTO"
        else:
            stream.thread_count = max(1, int(threads))
            if threads > 1:
                stream.thread_type = "AUTO"
        yield from container.decode(stream)


def decode_clip(data: VideoSource, start: int = 0, num_frames: int | None = None, stride: int = 1,
                size: int | tuple[int, int] | None = None, threads: int | None = None,
                out: np.ndarray | None = None) -> np.ndarray:
    """Decode frames ``start, start+stride, ...`` (``num_frames`` of them, None = to the end).

    Returns uint8 [T, H, W, 3] RGB. ``size``: None keeps the decoded size (rotation applied); an int
    resizes the shorter side and centre-crops a square; ``(h, w)`` cover-resizes and centre-crops.
    ``out``: a uint8 [num_frames, H, W, 3] array to decode into (saves a copy; returned).
    Raises ``ValueError`` naming the request if the video has fewer frames than the window needs.
    """
    if start < 0 or stride < 1 or (num_frames is not None and num_frames < 1):
        raise ValueError(f"need start >= 0, stride >= 1, num_frames >= 1 or None; got "
                         f"start={start}, stride={stride}, num_frames={num_frames}")
    if out is not None and (num_frames is None or len(out) != num_frames):
        raise ValueError(f"out= needs num_frames and {num_frames} rows; got an array of shape {out.shape}")
    last = None if num_frames is None else start + (num_frames - 1) * stride
    got: list[np.ndarray] = []
    n = 0
    frames = iter_frames(data, threads)
    try:
        for i, frame in enumerate(frames):
            if i >= start and (i - start) % stride == 0:
                if out is None:
                    got.append(frame_to_rgb(frame, size))
                else:
                    out[n] = frame_to_rgb(frame, size)
                n += 1
            if last is not None and i >= last:
                break
    finally:
        frames.close()
    if n == 0 or (num_frames is not None and n < num_frames):
        raise ValueError(f"video too short: requested {num_frames} frames from frame {start} with stride "
                         f"{stride} but decoded only {n}; lower data.num_frames/frame_stride or "
                         f"raise ingest.min_frames so short videos are rejected at ingest")
    return out if out is not None else np.stack(got)  # (T, H, W, 3)


# ----------------------------------------------------------------------------------------- batches
def _clip_starts(n: int, span: int, train: bool, hop: int, rng: np.random.Generator | None) -> list[int]:
    if train:
        return [int(rng.integers(0, n - span + 1))]
    return list(range(0, n - span + 1, hop)) if hop > 0 else [0]


def _empty_clips(num_frames: int, resolution: int) -> dict[str, np.ndarray]:
    return {S.FRAMES: np.zeros((0, num_frames, resolution, resolution, 3), np.uint8),
            S.LABEL: np.zeros(0, np.int64), S.CAPTION: np.zeros(0, object), S.VIDEO_ID: np.zeros(0, object),
            S.CLIP_START: np.zeros(0, np.int64), S.SPLIT: np.zeros(0, object)}


def decode_batch(batch: dict[str, np.ndarray], num_frames: int, stride: int, resolution: int,
                 train: bool, hop: int = 0, threads: int | None = None) -> dict[str, np.ndarray]:
    """map_batches fn: encoded videos → clips. Train: one clip per video at a random start; eval: the
    clip at frame 0, or (``hop`` > 0) every clip starting at a multiple of ``hop``. Videos shorter than
    the clip span are dropped with a warning."""
    span = (num_frames - 1) * stride + 1
    rng = np.random.default_rng() if train else None
    plan: list[tuple[int, list[int]]] = []  # (row, clip starts) of every video long enough
    for i in range(len(batch[S.VIDEO])):
        n = int(batch[S.NUM_FRAMES][i])
        if n < span:
            log.warning("skipping %s: %d frames < clip span %d", batch[S.VIDEO_ID][i], n, span)
            continue
        plan.append((i, _clip_starts(n, span, train, hop, rng)))
    total = sum(len(starts) for _, starts in plan)
    if total == 0:
        return _empty_clips(num_frames, resolution)
    frames = np.empty((total, num_frames, resolution, resolution, 3), np.uint8)  # decoded into, no stacking
    out: dict[str, list[Any]] = {k: [] for k in (S.LABEL, S.CAPTION, S.VIDEO_ID, S.CLIP_START, S.SPLIT)}
    k = 0
    for i, starts in plan:
        if len(starts) == 1:
            decode_clip(batch[S.VIDEO][i], start=starts[0], num_frames=num_frames, stride=stride,
                        size=resolution, threads=threads, out=frames[k])  # (T, H, W, 3)
        else:  # decode once up to the last window, slice every window out of it
            full = decode_clip(batch[S.VIDEO][i], num_frames=starts[-1] + span, size=resolution, threads=threads)
            for j, s in enumerate(starts):
                frames[k + j] = full[s:s + span:stride]
        for start in starts:
            out[S.LABEL].append(int(batch[S.LABEL][i]))
            out[S.CAPTION].append(str(batch[S.CAPTION][i]))
            out[S.VIDEO_ID].append(str(batch[S.VIDEO_ID][i]))
            out[S.CLIP_START].append(int(batch[S.SEGMENT_START][i]) + start)  # absolute source frame
            out[S.SPLIT].append(str(batch[S.SPLIT][i]))
        k += len(starts)
    return {S.FRAMES: frames,  # (B, T, H, W, 3)
            S.LABEL: np.asarray(out[S.LABEL], np.int64), S.CAPTION: np.asarray(out[S.CAPTION], object),
            S.VIDEO_ID: np.asarray(out[S.VIDEO_ID], object), S.CLIP_START: np.asarray(out[S.CLIP_START], np.int64),
            S.SPLIT: np.asarray(out[S.SPLIT], object)}
