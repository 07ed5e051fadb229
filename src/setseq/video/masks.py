"""Masks and alpha: a clip's foreground mask, from a mask video beside it or its alpha channel.

Mask videos
-----------
A clip may have a foreground mask beside it, found by name: ``dancer.mp4`` -> ``dancer.mask.mp4``
(or ``.webm``, ``.gif``, or a folder of frames ``dancer.mask/``; for a frame folder ``frames/`` ->
``frames.mask.mp4`` ...), whatever the case of its extension (``CLIP.MP4`` -> ``CLIP.mask.MP4``).
White marks the subject. It is read like its clip (resampled to the clip's frame rate, resized to
cover and centre-cropped the same way), then thresholded at half brightness; it must then have the
clip's frame count, and its source frames the clip's aspect ratio. Without a mask file, a clip's
alpha channel (opaque = subject) serves.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from setseq.errors import SetseqError
from setseq.log import note, warn
from setseq.video.captions import find_sidecar
from setseq.video.decode import Video, load_video
from setseq.video.timing import Excerpt

MASK_SUFFIXES = (".mp4", ".webm", ".gif")


def find_mask(video_path: str | os.PathLike) -> Path | None:
    """The foreground mask beside a clip (see "Mask videos" in the module docstring), or None;
    the case of its ending does not matter (``CLIP.mask.MP4``).

    Args:
        video_path: the clip (``dancer.mp4``) or its frame directory (``frames/``).
    """
    return find_sidecar(video_path, [f".mask{s}" for s in MASK_SUFFIXES], folder=".mask")


def is_mask_path(path: str | os.PathLike) -> bool:
    """Whether a path is named like a mask video (``NAME.mask.mp4`` or a folder ``NAME.mask/``),
    in any case."""
    path = Path(path)
    return (path.name if path.is_dir() else path.stem).lower().endswith(".mask")


def load_mask(
    path: str | os.PathLike, clip: Video, size: tuple[int, int] | None = None, *, excerpt: Excerpt | None = None
) -> torch.Tensor:
    """Read a foreground mask (white = subject) for a clip, resampled and resized exactly as the clip.

    Args:
        path: the mask video or frame directory.
        clip: the clip as ``load_video`` returned it (its frame rate and source size are used).
        size: the (H, W) the clip was loaded with; None when it kept its source size.
        excerpt: the excerpt the clip was loaded with (the same frames are taken of the mask).

    Returns:
        (F, H, W) bool, True on the subject, with F, H, W those of ``clip.frames``.
    """
    path = Path(path)
    mask = load_video(path, fps=clip.fps, size=size, excerpt=excerpt)
    n, _, H, W = clip.frames.shape
    m, _, h, w = mask.frames.shape
    fix = "make the mask from the clip itself (same length and aspect ratio), or leave it out"
    if clip.source_size and mask.source_size and not _same_aspect(clip.source_size, mask.source_size):
        (ch, cw), (mh, mw) = clip.source_size, mask.source_size
        raise SetseqError(
            f"mask {path} is {mw}x{mh} but its clip {clip.source} is {cw}x{ch}, "
            f"a different aspect ratio, so they cannot be aligned; {fix}."
        )
    if (m, h, w) != (n, H, W):
        raise SetseqError(
            f"mask {path} has {m} frames of {w}x{h} at {clip.fps:g} fps but its clip {clip.source} "
            f"has {n} frames of {W}x{H}; {fix}."
        )
    out = mask.frames.mean(1) > 0.0  # (F, H, W): brightness above half in [-1, 1]
    if not out.any():
        raise SetseqError(f"mask {path} is black in every frame, but white must mark the subject; {fix}.")
    return out


def _same_aspect(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Equal aspect ratios up to one pixel of rounding on the longer side."""
    (h1, w1), (h2, w2) = a, b
    return abs(h1 * w2 - h2 * w1) <= max(h1, w1, h2, w2)


def clip_mask(
    video_path: str | os.PathLike,
    given: str | os.PathLike | None,
    video: Video,
    size: tuple[int, int] | None,
    excerpt: Excerpt | None = None,
) -> torch.Tensor | None:
    """A clip's foreground mask: the given file, else the one beside the clip, else its alpha channel
    (opaque = subject), else None.

    Args:
        video_path: the clip's path.
        given: a mask file or folder, or None to look beside the clip.
        video: the clip as ``load_video`` returned it.
        size: the (H, W) the clip was loaded at.
        excerpt: the excerpt the clip was loaded with.

    Returns:
        (F, H, W) bool, True on the subject, or None.

    Raises:
        SetseqError: the given mask does not exist, or a mask does not fit its clip.
    """
    video_path = Path(video_path)
    if given and not Path(given).exists():
        raise SetseqError(f"mask {str(given)!r} for {str(video_path)!r} does not exist.")
    file = Path(given) if given else find_mask(video_path)
    if file is None:
        if video.alpha is None:
            return None
        mask = video.alpha > 0.5  # (F, H, W)
        if not mask.any():
            warn(
                f"{video_path.name} is transparent everywhere, so its alpha channel marks no subject; no mask is used."
            )
            return None
        note(f"foreground mask for {video_path.name}: its alpha channel (no mask file given)")
        return mask
    mask = load_mask(file, video, size, excerpt=excerpt)
    note(f"foreground mask for {video_path.name}: {file}")
    return mask
