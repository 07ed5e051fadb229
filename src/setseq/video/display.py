"""Display transforms: a stored frame becomes the picture a player shows, as a tensor.

A container's display matrix (a phone's rotation, ``ffmpeg -display_rotation``, mirroring), the EXIF
orientation of a still image and non-square pixels (the sample aspect ratio) are applied before
resizing, so what a player shows is what trains. Large frames are first shrunk by libswscale, so
memory goes with the output size, not the source's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from setseq.colour import SdrConverter
from setseq.errors import SetseqError


@dataclass(frozen=True)
class View:
    """How to show a stored frame: transpose, then flip rows / columns (rotation and mirroring);
    ``sar`` is the width of a stored pixel over its height (sample aspect ratio)."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False
    sar: float = 1.0


# EXIF orientation tag (0x0112) -> the view that shows the image upright (TIFF 6.0 / EXIF 2.3).
EXIF_VIEWS = {
    2: View(flip_cols=True),
    3: View(flip_rows=True, flip_cols=True),
    4: View(flip_rows=True),
    5: View(transpose=True),
    6: View(transpose=True, flip_cols=True),
    7: View(transpose=True, flip_rows=True, flip_cols=True),
    8: View(transpose=True, flip_rows=True),
}


def shown_size(frame: av.VideoFrame, view: View) -> tuple[float, float]:
    """(height, width) at which a stored frame is shown, in square pixels."""
    h, w = (frame.width, frame.height) if view.transpose else (frame.height, frame.width)  # displayed axes
    return (h * view.sar, w) if view.transpose else (h, w * view.sar)


def frame_view(frame: av.VideoFrame, stream) -> View:
    """Display transform from the frame's display matrix (FFmpeg's layout: x' = a x + c y,
    y' = b x + d y, in 16.16 fixed point) and the sample aspect ratio."""
    sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    sar = float(sar) if sar and sar > 0 else 1.0
    # Iterating side_data gives the side data up to PyAV 18.1.0 and their types from 18.1.1 on.
    for item in frame.side_data:
        side = item if hasattr(item, "type") else frame.side_data[item]
        if str(getattr(side.type, "name", side.type)).endswith("DISPLAYMATRIX"):
            a, b, _, c, d = np.frombuffer(bytes(side), dtype=np.int32)[:5].tolist()
            if abs(a) + abs(d) >= abs(b) + abs(c):
                return View(False, d < 0, a < 0, sar)
            return View(True, b < 0, c < 0, sar)
    return View(sar=sar)


def frame_to_tensor(
    frame: av.VideoFrame, view: View, source: Path, size: tuple[int, int] | None, to_rgb: SdrConverter | None = None
):
    """(rgb (3, H, W) in [-1, 1], alpha (H, W) in [0, 1] or None, displayed source (h, w)).

    to_rgb: the clip's converter to SDR BT.709 (`setseq.colour`); None: PyAV's plain conversion."""
    if frame.width == 0 or frame.height == 0:
        raise SetseqError(f"{source} has zero-size frames ({frame.width}x{frame.height}); re-encode it.")
    if size is not None:
        frame, view = _preshrink(frame, view, size)
    has_alpha = any(c.is_alpha for c in frame.format.components)
    fmt = "rgba" if has_alpha else "rgb24"
    pixels = torch.from_numpy(to_rgb(frame, fmt) if to_rgb else frame.to_ndarray(format=fmt))  # (h, w, 3|4) uint8
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


def _preshrink(frame: av.VideoFrame, view: View, size: tuple[int, int]) -> tuple[av.VideoFrame, View]:
    """A frame more than twice the size it will be resized to (1080p for 480 x 832) is first shrunk
    by libswscale (area averaging) to twice that size, with square pixels, so that the float copy
    of a large frame never exists: memory and time go with the output size, not the source's."""
    shown = shown_size(frame, view)
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
