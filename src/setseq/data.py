"""Video input/output: decode clips into tensors, write videos and previews, read prompt files.

Everything is decoded and encoded with PyAV; frames in memory are float32 tensors shaped
(F, C, H, W) with C = 3 (RGB) and values in [-1, 1].

What is read
------------
What a player shows is what trains:

- Display geometry: a container's display matrix (a phone's rotation, ``ffmpeg -display_rotation``,
  and mirroring), the EXIF orientation of still images in a frame folder (read with Pillow when it
  is installed) and non-square pixels (the sample aspect ratio) are applied before resizing.
- Timing: frames are placed by their presentation timestamps, so variable-rate clips keep their
  timing whatever their average rate.
- Colour: HDR (PQ, HLG) and wide-gamut (BT.2020, P3) clips are mapped to SDR BT.709 by libswscale,
  and the declared colour matrix and range are honoured (``setseq.colour``).
- Alpha: an alpha channel (VP8/VP9 WebM with alpha, decoded with libvpx; PNG frames; ...) is kept
  as ``Video.alpha``; the trainer uses it as the foreground mask when no mask file is given.
- Damage: a file that decodes to much less than its container declares (cut short, half
  downloaded) gives a one-line warning and trains on what is there.
- Long clips: decoding is a stream; only the output frames are kept, resized as they arrive.
  ``Excerpt`` picks a part (start, duration) and which frames of it (all, head, a uniform spread,
  or several windows of the model's length).

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

Mask videos
-----------
A clip may have a foreground mask beside it, found by name: ``dancer.mp4`` -> ``dancer.mask.mp4``
(or ``.webm``, ``.gif``, or a folder of frames ``dancer.mask/``; for a frame folder ``frames/`` ->
``frames.mask.mp4`` ...), whatever the case of its extension (``CLIP.MP4`` -> ``CLIP.mask.MP4``). White marks the subject. It is read like its clip (resampled to the
clip's frame rate, resized to cover and centre-cropped the same way), then thresholded at half
brightness; it must then have the clip's frame count, and its source frames the clip's aspect ratio.
"""

from __future__ import annotations

import math
import os
import re
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from fractions import Fraction
from itertools import islice
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from setseq.colour import SdrConverter
from setseq.errors import SetseqError
from setseq.fileio import write_error
from setseq.log import warn

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
DEFAULT_FPS = 8.0
MOTION_TOKEN = re.compile(r"\[u\d*\]")

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

_KEYED_LINE = re.compile(r"(static|motion)\s*:(.*)", re.IGNORECASE)
EXCERPT_KEYS = ("start", "duration", "select", "windows")
_SETTING_LINE = re.compile(r"(start|duration|select|windows)\s*:(.*)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?]\s+")


@dataclass
class Video:
    """A decoded clip, as a player shows it (display rotation, mirroring and pixel aspect applied).

    Attributes:
        frames: (F, C, H, W) float32 in [-1, 1], C = 3 (RGB).
        fps: frames per second of ``frames``.
        source: the path it came from.
        source_size: (height, width) of the source's first frame as displayed, before any resizing.
        alpha: (F, H, W) float32 in [0, 1], the source's opacity, or None when it has no alpha
            channel or is opaque everywhere.
        windows: for ``Excerpt(select="windows")``, the index of each window's first frame in
            ``frames`` (each window holds ``Excerpt.frames`` frames); None otherwise.
    """

    frames: torch.Tensor
    fps: float
    source: str
    source_size: tuple[int, int] | None = None
    alpha: torch.Tensor | None = None
    windows: list[int] | None = None


SELECTIONS = ("all", "head", "uniform", "windows")


@dataclass(frozen=True)
class Excerpt:
    """Which part of a clip to load, for clips longer than the model's window.

    Attributes:
        start: seconds into the clip (from its first frame) where the excerpt begins, >= 0.
        duration: seconds the excerpt lasts; None runs to the end of the clip.
        select: which frames of the excerpt are kept, at the output rate:
            ``all`` every one (default); ``head`` the first ``frames``; ``uniform`` ``frames``
            frames spread evenly over the excerpt (the output rate becomes frames / duration);
            ``windows`` ``windows`` runs of ``frames`` consecutive frames spread evenly over it.
        frames: frames per window (the model's clip length); needed by head, uniform and windows.
        windows: how many windows ``windows`` takes (>= 1).
    """

    start: float = 0.0
    duration: float | None = None
    select: str = "all"
    frames: int | None = None
    windows: int = 4

    def check(self) -> None:
        """Raise SetseqError on an out-of-range field."""
        if not (math.isfinite(self.start) and self.start >= 0):
            raise SetseqError(f"start must be a number of seconds >= 0, got {self.start!r}.")
        if self.duration is not None and not (math.isfinite(self.duration) and self.duration > 0):
            raise SetseqError(f"duration must be a positive number of seconds, got {self.duration!r}.")
        if self.select not in SELECTIONS:
            raise SetseqError(f"select must be one of {', '.join(SELECTIONS)}, got {self.select!r}.")
        if self.select != "all" and not (isinstance(self.frames, int) and self.frames >= 1):
            raise SetseqError(f"select={self.select!r} needs frames (the window length) >= 1, got {self.frames!r}.")
        if not (isinstance(self.windows, int) and self.windows >= 1):
            raise SetseqError(f"windows must be an integer >= 1, got {self.windows!r}.")


# ----------------------------------------------------------------------------- loading


def load_video(
    path: str | os.PathLike,
    *,
    fps: float | None = None,
    size: tuple[int, int] | None = None,
    min_frames: int = 1,
    max_frames: int | None = None,
    excerpt: Excerpt | None = None,
) -> Video:
    """Decode a video file or a directory of still images into a ``Video``, as a player shows it.

    Frames are decoded as a stream: each one the output needs is converted and resized as it
    arrives, the others are dropped, so memory holds the output only (plus a frame or two).
    Display transforms are applied: a container's display matrix (rotation and mirroring, e.g. a
    phone's portrait clip), the EXIF orientation of still images (needs Pillow; without it they
    are read as stored) and non-square pixels (sample aspect ratio). An alpha channel (e.g. VP9
    WebM with alpha, PNG frames) is returned as ``Video.alpha``. A file that decodes to much less
    than its container declares (cut short, damaged) gives a one-line warning and what is there.

    Args:
        path: a video file PyAV can decode (mp4, webm, mov, mkv, avi, gif, ...) or a directory
            of images (png/jpg/jpeg/webp/bmp) taken in natural name order (frame2 before frame10).
        fps: output frame rate. Output frame k is the source frame nearest in presentation time
            to t_0 + k / fps (the earlier one on a tie), whatever the source's nominal rate, so
            variable-rate clips keep their timing; frames are kept while at least half of output
            frame k lies within the source's duration. None keeps every frame at the source rate
            (8.0 for a directory or an unknown rate).
        size: (H, W) to resize to so the displayed frame covers H x W (aspect ratio kept), then
            centre-crop to exactly H x W. None keeps the displayed source size.
        min_frames: fewer frames than this (after resampling) is an error.
        max_frames: keep at most the first ``max_frames`` frames; decoding stops there.
        excerpt: which part of a long clip to keep (``Excerpt``); None keeps all of it.

    Returns:
        The Video, frames (F, 3, H, W) float32 in [-1, 1].

    Raises:
        SetseqError: a missing, unreadable or too short input, or an argument out of range.
    """
    path = Path(path)
    excerpt = excerpt or Excerpt()
    _check_load_args(path, fps, size, min_frames, max_frames)
    excerpt.check()
    with _timed_frames(path, fps, excerpt.start) as (timed, rate, declared, origin):
        step = fps or rate or DEFAULT_FPS
        times, need, out_fps, windows = _output_times(excerpt, step, declared, path)
        if fps is None and excerpt.select == "all":  # every source frame, at its own time
            picked = _every_frame(timed, excerpt, origin)
        else:
            picked = _nearest_in_time(timed, times, need, origin)
        frames = _FrameStore(path, size, len(times) if isinstance(times, list) else None)
        for t, frame in islice(picked, max_frames):
            frames.add(t, frame)
    out_fps = out_fps or fps or rate or _rate_from_times(frames.times)
    count = len(frames)
    if count < min_frames:
        raise SetseqError(
            f"{path} has {count} frames at {out_fps:g} fps but {min_frames} are needed; "
            "use a longer clip or a higher fps."
        )
    if windows is not None and count < len(windows) * excerpt.frames:  # the last windows ran past the end
        windows = [w for w in windows if w + excerpt.frames <= count]
    rgb, alpha = frames.result()
    return Video(
        frames=rgb, fps=float(out_fps), source=str(path), source_size=frames.source_size, alpha=alpha, windows=windows
    )


@dataclass(frozen=True)
class Probe:
    """What a clip looks like before it is decoded: the size it is shown at and how long it lasts.

    Attributes:
        size: (height, width) of its first frame as a player shows it (rotation, mirroring and the
            pixel aspect ratio applied), in square pixels; not rounded.
        duration: seconds the container declares (for a folder of frames: their number over the
            frame rate); None when it does not say.
    """

    size: tuple[float, float]
    duration: float | None


def probe_video(path: str | os.PathLike, fps: float | None = None) -> Probe:
    """Decode only the first frame of a clip (or folder of frames) to see its displayed size.

    Args:
        path: as for ``load_video``.
        fps: the rate a folder of frames is read at (as ``load_video``'s); ignored for a file.

    Raises:
        SetseqError: a missing or unreadable input, or one without frames.
    """
    path = Path(path)
    _check_load_args(path, fps, None, 1, None)
    with _timed_frames(path, fps) as (timed, rate, declared, _):
        first = next(iter(timed), None)
    if first is None:
        raise SetseqError(f"{path} holds no frames; pass a video with at least one frame.")
    frame, view = first[2]
    if path.is_dir():
        images = [f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")]
        declared = len(images) / rate
    return Probe(_shown_size(frame, view), declared)


def _shown_size(frame: av.VideoFrame, view: _View) -> tuple[float, float]:
    """(height, width) at which a stored frame is shown, in square pixels."""
    h, w = (frame.width, frame.height) if view.transpose else (frame.height, frame.width)  # displayed axes
    return (h * view.sar, w) if view.transpose else (h, w * view.sar)


def _check_load_args(path: Path, fps, size, min_frames: int, max_frames: int | None) -> None:
    if not path.exists():
        raise SetseqError(f"Video path {path} does not exist; check the path.")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise SetseqError(f"fps must be a positive number, got {fps!r}; pass e.g. fps=8.")
    if size is not None and not (len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
        raise SetseqError(f"size must be (height, width) with both positive integers, got {size!r}.")
    if max_frames is not None and max_frames < max(min_frames, 1):
        raise SetseqError(f"max_frames={max_frames} is below min_frames={min_frames} (or 1); raise max_frames.")


def _output_times(excerpt: Excerpt, step: float, declared: float | None, path: Path):
    """The output grid for an excerpt: (times, a list or an open-ended generator at ``step`` fps;
    how far past each time the source must reach, in seconds; the output rate when it is not
    ``step``; the window starts).
    Times are seconds from the source's first frame."""
    s, n = excerpt.start, excerpt.frames
    end = s + excerpt.duration if excerpt.duration is not None else declared
    if excerpt.select == "all":
        if excerpt.duration is None:
            return _open_grid(s, step), 0.5 / step, None, None
        count = max(0, math.floor(excerpt.duration * step + 0.5))  # output frames at least half inside
        return [s + k / step for k in range(count)], 0.5 / step, None, None
    if excerpt.select == "head":
        return [s + k / step for k in range(n)], 0.5 / step, None, None
    if end is None:
        raise SetseqError(
            f"{path} does not declare its duration, so frames cannot be spread over it; "
            "use select 'head' or 'all', or give a duration."
        )
    span = end - s
    if span <= 0:
        raise SetseqError(f"{path} lasts {declared:g} s, which ends before the start {s:g} s; lower the start.")
    if excerpt.select == "uniform":  # the centres of n equal parts of the span
        return [s + (k + 0.5) * span / n for k in range(n)], 0.0, n / span, None
    length = n / step  # windows of n frames at the output rate, as many as fit without overlap
    count = max(1, min(excerpt.windows, math.floor(span / length + 1e-9)))
    gap = (span - count * length) / (count - 1) if count > 1 else 0.0
    starts = [s + i * (length + gap) for i in range(count)]
    return [w + k / step for w in starts for k in range(n)], 0.5 / step, None, [i * n for i in range(count)]


def _open_grid(start: float, step: float) -> Iterator[float]:
    k = 0
    while True:
        yield start + k / step
        k += 1


@dataclass(frozen=True)
class _View:
    """How to show a stored frame: transpose, then flip rows / columns (rotation and mirroring);
    ``sar`` is the width of a stored pixel over its height (sample aspect ratio)."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False
    sar: float = 1.0


# EXIF orientation tag (0x0112) -> the view that shows the image upright (TIFF 6.0 / EXIF 2.3).
_EXIF_VIEWS = {
    2: _View(flip_cols=True),
    3: _View(flip_rows=True, flip_cols=True),
    4: _View(flip_rows=True),
    5: _View(transpose=True),
    6: _View(transpose=True, flip_cols=True),
    7: _View(transpose=True, flip_rows=True, flip_cols=True),
    8: _View(transpose=True, flip_rows=True),
}


@contextmanager
def _timed_frames(path: Path, fps: float | None, start: float = 0.0):
    """Open ``path`` and yield (frames, rate, declared, origin).

    ``frames`` iterates (time_s, duration_s, (av.VideoFrame, _View)) in presentation order;
    ``rate`` is the nominal source rate or None when the container does not say; ``declared``
    the duration in seconds the container declares, or None; ``origin`` the time of the
    stream's first frame when decoding starts after it (``start`` > 0 seeks), else None.
    """
    if path.is_dir():
        rate = fps or DEFAULT_FPS
        yield _image_frames(path, rate), rate, None, None
        return
    not_video = f"{path} is not a video PyAV can read"
    hint = "pass a video file (mp4, webm, mov, mkv, avi, gif) or a directory of images"
    try:
        container = av.open(str(path))
    except av.FFmpegError as e:
        raise SetseqError(f"{not_video} ({getattr(e, 'strerror', None) or e}); {hint}.") from None
    with container:
        if not container.streams.video:
            raise SetseqError(f"{not_video} (it has no video stream); {hint}.")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate) if stream.average_rate else None
        declared = _declared_duration(container, stream)
        origin = None
        try:
            if start > 0:
                tb = stream.time_base
                first = stream.start_time if stream.start_time is not None else 0
                origin = float(first * tb) if tb else 0.0
                if tb:
                    container.seek(first + int(start / tb), stream=stream, backward=True)
            frames = _stream_frames(
                container, stream, rate or DEFAULT_FPS, _alpha_decoder(stream, path), declared, path
            )
            yield frames, rate, declared, origin
        except av.FFmpegError as e:
            raise SetseqError(
                f"{not_video} (decoding failed: {getattr(e, 'strerror', None) or e}); re-encode it, e.g. to H.264 mp4."
            ) from None


def _declared_duration(container, stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration else None


def _has_decoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "r")
    except (av.codec.codec.UnknownCodecError, av.FFmpegError):
        return False
    return True


def _alpha_decoder(stream, path: Path):
    """A libvpx decoder for VP8/VP9 streams that carry alpha (WebM ``alpha_mode``): FFmpeg's native
    VP8/VP9 decoders drop the alpha plane, libvpx's decode it. None when not needed or not there."""
    alpha = any(k.lower() == "alpha_mode" and v == "1" for k, v in stream.metadata.items())
    codec = stream.codec_context.name
    if not alpha or codec not in ("vp8", "vp9"):
        return None
    name = "libvpx-vp9" if codec == "vp9" else "libvpx"
    if not _has_decoder(name):
        warn(
            f"{path} has an alpha channel, but this PyAV build has no {name} decoder to read it, so its "
            "transparent areas train as the colours stored under them; give a mask file (NAME.mask.mp4) instead."
        )
        return None
    decoder = av.CodecContext.create(name, "r")
    decoder.thread_type = "AUTO"
    return decoder


def _stream_frames(
    container, stream, rate: float, decoder, declared: float | None, path: Path
) -> Iterator[tuple[float, float, tuple[av.VideoFrame, _View]]]:
    """Decode packet by packet (with ``decoder`` when given, else the stream's own decoder). A packet
    that fails after some frames decoded ends the stream there (a file cut short); a clip that ends
    well before its declared duration is reported in one warning."""
    first = last = None
    damaged, packets, i, view = False, 0, 0, None
    context = decoder if decoder is not None else stream.codec_context
    for packet in container.demux(stream):
        try:
            decoded = context.decode(packet)
        except av.FFmpegError:
            if not packets:
                raise
            damaged = True  # a file cut short: its last packet is incomplete; keep what came before
            try:
                decoded = context.decode(None)  # the frames still inside a threaded decoder
            except av.FFmpegError:
                decoded = []
        packets += 1
        for frame in decoded:
            t = frame.time if frame.time is not None else i / rate
            dt = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else 1 / rate
            first = t if first is None else first
            last = (t, dt)
            i += 1
            # The display transform is the stream's: read once, as reading a frame's side data ties the
            # frame in a reference cycle (PyAV) that only the garbage collector frees (3 MB a 1080p frame).
            view = view or _frame_view(frame, stream)
            yield t, dt, (frame, view)
        if damaged:
            break
    if first is None:
        return
    got = last[0] + last[1] - first
    if damaged or (declared and got < 0.9 * declared and declared - got > 1.5 / rate):
        said = f" of the {declared:.2f} s its container declares" if declared else ""
        warn(
            f"{path} decodes to {got:.2f} s ({i} frames){said}: it is cut short or damaged (a half-downloaded "
            "file?); training on what is there."
        )


def _frame_view(frame: av.VideoFrame, stream) -> _View:
    """Display transform from the frame's display matrix (FFmpeg's layout: x' = a x + c y,
    y' = b x + d y, in 16.16 fixed point) and the sample aspect ratio."""
    sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    sar = float(sar) if sar and sar > 0 else 1.0
    for side in frame.side_data:
        if str(getattr(side.type, "name", side.type)).endswith("DISPLAYMATRIX"):
            a, b, _, c, d = np.frombuffer(bytes(side), dtype=np.int32)[:5].tolist()
            if abs(a) + abs(d) >= abs(b) + abs(c):
                return _View(False, d < 0, a < 0, sar)
            return _View(True, b < 0, c < 0, sar)
    return _View(sar=sar)


def _image_frames(folder: Path, rate: float) -> Iterator[tuple[float, float, tuple[av.VideoFrame, _View]]]:
    try:
        files = [f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")]
    except OSError as e:
        raise SetseqError(f"Could not list directory {folder} ({e.strerror}); check its permissions.") from None
    if not files:
        raise SetseqError(f"Directory {folder} has no images ({', '.join(IMAGE_SUFFIXES)}); put the frames there.")
    for i, file in enumerate(sorted(files, key=_natural_key)):
        yield i / rate, 1 / rate, (_read_image(file), _exif_view(file))


def _natural_key(file: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", file.name.lower())]


def _read_image(file: Path) -> av.VideoFrame:
    try:
        with av.open(str(file)) as container:
            return next(container.decode(video=0))
    except (av.FFmpegError, IndexError, StopIteration):
        raise SetseqError(
            f"{file} is not an image PyAV can read; re-save it or remove it from the directory."
        ) from None


def _exif_view(file: Path) -> _View:
    """The view given by an image's EXIF orientation; upright when it has none or Pillow is missing."""
    try:
        from PIL import Image
    except ImportError:
        return _View()
    try:
        with Image.open(file) as image:
            orientation = image.getexif().get(0x0112, 1)
    except Exception:  # Pillow cannot parse it: PyAV read it, so show it as stored
        return _View()
    return _EXIF_VIEWS.get(orientation, _View())


def _nearest_in_time(
    timed, times: Iterable[float], need: float, origin: float | None = None
) -> Iterator[tuple[float, tuple]]:
    """Yield (t_k, frame) for each output time t_k of ``times`` (seconds from ``origin``, by
    default the first frame's time; increasing), taking the source frame nearest to t_k (the
    earlier one on a tie), while t_k + ``need`` lies within the source's duration (``need`` is
    half an output frame: at least half of it is covered). Decoding stops once ``times`` ends."""
    times = iter(times)
    tk = next(times, None)
    prev, waiting, end = None, deque(), None
    for t, dt, frame in timed:
        origin = t if origin is None else origin
        while tk is not None and origin + tk <= t:  # decided: nothing later is nearer
            at = origin + tk
            waiting.append((at, prev[1] if prev is not None and at - prev[0] <= t - at else frame))
            tk = next(times, None)
        end = t + dt
        while waiting and waiting[0][0] + need <= end + 1e-6:  # covered: the source reaches past it
            yield waiting.popleft()
        prev = (t, frame)
        if tk is None and not waiting:
            return
    if prev is None or waiting:  # a waiting time not covered by the whole source: later ones are not
        return
    while tk is not None and origin + tk + need <= end + 1e-6:
        yield origin + tk, prev[1]
        tk = next(times, None)


def _every_frame(timed, excerpt: Excerpt, origin: float | None) -> Iterator[tuple[float, tuple]]:
    """Every source frame at its own time within the excerpt (for fps=None)."""
    for t, _, frame in timed:
        origin = t if origin is None else origin
        if excerpt.duration is not None and t - origin >= excerpt.start + excerpt.duration:
            return
        if t - origin >= excerpt.start - 1e-6:
            yield t, frame


def _rate_from_times(times: list[float]) -> float:
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return (len(times) - 1) / span if span > 0 else DEFAULT_FPS


class _FrameStore:
    """The output frames, each converted and resized as it arrives (the source frame is then
    dropped); written into one preallocated tensor when their number is known, so the stack
    never exists twice."""

    def __init__(self, source: Path, size: tuple[int, int] | None, capacity: int | None):
        self.source, self.size, self.capacity = source, size, capacity
        self.rgb: list[torch.Tensor] | torch.Tensor = []
        self.alpha: list[torch.Tensor | None] = []
        self.times: list[float] = []
        self.source_size: tuple[int, int] | None = None
        self._last = (None, None)
        self.to_rgb = SdrConverter(source)  # HDR and wide gamut as an SDR player shows them

    def __len__(self) -> int:
        return len(self.times)

    def add(self, t: float, item: tuple[av.VideoFrame, _View]) -> None:
        frame, view = item
        if self._last[0] is not frame:  # a frame picked twice (upsampling) is converted once
            self._last = (frame, _frame_to_tensor(frame, view, self.source, self.size, self.to_rgb))
        x, a, shown = self._last[1]
        self.source_size = self.source_size or shown
        if self.capacity is not None and self.size is not None:
            if not len(self.times):
                self.rgb = torch.empty((self.capacity, *x.shape), dtype=x.dtype)
            self.rgb[len(self.times)] = x
        else:
            self.rgb.append(x)
        self.alpha.append(a)
        self.times.append(t)

    def result(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        n = len(self.times)
        if isinstance(self.rgb, torch.Tensor):
            rgb = self.rgb[:n]
        else:
            shapes = {tuple(x.shape) for x in self.rgb}
            if len(shapes) > 1:
                raise SetseqError(
                    f"The frames of {self.source} differ in size {sorted(shapes)}; pass size=(H, W) to resize them."
                )
            rgb = torch.stack(self.rgb)
        alpha = None
        if all(a is not None for a in self.alpha) and {tuple(a.shape) for a in self.alpha} == {tuple(rgb.shape[2:])}:
            alpha = torch.stack(self.alpha)  # (F, H, W)
            alpha = alpha if bool((alpha < 0.999).any()) else None  # opaque everywhere: no alpha
        return rgb, alpha


def _frame_to_tensor(
    frame: av.VideoFrame, view: _View, source: Path, size: tuple[int, int] | None, to_rgb: SdrConverter
):
    """(rgb (3, H, W) in [-1, 1], alpha (H, W) in [0, 1] or None, displayed source (h, w))."""
    if frame.width == 0 or frame.height == 0:
        raise SetseqError(f"{source} has zero-size frames ({frame.width}x{frame.height}); re-encode it.")
    if size is not None:
        frame, view = _preshrink(frame, view, size)
    has_alpha = any(c.is_alpha for c in frame.format.components)
    pixels = torch.from_numpy(to_rgb(frame, "rgba" if has_alpha else "rgb24"))  # (h, w, 3 or 4) uint8, SDR BT.709
    x = pixels.permute(2, 0, 1).float()  # (3 or 4, h, w)
    x = torch.cat([x[:3] / 127.5 - 1.0, x[3:] / 255.0])
    if view.transpose:
        x = x.transpose(1, 2)
    flips = [d for d, flip in ((1, view.flip_rows), (2, view.flip_cols)) if flip]
    if flips:
        x = x.flip(flips)
    h, w = x.shape[-2:]
    shown = (h * view.sar, w) if view.transpose else (h, w * view.sar)  # displayed size: pixels made square
    if size is not None:
        x = _resize_cover(x, size, shown)
    elif view.sar != 1.0:
        x = _resize(x, (max(1, round(shown[0])), max(1, round(shown[1]))))
    shown = (round(shown[0]), round(shown[1]))
    return x[:3].contiguous(), (x[3].contiguous() if has_alpha else None), shown


def _preshrink(frame: av.VideoFrame, view: _View, size: tuple[int, int]) -> tuple[av.VideoFrame, _View]:
    """A frame more than twice the size it will be resized to (1080p for 480 x 832) is first shrunk
    by libswscale (area averaging) to twice that size, with square pixels, so that the float copy
    of a large frame never exists: memory and time go with the output size, not the source's."""
    shown = _shown_size(frame, view)
    scale = max(size[0] / shown[0], size[1] / shown[1])
    if scale >= 0.5:
        return frame, view
    th, tw = max(1, round(2 * scale * shown[0])), max(1, round(2 * scale * shown[1]))  # displayed, square pixels
    fh, fw = (tw, th) if view.transpose else (th, tw)  # in the stored orientation
    return frame.reformat(width=fw, height=fh, interpolation="AREA"), replace(view, sar=1.0)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    (nh, nw), (h, w) = size, x.shape[-2:]
    if (nh, nw) == (h, w):
        return x
    return F.interpolate(x[None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=nh < h or nw < w)[0]


def _resize_cover(x: torch.Tensor, size: tuple[int, int], shown: tuple[float, float] | None = None) -> torch.Tensor:
    """Resize (C, h, w), displayed as ``shown`` (h', w') (default (h, w): square pixels), to cover
    (H, W) keeping the displayed aspect ratio, then centre-crop to (C, H, W)."""
    (H, W), (h, w) = size, shown or x.shape[-2:]
    scale = max(H / h, W / w)
    nh, nw = max(H, round(h * scale)), max(W, round(w * scale))
    x = _resize(x, (nh, nw))
    top, left = (nh - H) // 2, (nw - W) // 2
    return x[:, top : top + H, left : left + W]


# ----------------------------------------------------------------------------- masks

MASK_SUFFIXES = (".mp4", ".webm", ".gif")


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


# ----------------------------------------------------------------------------- writing


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


# ----------------------------------------------------------------------------- prompts


def read_clip_file(video_path: str | os.PathLike) -> tuple[str | None, str | None, dict[str, str]]:
    """Read the ``.txt`` beside a video (format in the module docstring; ``.TXT`` is found too).

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
    """Parse prompt-file text (format in the module docstring).

    Args:
        text: the file's contents.
        source: how error messages name the text.

    Returns:
        (static prompt, motion prompt), each None when not given.
    """
    return parse_clip_text(text, source=source)[:2]


def excerpt_settings(values: dict, source: str) -> dict:
    """Check and convert excerpt settings (from a prompt file, a TOML table or flags) to
    ``Excerpt`` fields: start, duration (seconds), select (one of SELECTIONS), windows (count).

    Raises:
        SetseqError: an unknown key or a value out of range, naming ``source``.
    """
    out = {}
    for key, value in values.items():
        if key not in EXCERPT_KEYS:
            raise SetseqError(f"{source}: unknown setting {key!r}; known: {', '.join(EXCERPT_KEYS)}.")
        try:
            if key == "select":
                out[key] = str(value).strip().lower()
                ok = out[key] in SELECTIONS
                what = f"one of {', '.join(SELECTIONS)}"
            elif key == "windows":
                out[key] = int(str(value).strip())
                ok, what = out[key] >= 1, "a whole number >= 1"
            else:
                out[key] = float(str(value).strip())
                ok = math.isfinite(out[key]) and (out[key] > 0 if key == "duration" else out[key] >= 0)
                what = "a number of seconds " + ("> 0" if key == "duration" else ">= 0")
        except ValueError:
            ok, what = False, "a number" if key != "select" else f"one of {', '.join(SELECTIONS)}"
        if not ok:
            raise SetseqError(f"{source}: {key} must be {what}, got {value!r}.")
    return out


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


# ----------------------------------------------------------------------------- sampling


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
