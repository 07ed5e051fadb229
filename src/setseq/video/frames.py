"""Frame folders and stills: a directory of images read as a clip, in natural name order.

Each image is decoded with PyAV; its EXIF orientation (read with Pillow when it is installed) says how
it is shown. A folder has no timestamps: frame k is at k / rate seconds.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import av

from setseq.errors import SetseqError
from setseq.video.display import EXIF_VIEWS, View

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def image_frames(folder: Path, rate: float) -> Iterator[tuple[float, float, tuple[av.VideoFrame, View]]]:
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


def _exif_view(file: Path) -> View:
    """The view given by an image's EXIF orientation; upright when it has none or Pillow is missing."""
    try:
        from PIL import Image
    except ImportError:
        return View()
    try:
        with Image.open(file) as image:
            orientation = image.getexif().get(0x0112, 1)
    except Exception:  # Pillow cannot parse it: PyAV read it, so show it as stored
        return View()
    return EXIF_VIEWS.get(orientation, View())
