"""Captions and sidecars: the files beside a clip, found by its name, and its prompt file.

Prompt files
------------
A ``.txt`` file beside a video with the same stem (``dancer.mp4`` -> ``dancer.txt``; for a
directory of frames ``frames/`` -> ``frames.txt``) may supply the video's two prompts, the
static (appearance) prompt and the motion (dynamic) prompt. The file is UTF-8 text:

- Blank lines and lines whose first non-blank character is ``#`` are ignored.
- Keyed form: a line ``static: ...`` gives the static prompt and a line ``motion: ...`` the
  motion prompt. Keys are case-insensitive and either line may be absent. Each key may appear
  once, and a keyed file may not also hold unkeyed lines.
- Unkeyed form, two lines: the first line is the static prompt, the second the motion prompt.
- Unkeyed form, one line holding both: the line is split at the first sentence that contains
  the motion token ``[u]`` (or any ``[u<digits>]``, e.g. ``[u1]``); sentences end at ``.``,
  ``!`` or ``?`` followed by a space. That sentence and everything after it is the motion
  prompt, the text before it the static prompt. Without a motion token the whole line is the
  static prompt.
- More than two unkeyed lines is an error.
- Excerpt settings may stand beside either form, one per line: ``start: 12.5`` and ``duration: 4``
  (seconds), ``select: head|uniform|windows|all`` and ``windows: 3`` (see ``Excerpt``).
- The ``.txt`` is found whatever the case of its extension (``DSC.MOV`` -> ``DSC.TXT``).

Example (one line): ``A [v] dancer in a red dress. The [v] dancer [u] spins twice.`` gives
static ``A [v] dancer in a red dress.`` and motion ``The [v] dancer [u] spins twice.``
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from setseq.errors import SetseqError
from setseq.video.timing import excerpt_settings

MOTION_TOKEN = re.compile(r"\[u\d*\]")


_KEYED_LINE = re.compile(r"(static|motion)\s*:(.*)", re.IGNORECASE)


_SETTING_LINE = re.compile(r"(start|duration|select|windows)\s*:(.*)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?]\s+")


def find_sidecar(video_path: str | os.PathLike, endings: Iterable[str], *, folder: str | None = None) -> Path | None:
    """The file beside a clip named by its stem plus one of ``endings`` (``.txt``, ``.mask.mp4``,
    ...), whatever the case of the ending (``CLIP.MP4`` finds ``CLIP.mask.MP4`` and ``CLIP.TXT``);
    an exact-case match wins, then the endings' order. ``folder``: also accept a directory named
    stem + ``folder`` (``.mask``), after the files.

    Args:
        video_path: the clip (``dancer.mp4``) or its frame directory (``frames/``).
        endings: lower-case endings to look for, in order of preference.
        folder: a lower-case directory ending, or None.

    Returns:
        The path, or None when there is none.
    """
    video_path = Path(video_path)
    stem = video_path.name if video_path.is_dir() else video_path.stem
    parent = video_path.parent
    endings = list(endings)
    for ending in endings:  # the common case, without listing the directory
        if (parent / f"{stem}{ending}").is_file():
            return parent / f"{stem}{ending}"
    try:
        names = [p for p in parent.iterdir() if p.name.startswith(stem) and p.name != video_path.name]
    except OSError:
        return None
    found = {p.name[len(stem) :].lower(): p for p in sorted(names) if p.is_file()}
    for ending in endings:
        if ending in found:
            return found[ending]
    if folder is not None:
        dirs = {p.name[len(stem) :].lower(): p for p in sorted(names) if p.is_dir()}
        return dirs.get(folder)
    return None


def read_clip_file(video_path: str | os.PathLike) -> tuple[str | None, str | None, dict[str, str]]:
    """Read the ``.txt`` beside a video (format in this module's docstring; ``.TXT`` is found too).

    Args:
        video_path: the video file (``dancer.mp4`` -> ``dancer.txt``) or frame directory
            (``frames/`` -> ``frames.txt``).

    Returns:
        (static prompt, motion prompt, excerpt settings): prompts None when not given, the
        settings (``start``, ``duration``, ``select``, ``windows``) as written, for
        ``excerpt_settings``; (None, None, {}) without a file.
    """
    txt = find_sidecar(video_path, [".txt"])
    if txt is None:
        return None, None, {}
    try:
        text = txt.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise SetseqError(f"Could not read prompt file {txt} ({e}); save it as UTF-8 text.") from None
    return parse_clip_text(text, source=f"Prompt file {txt}")


def read_prompt_file(video_path: str | os.PathLike) -> tuple[str | None, str | None]:
    """Read the prompts from the ``.txt`` beside a video (see ``read_clip_file``).

    Returns:
        (static prompt, motion prompt), each None when not given; (None, None) without a file.
    """
    return read_clip_file(video_path)[:2]


def parse_prompts(text: str, *, source: str = "The prompt text") -> tuple[str | None, str | None]:
    """Parse prompt-file text (format in this module's docstring).

    Args:
        text: the file's contents.
        source: how error messages name the text.

    Returns:
        (static prompt, motion prompt), each None when not given.
    """
    return parse_clip_text(text, source=source)[:2]


def parse_clip_text(text: str, *, source: str = "The prompt text") -> tuple[str | None, str | None, dict[str, str]]:
    """Parse prompt-file text: (static, motion, excerpt settings as written). Settings lines
    (``start: 12``, ``duration: 5``, ``select: uniform``, ``windows: 3``) may stand beside
    either form of prompts."""
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    settings: dict[str, str] = {}
    prompt_lines = []
    for line in lines:
        match = _SETTING_LINE.fullmatch(line)
        if match is None:
            prompt_lines.append(line)
            continue
        key = match.group(1).lower()
        if key in settings:
            raise SetseqError(f"{source} has more than one '{key}:' line; keep one.")
        settings[key] = match.group(2).strip()
    excerpt_settings(settings, source)
    return (*_parse_prompt_lines(prompt_lines, source), settings)


def _parse_prompt_lines(lines: list[str], source: str) -> tuple[str | None, str | None]:
    keyed = [_KEYED_LINE.fullmatch(line) for line in lines]
    if any(keyed):
        if not all(keyed):
            raise SetseqError(f"{source} mixes 'static:'/'motion:' lines with unkeyed lines; key every line or none.")
        prompts: dict[str, str | None] = {}
        for match in keyed:
            key = match.group(1).lower()
            if key in prompts:
                raise SetseqError(f"{source} has more than one '{key}:' line; keep one.")
            prompts[key] = match.group(2).strip() or None
        return prompts.get("static"), prompts.get("motion")
    if len(lines) > 2:
        raise SetseqError(
            f"{source} has {len(lines)} unkeyed lines but at most 2 are allowed (static, then motion); "
            "merge them or use 'static:'/'motion:' keys."
        )
    if len(lines) == 2:
        return lines[0], lines[1]
    return _split_at_motion(lines[0]) if lines else (None, None)


def _split_at_motion(line: str) -> tuple[str | None, str | None]:
    """Split one line at the first sentence holding a motion token: (static, motion)."""
    starts = [0] + [m.end() for m in _SENTENCE_END.finditer(line)]
    for start, end in zip(starts, starts[1:] + [len(line)]):
        if MOTION_TOKEN.search(line[start:end]):
            return line[:start].strip() or None, line[start:].strip()
    return line, None
