"""One clip, from path to tensors: the entry point that the CLI, concept specs and the UI call once per clip.

A clip's journey runs downwards through the package and never comes back:

    load_clip(path)
      -> captions: the prompt file beside it (prompts, excerpt settings)
      -> timing:   the excerpt (start, duration, which frames), the .txt's settings under the caller's
      -> decode:   frames as a player shows them (display transforms, frame folders), at the output grid
      -> masks:    the mask file beside it, or the clip's alpha channel

``probe_clip`` is the same walk for the first frame only, to choose a geometry before anything is decoded.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from setseq.errors import SetseqError
from setseq.log import note
from setseq.video.captions import read_clip_file
from setseq.video.decode import Video, load_video, probe_video
from setseq.video.masks import clip_mask
from setseq.video.timing import Excerpt, excerpt_settings

# Excerpt settings over a clip's .txt, each with how errors name where it was written (None: checked already).
Settings = Sequence[tuple[dict, str | None]]


@dataclass
class Clip:
    """A clip as training reads it.

    Attributes:
        video: the decoded clip (frames (F, 3, H, W) in [-1, 1], fps, windows, alpha).
        prompt: the static prompt as written (the given one, else the .txt's).
        motion_prompt: the motion prompt as written, or None.
        mask: (F, H, W) bool, True on the subject, or None.
        excerpt: the excerpt it was read with.
    """

    video: Video
    prompt: str
    motion_prompt: str | None
    mask: torch.Tensor | None
    excerpt: Excerpt


def clip_excerpt(path: str | os.PathLike, frames: int, settings: Settings = (), txt: dict | None = None) -> Excerpt:
    """The excerpt of a clip: its .txt's settings, then each of ``settings`` in order, later ones winning.

    Args:
        path: the clip (its .txt is read unless ``txt`` is given).
        frames: the model's clip length (frames per window).
        settings: (settings, origin) pairs; origin names them in errors, None when already checked.
        txt: the .txt's settings when already read.

    Raises:
        SetseqError: an unknown setting or a value out of range.
    """
    txt = read_clip_file(path)[2] if txt is None else txt
    merged = excerpt_settings(txt, f"the .txt of {str(path)!r}")
    for values, origin in settings:
        merged.update(values if origin is None else excerpt_settings(values, origin))
    return Excerpt(frames=frames, **merged)


def load_clip(
    path: str | os.PathLike,
    *,
    fps: float,
    size: tuple[int, int],
    frames: int,
    clip: bool = True,
    prompt: str | None = None,
    motion_prompt: str | None = None,
    mask: str | os.PathLike | None = None,
    excerpt: Settings = (),
) -> Clip:
    """Read a clip with the files beside it: prompts, excerpt, frames and foreground mask.

    Args:
        path: a video file or a folder of frames.
        fps: the output frame rate.
        size: (H, W) the frames are resized to cover, then centre-cropped to.
        frames: the model's clip length (frames per window).
        clip: True when it trains as a clip (it must hold ``frames`` frames); False for a frame
            set (one frame is enough).
        prompt: the static prompt; None reads it from the .txt beside the clip.
        motion_prompt: the motion prompt; None reads it from the .txt.
        mask: a mask file or folder; None looks beside the clip, then at its alpha channel.
        excerpt: excerpt settings over the .txt's (see ``clip_excerpt``).

    Returns:
        The Clip.

    Raises:
        SetseqError: no prompt, or a setting, the video or its mask cannot be read.
    """
    path = Path(path)
    txt_static, txt_motion, txt_settings = read_clip_file(path)
    static, motion = prompt or txt_static, motion_prompt or txt_motion
    if not static:
        raise SetseqError(
            f"no prompt for {str(path)!r}: pass --prompt 'a [v] ...' or write {path.with_suffix('.txt').name} beside it."
        )
    cut = clip_excerpt(path, frames, excerpt, txt_settings)
    video = load_video(path, fps=fps, size=size, min_frames=frames if clip else 1, excerpt=cut)
    if cut.select == "uniform" and clip:
        note(
            f"{path.name}: {frames} frames spread over the clip, {1 / video.fps:.2f} s apart, so its motion "
            f"trains {fps * (1 / video.fps):.1f} times as fast as it was filmed."
        )
    return Clip(video, static, motion, clip_mask(path, mask, video, size, cut), cut)


def probe_clip(
    path: str | os.PathLike, *, fps: float, frames: int, excerpt: Settings = ()
) -> tuple[tuple[float, float], int | None]:
    """A clip's displayed size and how many frames its excerpt holds at ``fps``, decoding one frame.

    Args:
        path: a video file or a folder of frames.
        fps: the rate it will be read at.
        frames: the model's clip length (frames per window).
        excerpt: excerpt settings over the .txt's (see ``clip_excerpt``).

    Returns:
        ((height, width) as shown, in square pixels; the frames wholly inside the excerpt, or None when
        the excerpt selects a fixed number of frames or the container does not declare its duration).

    Raises:
        SetseqError: a missing or unreadable clip, or an excerpt setting out of range.
    """
    probe = probe_video(path, fps)
    cut = clip_excerpt(path, frames, excerpt)
    if cut.select != "all" or probe.duration is None:
        return probe.size, None
    span = probe.duration - cut.start
    span = span if cut.duration is None else min(span, cut.duration)
    return probe.size, max(0, math.floor(span * fps + 1e-6))  # frames wholly inside the excerpt


def sample_frames(video: Video, n: int, generator: torch.Generator) -> torch.Tensor:
    """Draw ``n`` frames uniformly at random with replacement (the unordered set of stage 1).

    Args:
        video: the clip.
        n: how many frames.
        generator: CPU random generator (seed it for reproducibility).

    Returns:
        (n, C, H, W) frames.
    """
    if n < 1:
        raise SetseqError(f"The number of frames to sample must be at least 1, got {n}.")
    index = torch.randint(0, video.frames.shape[0], (n,), generator=generator)
    return video.frames[index.to(video.frames.device)]


def random_window(video: Video, length: int, generator: torch.Generator) -> torch.Tensor:
    """Take a random contiguous window of ``length`` frames.

    Args:
        video: the clip.
        length: window length in frames.
        generator: CPU random generator (seed it for reproducibility).

    Returns:
        (length, C, H, W) frames; the whole clip when it has exactly ``length`` frames.
    """
    count = video.frames.shape[0]
    if count < length:
        raise SetseqError(
            f"{video.source} has {count} frames at {video.fps:g} fps but windows of {length} are needed; "
            "use a longer clip, a higher fps or fewer frames per window."
        )
    start = int(torch.randint(0, count - length + 1, (1,), generator=generator))
    return video.frames[start : start + length]
