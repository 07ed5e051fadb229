"""Concept specs from files: a video, the files beside it and a few settings become the
`ConceptSpec` a Trainer learns.

What a person names (a video, perhaps a prompt, a mask, a name, an excerpt) is a `ConceptSource`;
`concept_specs` reads each one at a backbone's geometry with one ``setseq.video.load_clip``, which
holds a clip's fallbacks (the first three below); names and tokens are this module's:

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

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from setseq.backbones.base import Backbone, Geometry
from setseq.batches import ConceptSpec
from setseq.errors import SetseqError
from setseq.video import EXCERPT_KEYS, is_mask_path, load_clip, probe_clip

LIST_KEYS = ("video", "prompt", "motion_prompt", "name", "mask", *EXCERPT_KEYS)  # of a [[concept]] table


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
                f"mask, {', '.join(EXCERPT_KEYS)}; got {sorted(e)}."
            )
        video = str(file.parent / e["video"])
        sources.append(
            ConceptSource(
                video,
                prompt=e.get("prompt"),
                motion_prompt=e.get("motion_prompt"),
                mask=str(file.parent / e["mask"]) if e.get("mask") else None,
                name=e.get("name") or None,
                excerpt={k: e[k] for k in EXCERPT_KEYS if k in e},
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
        if is_mask_path(v):
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
    clip = load_clip(
        s.video,
        fps=g.fps,
        size=(g.height, g.width),
        frames=g.frames,
        clip=needs_clip,
        prompt=s.prompt,
        motion_prompt=s.motion_prompt,
        mask=s.mask,
        excerpt=_excerpt_layers(s, flags),
    )
    static, motion = clip.prompt, clip.motion_prompt
    if number_prompts and tokens != ("[v]", "[u]"):
        static = static.replace("[v]", tokens[0])
        motion = motion and motion.replace("[u]", tokens[1])
    return ConceptSpec(
        name,
        clip.video.frames,
        static,
        motion,
        identity_token=tokens[0],
        motion_token=tokens[1],
        source=str(Path(s.video)),
        mask=clip.mask,
        windows=clip.video.windows,
    )


def _excerpt_layers(s: ConceptSource, flags: dict) -> list[tuple[dict, str | None]]:
    """The excerpt settings of a source over its .txt's: its own, then those given for all (checked already)."""
    return [(s.excerpt, s.origin), (flags, None)]


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
        size, count = probe_clip(s.video, fps=rate, frames=g.frames, excerpt=_excerpt_layers(s, excerpt or {}))
        shown = shown or size
        if count is not None:
            counts.append(count)
    return replace(backbone.fit_geometry(shown, min(counts) if counts else None), fps=rate)


def concept_name(path: Path, taken: set[str]) -> str:
    """A concept name from a file's stem (letters, digits, _ and -), unique among `taken`, which it joins."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem) or "concept"
    base, i = name, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name
