"""Writing and previews: frames in [-1, 1] become an mp4, webm, gif or webp file, atomically.

The encoder follows the suffix, with a fallback when this PyAV build lacks the first choice; a GIF
gets one adaptive palette for the whole clip.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from setseq.errors import SetseqError
from setseq.fileio import write_error

# Suffix -> encoders to try in order; encoder -> (pixel format, encoder options).
_ENCODERS = {
    ".mp4": ("libx264", "mpeg4"),
    ".webm": ("libvpx-vp9", "libvpx"),
    ".gif": ("gif",),
    ".webp": ("libwebp_anim", "libwebp"),
}
_ENCODER_SETTINGS = {
    "libx264": ("yuv420p", {"crf": "18", "preset": "medium"}),
    "mpeg4": ("yuv420p", {"flags": "+qscale", "global_quality": str(2 * 118)}),  # = ffmpeg -q:v 2
    "libvpx-vp9": ("yuv420p", {"crf": "20", "b": "0"}),
    "libvpx": ("yuv420p", {"crf": "8", "b": "8M"}),
    "gif": ("pal8", {}),
    "libwebp_anim": ("bgra", {"lossless": "1"}),
    "libwebp": ("bgra", {"lossless": "1"}),
}
_MUXER_OPTIONS = {".mp4": {"movflags": "+faststart"}, ".gif": {"loop": "0"}, ".webp": {"loop": "0"}}


def write_video(path: str | os.PathLike, frames: torch.Tensor, fps: float, *, scale: int = 1) -> Path:
    """Encode frames to a video file, atomically (temporary file, then rename).

    The format follows the suffix: ``.mp4`` (H.264, else MPEG-4 part 2; yuv420p), ``.webm``
    (VP9, else VP8), ``.gif`` (looping, adaptive 256-colour palette) or ``.webp`` (animated,
    lossless, looping). Parent directories are created.

    Args:
        path: output file; its suffix picks the format.
        frames: (F, C, H, W) with C = 3, values in [-1, 1] (clamped).
        fps: frames per second.
        scale: integer nearest-neighbour upscaling factor applied before encoding.

    Returns:
        The written path.
    """
    path = Path(path)
    codec = _pick_encoder(path)
    video = _to_uint8(frames, scale, path)  # (F, H, W, 3)
    if not (math.isfinite(fps) and fps > 0):
        raise SetseqError(f"Cannot write {path}: fps must be a positive number, got {fps!r}.")
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _encode(tmp, video, fps, codec, _MUXER_OPTIONS.get(path.suffix.lower(), {}))
        os.replace(tmp, path)
    except (av.FFmpegError, OSError) as e:
        raise write_error(path, e) or SetseqError(f"Could not write {path} ({e}).") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_preview(path: str | os.PathLike, frames: torch.Tensor, fps: float, *, scale: int = 4) -> Path:
    """Write a looping GIF preview (``path`` gets the ``.gif`` suffix).

    Args:
        path: output file.
        frames: (F, C, H, W) with C = 3, values in [-1, 1].
        fps: frames per second.
        scale: integer nearest-neighbour upscaling factor.

    Returns:
        The written path.
    """
    return write_video(Path(path).with_suffix(".gif"), frames, fps, scale=scale)


def _has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except (av.codec.codec.UnknownCodecError, av.FFmpegError):
        return False
    return True


def _pick_encoder(path: Path) -> str:
    suffix = path.suffix.lower()
    for name in _ENCODERS.get(suffix, ()):
        if _has_encoder(name):
            return name
    usable = [s for s, names in _ENCODERS.items() if any(map(_has_encoder, names))]
    raise SetseqError(
        f"Cannot write {path}: no encoder for '{suffix}' in this PyAV build; use one of {', '.join(usable)}."
    )


def _to_uint8(frames: torch.Tensor, scale: int, path: Path) -> np.ndarray:
    """(F, 3, H, W) in [-1, 1] -> (F, H*scale, W*scale, 3) uint8."""
    if frames.ndim != 4 or frames.shape[0] == 0 or frames.shape[1] != 3:
        raise SetseqError(f"Cannot write {path}: frames must be (F, 3, H, W) with F >= 1, got {tuple(frames.shape)}.")
    if not (isinstance(scale, int) and scale >= 1):
        raise SetseqError(f"Cannot write {path}: scale must be a positive integer, got {scale!r}.")
    x = frames.detach().to("cpu", torch.float32).nan_to_num(0.0).clamp(-1, 1)
    x = ((x + 1) * 127.5).round().to(torch.uint8)
    x = x.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def _encode(file: Path, video: np.ndarray, fps: float, codec: str, muxer_options: dict[str, str]) -> None:
    """Encode (F, H, W, 3) uint8 frames to ``file`` with ``codec``."""
    pix_fmt, options = _ENCODER_SETTINGS[codec]
    if pix_fmt == "yuv420p":  # chroma subsampling needs even sides: repeat the last row/column
        _, h, w, _ = video.shape
        video = np.pad(video, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with av.open(str(file), "w", options=muxer_options) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001), options=options)
        stream.height, stream.width, stream.pix_fmt = video.shape[1], video.shape[2], pix_fmt
        for frame in _av_frames(video, pix_fmt):
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _av_frames(video: np.ndarray, pix_fmt: str) -> Iterator[av.VideoFrame]:
    if pix_fmt != "pal8":
        yield from (av.VideoFrame.from_ndarray(rgb, format="rgb24") for rgb in video)
        return
    indices, palette = _palettize(video)
    yield from (av.VideoFrame.from_ndarray((idx, palette), format="pal8") for idx in indices)


def _palettize(video: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One 256-colour palette for a whole clip: the most frequent 15-bit colour bins (each the
    mean of its pixels, so clips with few colours stay exact), every bin mapped to its nearest entry.

    Args:
        video: (F, H, W, 3) uint8.

    Returns:
        indices (F, H, W) uint8 and palette (256, 4) uint8 ARGB.
    """
    q = video.astype(np.int64) >> 3
    bins = ((q[..., 0] << 10) | (q[..., 1] << 5) | q[..., 2]).ravel()
    counts = np.bincount(bins, minlength=1 << 15)
    sums = np.stack([np.bincount(bins, weights=video[..., c].ravel(), minlength=1 << 15) for c in range(3)], 1)
    used = np.flatnonzero(counts)
    means = sums[used] / counts[used, None]  # (B, 3)
    top = np.argsort(-counts[used], kind="stable")[:256]
    colours = means[top]  # (P, 3)
    dist = (means**2).sum(1)[:, None] - 2 * means @ colours.T + (colours**2).sum(1)[None]  # (B, P)
    lookup = np.zeros(1 << 15, np.uint8)
    lookup[used] = dist.argmin(1)
    palette = np.zeros((256, 4), np.uint8)
    palette[:, 0] = 255
    palette[: len(colours), 1:] = colours.round()
    return lookup[bins].reshape(video.shape[:3]), palette


def make_test_video(
    path: str | os.PathLike, frames: int = 12, size: tuple[int, int] = (32, 48), fps: float = 8.0
) -> Path:
    """Write a small deterministic synthetic clip: a yellow square sliding diagonally over a
    colour gradient (top-left in the first frame, bottom-right in the last).

    Args:
        path: output file; its suffix picks the format (see ``write_video``).
        frames: number of frames.
        size: (H, W).
        fps: frames per second.

    Returns:
        The written path.
    """
    H, W = size
    side = max(2, min(H, W) // 4)
    ys, xs = torch.linspace(-0.6, 0.6, H)[:, None], torch.linspace(-0.6, 0.6, W)[None, :]
    background = torch.stack([xs.expand(H, W), ys.expand(H, W), torch.full((H, W), -0.5)])  # (3, H, W)
    video = background.repeat(frames, 1, 1, 1)  # (F, 3, H, W)
    for k in range(frames):
        t = k / max(frames - 1, 1)
        y, x = round(t * (H - side)), round(t * (W - side))
        video[k, :, y : y + side, x : x + side] = torch.tensor([1.0, 0.8, -0.6])[:, None, None]
    return write_video(path, video, fps)
