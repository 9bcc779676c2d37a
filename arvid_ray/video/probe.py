"""Open a file or bytes and classify it: ``VideoInfo`` for a usable video, ``Rejected`` with a reason.

Design trade-off: probing decodes every frame (without colour conversion) instead of trusting the
container header. That costs a decode pass at ingest, once, but it is the only way to count frames
exactly across codecs and to catch truncated or corrupt streams before training meets them; header
frame counts are missing (WebM, MKV) or wrong (truncated MP4s) too often to rely on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Union

from arvid_ray.video.decode import VideoSource, frame_rotation, open_container

__all__ = ["VideoInfo", "Rejected", "probe", "REASONS", "looks_like_video_container"]

# reason code -> explanation (the code is the key of the ingest summary's rejected-by-reason table)
REASONS = {
    "empty": "the file has 0 bytes",
    "truncated": "the file starts like a video but ends early (cut-off download or copy)",
    "non-video": "not a video container that ffmpeg can open",
    "no-video-stream": "the container has no video stream (audio or data only)",
    "undecodable": "the video stream could not be decoded",
    "too-short": "fewer decodable frames than ingest.min_frames",
    "unreadable": "the file could not be read",
}

# magic numbers of common video containers: (offset, bytes)
_MAGIC = [(4, b"ftyp"), (0, b"\x1a\x45\xdf\xa3"), (0, b"RIFF"), (4, b"moov"), (4, b"mdat"), (4, b"free"),
          (4, b"wide"), (0, b"\x00\x00\x01\xba"), (0, b"\x47"), (0, b"FLV"), (0, b"OggS")]


@dataclass(frozen=True)
class VideoInfo:
    """What ingest needs to know about an accepted video (sizes are as displayed, after rotation)."""

    num_frames: int
    fps: float
    width: int
    height: int
    codec: str
    rotation: int = 0
    has_audio: bool = False


@dataclass(frozen=True)
class Rejected:
    """A refused input: ``code`` is one of ``REASONS``; ``detail`` says what exactly happened."""

    code: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.code}: {self.detail or REASONS[self.code]}"


def looks_like_video_container(head: bytes) -> bool:
    """True if the first bytes carry the signature of a common video container."""
    return any(head[off:off + len(magic)] == magic for off, magic in _MAGIC)


def _fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def _byte_size(data: VideoSource) -> int:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return len(data)
    return os.path.getsize(data)


def _index_past_eof(stream, size: int) -> bool:
    """True if the container's sample index points past the end of the file (cut-off MP4/MOV)."""
    try:
        return any(e.pos + e.size > size for e in stream.index_entries)
    except (AttributeError, TypeError):
        return False


def _fewer_than_promised(container, stream, count: int, fps: float) -> bool:
    """True if the header promises clearly more frames or seconds than were decoded (WebM/MKV/AVI)."""
    if stream.frames and count < stream.frames:
        return True
    if container.duration and fps > 0:  # header duration (µs) vs what was decoded
        header_s, decoded_s = container.duration / 1e6, count / fps
        return header_s - decoded_s > max(2.0 / fps, 0.1 * header_s)
    return False


def _read_head(data: VideoSource) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data[:16])
    with open(data, "rb") as fh:
        return fh.read(16)


def probe(data: VideoSource, min_frames: int = 1) -> Union[VideoInfo, Rejected]:
    """Classify ``data`` (bytes or local path); never raises for bad content."""
    import av

    try:
        head, size = _read_head(data), _byte_size(data)
    except OSError as exc:
        return Rejected("unreadable", str(exc))
    if size == 0:
        return Rejected("empty", REASONS["empty"])
    try:
        container = open_container(data)
    except (av.FFmpegError, OSError, ValueError) as exc:
        code = "truncated" if looks_like_video_container(head) else "non-video"
        return Rejected(code, f"ffmpeg could not open it ({exc.__class__.__name__}: {exc})")
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            return Rejected("no-video-stream", f"streams present: {', '.join(kinds)}")
        stream = container.streams.video[0]
        count, rotation, error = 0, 0, None
        width, height = stream.codec_context.width, stream.codec_context.height
        try:
            for frame in container.decode(stream):
                if count == 0:
                    rotation, width, height = frame_rotation(frame), frame.width, frame.height
                count += 1
        except (av.FFmpegError, ValueError) as exc:
            error = f"{exc.__class__.__name__}: {exc}"
        fps = _fps(stream)
        if _index_past_eof(stream, size):
            return Rejected("truncated", f"the file ends before its index does; decoded {count} of "
                            f"{stream.frames or '?'} frames")
        if error is not None:
            return Rejected("undecodable", f"decode error after {count} frames ({error})")
        if _fewer_than_promised(container, stream, count, fps):
            return Rejected("truncated", f"decoded {count} frames, the header promises "
                            f"{stream.frames or round((container.duration or 0) / 1e6 * fps)}")
        if count == 0:
            return Rejected("undecodable", "the video stream yielded no frame")
        if count < min_frames:
            return Rejected("too-short", f"{count} frames < ingest.min_frames={min_frames}")
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(num_frames=count, fps=fps, width=width, height=height,
                         codec=stream.codec_context.name, rotation=rotation,
                         has_audio=bool(container.streams.audio))
