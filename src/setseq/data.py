"""Video input/output: decode clips into tensors, write videos and previews, read prompt files.

Everything is decoded and encoded with PyAV; frames in memory are float32 tensors shaped
(F, C, H, W) with C = 3 (RGB) and values in [-1, 1].

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

Example (one line): ``A [v] dancer in a red dress. The [v] dancer [u] spins twice.`` gives
static ``A [v] dancer in a red dress.`` and motion ``The [v] dancer [u] spins twice.``

Mask videos
-----------
A clip may have a foreground mask beside it, found by name: ``dancer.mp4`` -> ``dancer.mask.mp4``
(or ``.webm``, ``.gif``, or a folder of frames ``dancer.mask/``; for a frame folder ``frames/`` ->
``frames.mask.mp4`` ...). White marks the subject. It is read like its clip (resampled to the
clip's frame rate, resized to cover and centre-cropped the same way), then thresholded at half
brightness; it must then have the clip's frame count, and its source frames the clip's aspect ratio.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from itertools import islice
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from setseq.errors import SetseqError

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
_SENTENCE_END = re.compile(r"[.!?]\s+")


@dataclass
class Video:
    """A decoded clip.

    Attributes:
        frames: (F, C, H, W) float32 in [-1, 1], C = 3 (RGB).
        fps: frames per second of ``frames``.
        source: the path it came from.
        source_size: (height, width) of the source's first frame, before any resizing.
    """

    frames: torch.Tensor
    fps: float
    source: str
    source_size: tuple[int, int] | None = None


# ----------------------------------------------------------------------------- loading


def load_video(
    path: str | os.PathLike,
    *,
    fps: float | None = None,
    size: tuple[int, int] | None = None,
    min_frames: int = 1,
    max_frames: int | None = None,
) -> Video:
    """Decode a video file or a directory of still images into a ``Video``.

    Args:
        path: a video file PyAV can decode (mp4, webm, mov, mkv, avi, gif, ...) or a directory
            of images (png/jpg/jpeg/webp/bmp) taken in natural name order (frame2 before frame10).
        fps: output frame rate. When it differs from the source rate, each output time k/fps
            takes the source frame nearest in presentation time, covering the source duration.
            None keeps every frame at the source rate (8.0 for a directory or an unknown rate).
        size: (H, W) to resize to so the frame covers H x W (aspect ratio kept), then
            centre-crop to exactly H x W. None keeps the source size.
        min_frames: fewer frames than this (after resampling) is an error.
        max_frames: keep at most the first ``max_frames`` frames; decoding stops there.

    Returns:
        The Video, frames (F, 3, H, W) float32 in [-1, 1].
    """
    path = Path(path)
    _check_load_args(path, fps, size, min_frames, max_frames)
    with _timed_frames(path, fps) as (timed, rate):
        if fps is None or (rate is not None and math.isclose(fps, rate, rel_tol=1e-6)):
            picked = ((t, frame) for t, _, frame in timed)
        else:
            picked = _nearest_in_time(timed, fps)
        kept, source_size = [], None
        for t, frame in islice(picked, max_frames):
            source_size = source_size or (frame.height, frame.width)
            kept.append((t, _frame_to_tensor(frame, path, size)))
    out_fps = fps or rate or _rate_from_times([t for t, _ in kept])
    if len(kept) < min_frames:
        raise SetseqError(
            f"{path} has {len(kept)} frames at {out_fps:g} fps but {min_frames} are needed; "
            "use a longer clip or a higher fps."
        )
    shapes = {tuple(x.shape) for _, x in kept}
    if len(shapes) > 1:
        raise SetseqError(f"The frames of {path} differ in size {sorted(shapes)}; pass size=(H, W) to resize them.")
    return Video(frames=torch.stack([x for _, x in kept]), fps=float(out_fps), source=str(path), source_size=source_size)


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
def _timed_frames(path: Path, fps: float | None):
    """Open ``path`` and yield (frames, rate).

    ``frames`` iterates (time_s, duration_s, av.VideoFrame) in presentation order; ``rate`` is
    the nominal source rate or None when the container does not say.
    """
    if path.is_dir():
        rate = fps or DEFAULT_FPS
        yield _image_frames(path, rate), rate
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
        try:
            yield _stream_frames(container, stream, rate or DEFAULT_FPS), rate
        except av.FFmpegError as e:
            raise SetseqError(
                f"{not_video} (decoding failed: {getattr(e, 'strerror', None) or e}); re-encode it, e.g. to H.264 mp4."
            ) from None


def _stream_frames(container, stream, rate: float) -> Iterator[tuple[float, float, av.VideoFrame]]:
    for i, frame in enumerate(container.decode(stream)):
        t = frame.time if frame.time is not None else i / rate
        dt = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else 1 / rate
        yield t, dt, frame


def _image_frames(folder: Path, rate: float) -> Iterator[tuple[float, float, av.VideoFrame]]:
    try:
        files = [f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")]
    except OSError as e:
        raise SetseqError(f"Could not list directory {folder} ({e.strerror}); check its permissions.") from None
    if not files:
        raise SetseqError(f"Directory {folder} has no images ({', '.join(IMAGE_SUFFIXES)}); put the frames there.")
    for i, file in enumerate(sorted(files, key=_natural_key)):
        yield i / rate, 1 / rate, _read_image(file)


def _natural_key(file: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", file.name.lower())]


def _read_image(file: Path) -> av.VideoFrame:
    try:
        with av.open(str(file)) as container:
            return next(container.decode(video=0))
    except (av.FFmpegError, IndexError, StopIteration):
        raise SetseqError(f"{file} is not an image PyAV can read; re-save it or remove it from the directory.") from None


def _nearest_in_time(
    timed: Iterable[tuple[float, float, av.VideoFrame]], fps: float
) -> Iterator[tuple[float, av.VideoFrame]]:
    """Yield (t_k, frame) for t_k = t_0 + k / fps, taking the source frame nearest to t_k (the
    earlier one on a tie), while at least half of output frame k lies within the source's duration."""
    k, prev = 0, None
    for t, dt, frame in timed:
        if prev is None:
            t0 = t
        else:
            while (tk := t0 + k / fps) <= t:
                yield tk, (prev[1] if tk - prev[0] <= t - tk else frame)
                k += 1
        prev = (t, frame, dt)
    if prev is not None:
        while (tk := t0 + k / fps) + 0.5 / fps <= prev[0] + prev[2] + 1e-6:
            yield tk, prev[1]
            k += 1


def _rate_from_times(times: list[float]) -> float:
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return (len(times) - 1) / span if span > 0 else DEFAULT_FPS


def _frame_to_tensor(frame: av.VideoFrame, source: Path, size: tuple[int, int] | None) -> torch.Tensor:
    if frame.width == 0 or frame.height == 0:
        raise SetseqError(f"{source} has zero-size frames ({frame.width}x{frame.height}); re-encode it.")
    rgb = torch.from_numpy(frame.to_ndarray(format="rgb24"))  # (h, w, 3) uint8
    x = rgb.permute(2, 0, 1).float() / 127.5 - 1.0  # (3, h, w)
    return x if size is None else _resize_cover(x, size)


def _resize_cover(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize (C, h, w) to cover (H, W) keeping the aspect ratio, then centre-crop to (C, H, W)."""
    (H, W), (h, w) = size, x.shape[-2:]
    scale = max(H / h, W / w)
    nh, nw = max(H, round(h * scale)), max(W, round(w * scale))
    if (nh, nw) != (h, w):
        x = F.interpolate(x[None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=scale < 1)[0]
    top, left = (nh - H) // 2, (nw - W) // 2
    return x[:, top : top + H, left : left + W]


# ----------------------------------------------------------------------------- masks

MASK_SUFFIXES = (".mp4", ".webm", ".gif")


def find_mask(video_path: str | os.PathLike) -> Path | None:
    """The foreground mask beside a clip (see "Mask videos" in the module docstring), or None.

    Args:
        video_path: the clip (``dancer.mp4``) or its frame directory (``frames/``).
    """
    video_path = Path(video_path)
    stem = video_path.name if video_path.is_dir() else video_path.stem
    for suffix in MASK_SUFFIXES:
        if (candidate := video_path.parent / f"{stem}.mask{suffix}").is_file():
            return candidate
    folder = video_path.parent / f"{stem}.mask"
    return folder if folder.is_dir() else None


def is_mask_path(path: str | os.PathLike) -> bool:
    """Whether a path is named like a mask video (``NAME.mask.mp4`` or a folder ``NAME.mask/``)."""
    path = Path(path)
    return path.name.endswith(".mask") if path.is_dir() else path.stem.endswith(".mask")


def load_mask(path: str | os.PathLike, clip: Video, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Read a foreground mask (white = subject) for a clip, resampled and resized exactly as the clip.

    Args:
        path: the mask video or frame directory.
        clip: the clip as ``load_video`` returned it (its frame rate and source size are used).
        size: the (H, W) the clip was loaded with; None when it kept its source size.

    Returns:
        (F, H, W) bool, True on the subject, with F, H, W those of ``clip.frames``.
    """
    path = Path(path)
    mask = load_video(path, fps=clip.fps, size=size)
    n, _, H, W = clip.frames.shape
    m, _, h, w = mask.frames.shape
    fix = "make the mask from the clip itself (same length and aspect ratio), or leave it out"
    if clip.source_size and mask.source_size and not _same_aspect(clip.source_size, mask.source_size):
        (ch, cw), (mh, mw) = clip.source_size, mask.source_size
        raise SetseqError(f"mask {path} is {mw}x{mh} but its clip {clip.source} is {cw}x{ch}, "
                          f"a different aspect ratio, so they cannot be aligned; {fix}.")
    if (m, h, w) != (n, H, W):
        raise SetseqError(f"mask {path} has {m} frames of {w}x{h} at {clip.fps:g} fps but its clip {clip.source} "
                          f"has {n} frames of {W}x{H}; {fix}.")
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
        raise SetseqError(f"Could not write {path} ({e}); check that its directory is writable.") from None
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
    raise SetseqError(f"Cannot write {path}: no encoder for '{suffix}' in this PyAV build; use one of {', '.join(usable)}.")


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


def make_test_video(path: str | os.PathLike, frames: int = 12, size: tuple[int, int] = (32, 48), fps: float = 8.0) -> Path:
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


def read_prompt_file(video_path: str | os.PathLike) -> tuple[str | None, str | None]:
    """Read the prompts from the ``.txt`` beside a video (format in the module docstring).

    Args:
        video_path: the video file (``dancer.mp4`` -> ``dancer.txt``) or frame directory
            (``frames/`` -> ``frames.txt``).

    Returns:
        (static prompt, motion prompt), each None when not given; (None, None) without a file.
    """
    video_path = Path(video_path)
    stem = video_path.name if video_path.is_dir() else video_path.stem
    txt = video_path.parent / f"{stem}.txt"
    if not txt.is_file():
        return None, None
    try:
        text = txt.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise SetseqError(f"Could not read prompt file {txt} ({e}); save it as UTF-8 text.") from None
    return parse_prompts(text, source=f"Prompt file {txt}")


def parse_prompts(text: str, *, source: str = "The prompt text") -> tuple[str | None, str | None]:
    """Parse prompt-file text (format in the module docstring).

    Args:
        text: the file's contents.
        source: how error messages name the text.

    Returns:
        (static prompt, motion prompt), each None when not given.
    """
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
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
