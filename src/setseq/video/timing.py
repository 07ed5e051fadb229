"""Timing, excerpts and windows: which source frames become output frames.

Frames are placed by their presentation timestamps, so variable-rate clips keep their timing whatever
their average rate. An ``Excerpt`` picks a part of a long clip (start, duration) and which frames of it
(all, head, a uniform spread, or several windows of the model's length).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from setseq.errors import SetseqError

DEFAULT_FPS = 8.0


EXCERPT_KEYS = ("start", "duration", "select", "windows")


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


def output_times(excerpt: Excerpt, step: float, declared: float | None, path: Path):
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


def nearest_in_time(
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


def every_frame(timed, excerpt: Excerpt, origin: float | None) -> Iterator[tuple[float, tuple]]:
    """Every source frame at its own time within the excerpt (for fps=None)."""
    for t, _, frame in timed:
        origin = t if origin is None else origin
        if excerpt.duration is not None and t - origin >= excerpt.start + excerpt.duration:
            return
        if t - origin >= excerpt.start - 1e-6:
            yield t, frame


def rate_from_times(times: list[float]) -> float:
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return (len(times) - 1) / span if span > 0 else DEFAULT_FPS


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


# ----------------------------------------------------------------------------- sampling
