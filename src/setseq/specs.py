"""Concept specs from files: a video, the files beside it and a few settings become the
`ConceptSpec` a Trainer learns.

What a person names (a video, perhaps a prompt, a mask, a name, an excerpt) is a `ConceptSource`;
`concept_specs` reads each one at a backbone's geometry, with the fallbacks written once:

- prompts: the given ones, else the ``static:`` / ``motion:`` lines of ``NAME.txt`` beside the video;
- mask: the given file, else ``NAME.mask.mp4`` (.webm, .gif, ``NAME.mask/``) beside the video, else
  the clip's alpha channel, else none;
- excerpt settings: the ``.txt``'s, then the source's own (a ``[[concept]]`` table), then those
  given for every source (command-line flags), later ones winning;
- names: the given one, else the file's stem, made unique within the set;
- tokens: ``[v]`` and ``[u]`` for one concept, ``[v1]``, ``[u1]``, ``[v2]``, ... for several.

The CLI's `train`, the demo, the benches and users' scripts share it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from setseq import data
from setseq.backbones.base import Backbone, Geometry
from setseq.batches import ConceptSpec
from setseq.errors import SetseqError
from setseq.log import note, warn

LIST_KEYS = ("video", "prompt", "motion_prompt", "name", "mask", *data.EXCERPT_KEYS)  # of a [[concept]] table


@dataclass
class ConceptSource:
    """One concept as a person names it.

    Attributes:
        video: the clip file or frame folder.
        prompt: static prompt with the identity token; None reads it from the ``.txt`` beside the video.
        motion_prompt: dynamic prompt with the motion token; None reads it from the ``.txt``.
        mask: a foreground mask file or folder (white = subject); None looks beside the video.
        name: the concept's name; None takes the video's file name.
        excerpt: excerpt settings of this video (start, duration, select, windows), over the ``.txt``'s.
        origin: how error messages name where ``excerpt`` was written, e.g. "the [[concept]] of ...".
    """

    video: str | Path
    prompt: str | None = None
    motion_prompt: str | None = None
    mask: str | Path | None = None
    name: str | None = None
    excerpt: dict = field(default_factory=dict)
    origin: str = "the concept's settings"


def read_concept_list(path: str | Path) -> list[ConceptSource]:
    """The ``[[concept]]`` tables of a TOML file, paths (video, mask) relative to the file.

    Args:
        path: the TOML file; each table has ``video`` and may have prompt, motion_prompt, name,
            mask and the excerpt settings start, duration, select, windows.

    Raises:
        SetseqError: the file is missing or not TOML, lists no concepts, or a table has no video
            or an unknown key.
    """
    from setseq.config import read_toml

    file = Path(path)
    entries = read_toml(file).get("concept", [])
    if not isinstance(entries, list) or not entries:
        raise SetseqError(f"{str(path)!r} lists no concepts; write one [[concept]] table per video.")
    sources = []
    for e in entries:
        if "video" not in e or set(e) - set(LIST_KEYS):
            raise SetseqError(
                f"each [[concept]] in {str(path)!r} needs a video and may have prompt, motion_prompt, name, "
                f"mask, {', '.join(data.EXCERPT_KEYS)}; got {sorted(e)}."
            )
        video = str(file.parent / e["video"])
        sources.append(
            ConceptSource(
                video,
                prompt=e.get("prompt"),
                motion_prompt=e.get("motion_prompt"),
                mask=str(file.parent / e["mask"]) if e.get("mask") else None,
                name=e.get("name") or None,
                excerpt={k: e[k] for k in data.EXCERPT_KEYS if k in e},
                origin=f"the [[concept]] of {video!r} in {str(path)!r}",
            )
        )
    return sources


def check_videos(videos: list[str | Path]) -> None:
    """Refuse a video path that does not exist or is named like a mask (NAME.mask.*).

    Raises:
        SetseqError: for the first such path.
    """
    for v in map(Path, videos):
        if not v.exists():
            raise SetseqError(f"video {str(v)!r} does not exist.")
        if data.is_mask_path(v):
            raise SetseqError(
                f"{str(v)!r} is named like a mask (NAME.mask.*), which is read with its clip NAME; "
                f"pass the clip only, or rename it."
            )


def concept_specs(
    sources: list[ConceptSource],
    geometry: Geometry,
    *,
    excerpt: dict | None = None,
    needs_clip: bool = True,
    number_prompts: bool = False,
) -> list[ConceptSpec]:
    """Load each source's clip, prompts and mask at `geometry` into a training spec.

    Args:
        sources: one per concept, in token order.
        geometry: the clip geometry the videos are resampled and resized to.
        excerpt: excerpt settings for every video (e.g. command-line flags), over each source's own.
        needs_clip: the method trains on clips, so each video must hold at least ``geometry.frames``
            frames (False: a frame set, one frame is enough).
        number_prompts: for several sources, rewrite ``[v]`` and ``[u]`` in each source's prompts as
            its numbered tokens (for prompt files written for a clip alone); False keeps them as written.

    Returns:
        One ConceptSpec per source: video (F, C, H, W) in [-1, 1], mask (F, H, W) bool or None.

    Raises:
        SetseqError: a video is missing or named like a mask, has no prompt, or a setting, mask or
            video cannot be read.
    """
    check_videos([s.video for s in sources])
    taken: set[str] = set()
    specs = []
    for i, s in enumerate(sources):
        suffix = "" if len(sources) == 1 else str(i + 1)
        name = s.name or concept_name(Path(s.video), taken)
        specs.append(
            _spec(s, geometry, name, (f"[v{suffix}]", f"[u{suffix}]"), excerpt or {}, needs_clip, number_prompts)
        )
    return specs


def _spec(
    s: ConceptSource,
    g: Geometry,
    name: str,
    tokens: tuple[str, str],
    flags: dict,
    needs_clip: bool,
    number_prompts: bool,
) -> ConceptSpec:
    v = Path(s.video)
    txt_static, txt_motion, txt_settings = data.read_clip_file(v)
    static, motion = s.prompt or txt_static, s.motion_prompt or txt_motion
    if not static:
        raise SetseqError(
            f"no prompt for {str(v)!r}: pass --prompt 'a [v] ...' or write {v.with_suffix('.txt').name} beside it."
        )
    if number_prompts and tokens != ("[v]", "[u]"):
        static = static.replace("[v]", tokens[0])
        motion = motion and motion.replace("[u]", tokens[1])
    excerpt = data.Excerpt(frames=g.frames, **_excerpt_settings(s, txt_settings, flags))
    video = data.load_video(
        v, fps=g.fps, size=(g.height, g.width), min_frames=g.frames if needs_clip else 1, excerpt=excerpt
    )
    if excerpt.select == "uniform" and needs_clip:
        note(
            f"{v.name}: {g.frames} frames spread over the clip, {1 / video.fps:.2f} s apart, so its motion "
            f"trains {g.fps * (1 / video.fps):.1f} times as fast as it was filmed."
        )
    mask = concept_mask(v, s.mask, video, (g.height, g.width), excerpt)
    return ConceptSpec(
        name,
        video.frames,
        static,
        motion,
        identity_token=tokens[0],
        motion_token=tokens[1],
        source=str(v),
        mask=mask,
        windows=video.windows,
    )


def _excerpt_settings(s: ConceptSource, txt_settings: dict, flags: dict) -> dict:
    """The excerpt settings of a source: its .txt's, then its own, then those given for all."""
    return {
        **data.excerpt_settings(txt_settings, f"the .txt of {str(s.video)!r}"),
        **data.excerpt_settings(s.excerpt, s.origin),
        **flags,
    }


def clip_geometry(
    backbone: Backbone, sources: list[ConceptSource], *, excerpt: dict | None = None, fps: float | None = None
) -> Geometry:
    """The geometry that follows the clips (`Backbone.fit_geometry`): the first video's displayed
    shape at the model's pixel budget, and the frames of the shortest one, up to the model's.

    Only the first frame of each video is decoded. A video excerpted with ``select`` head, uniform or
    windows is cut to the model's frame count anyway, and one whose container does not declare its
    duration says nothing of its length: both leave the frame count as it is. The toy base keeps its
    fixed geometry.

    Args:
        backbone: the base model.
        sources: the concepts' videos, in order.
        excerpt: excerpt settings for every video (command-line flags), as for `concept_specs`.
        fps: the frame rate the videos will be read at (None: the model's).

    Returns:
        The geometry, at that frame rate.

    Raises:
        SetseqError: a video is missing or unreadable, or an excerpt setting is out of range.
    """
    g = backbone.geometry
    rate = fps or g.fps
    shown, counts = None, []
    for s in sources:
        probe = data.probe_video(s.video, rate)
        shown = shown or probe.size
        cut = data.Excerpt(frames=g.frames, **_excerpt_settings(s, data.read_clip_file(s.video)[2], excerpt or {}))
        if cut.select == "all" and probe.duration is not None:
            span = probe.duration - cut.start
            span = span if cut.duration is None else min(span, cut.duration)
            counts.append(max(0, math.floor(span * rate + 1e-6)))  # frames wholly inside the excerpt
    return replace(backbone.fit_geometry(shown, min(counts) if counts else None), fps=rate)


def concept_name(path: Path, taken: set[str]) -> str:
    """A concept name from a file's stem (letters, digits, _ and -), unique among `taken`, which it joins."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem) or "concept"
    base, i = name, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def concept_mask(
    video_path: Path,
    given: str | Path | None,
    video: data.Video,
    size: tuple[int, int],
    excerpt: data.Excerpt | None = None,
) -> torch.Tensor | None:
    """A clip's foreground mask: the given file, else the one beside the clip, else its alpha channel
    (opaque = subject), else None.

    Args:
        video_path: the clip's path.
        given: a mask file or folder, or None to look beside the clip.
        video: the clip as ``data.load_video`` returned it.
        size: the (H, W) the clip was loaded at.
        excerpt: the excerpt the clip was loaded with.

    Returns:
        (F, H, W) bool, True on the subject, or None.

    Raises:
        SetseqError: the given mask does not exist, or a mask does not fit its clip.
    """
    if given and not Path(given).exists():
        raise SetseqError(f"mask {str(given)!r} for {str(video_path)!r} does not exist.")
    file = Path(given) if given else data.find_mask(video_path)
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
    mask = data.load_mask(file, video, size, excerpt=excerpt)
    note(f"foreground mask for {video_path.name}: {file}")
    return mask
