"""Decoding: a video file or a frame folder becomes a ``Video`` of float frames, as a player shows it.

Everything is decoded with PyAV; frames in memory are float32 tensors shaped (F, C, H, W) with C = 3
(RGB) and values in [-1, 1].

- Display geometry (rotation, mirroring, pixel aspect, EXIF orientation): ``setseq.video.display``.
- Timing (presentation timestamps, excerpts, windows): ``setseq.video.timing``.
- Alpha: an alpha channel (VP8/VP9 WebM with alpha, decoded with libvpx; PNG frames; ...) is kept
  as ``Video.alpha``; the trainer uses it as the foreground mask when no mask file is given.
- Damage: a file that decodes to much less than its container declares (cut short, half
  downloaded) gives a one-line warning and trains on what is there.
- Long clips: decoding is a stream; only the output frames are kept, resized as they arrive.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import av
import torch

from setseq.colour import SdrConverter
from setseq.errors import SetseqError
from setseq.log import warn
from setseq.video.display import View, frame_to_tensor, frame_view, shown_size
from setseq.video.frames import IMAGE_SUFFIXES, image_frames
from setseq.video.timing import (
    DEFAULT_FPS,
    Excerpt,
    every_frame,
    nearest_in_time,
    output_times,
    rate_from_times,
)


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
        times, need, out_fps, windows = output_times(excerpt, step, declared, path)
        if fps is None and excerpt.select == "all":  # every source frame, at its own time
            picked = every_frame(timed, excerpt, origin)
        else:
            picked = nearest_in_time(timed, times, need, origin)
        frames = _FrameStore(path, size, len(times) if isinstance(times, list) else None)
        for t, frame in islice(picked, max_frames):
            frames.add(t, frame)
    out_fps = out_fps or fps or rate or rate_from_times(frames.times)
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
    return Probe(shown_size(frame, view), declared)


def _check_load_args(path: Path, fps, size, min_frames: int, max_frames: int | None) -> None:
    if not path.exists():
        raise SetseqError(f"Video path {path} does not exist; check the path.")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise SetseqError(f"fps must be a positive number, got {fps!r}; pass e.g. fps=8.")
    if size is not None and not (len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
        raise SetseqError(f"size must be (height, width) with both positive integers, got {size!r}.")
    if max_frames is not None and max_frames < max(min_frames, 1):
        raise SetseqError(f"max_frames={max_frames} is below min_frames={min_frames} (or 1); raise max_frames.")


@contextmanager
def _timed_frames(path: Path, fps: float | None, start: float = 0.0):
    """Open ``path`` and yield (frames, rate, declared, origin).

    ``frames`` iterates (time_s, duration_s, (av.VideoFrame, View)) in presentation order;
    ``rate`` is the nominal source rate or None when the container does not say; ``declared``
    the duration in seconds the container declares, or None; ``origin`` the time of the
    stream's first frame when decoding starts after it (``start`` > 0 seeks), else None.
    """
    if path.is_dir():
        rate = fps or DEFAULT_FPS
        yield image_frames(path, rate), rate, None, None
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
) -> Iterator[tuple[float, float, tuple[av.VideoFrame, View]]]:
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
            view = view or frame_view(frame, stream)
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

    def add(self, t: float, item: tuple[av.VideoFrame, View]) -> None:
        frame, view = item
        if self._last[0] is not frame:  # a frame picked twice (upsampling) is converted once
            self._last = (frame, frame_to_tensor(frame, view, self.source, self.size, self.to_rgb))
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
