"""Colour as a player shows it on an ordinary (SDR BT.709) screen, for decoded frames.

Phones record HDR by default: an HLG or PQ transfer, BT.2020 primaries, 10 bits. Read as if it
were SDR BT.709, such a clip trains with washed-out colours and flat contrast. Here a frame is
converted the way a player does: FFmpeg's libswscale (through PyAV's ``VideoReformatter``) maps
the declared transfer and primaries to BT.709, tone-mapping HDR and gamut-mapping wide colours;
no colour maths of our own. The colour matrix (BT.601, BT.709, BT.2020) and range (limited or
full) a file declares are honoured as well; a file that declares none is read with libswscale's
defaults (BT.601, limited), as FFmpeg reads it.

Where this PyAV build cannot convert (PyAV before 18, or a transfer its libswscale does not
know), the clip is read as stored and one warning names the transfer and what to do.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc, VideoReformatter

from setseq.log import warn

# What needs mapping to show on an SDR BT.709 screen: HDR transfers and primaries wider than BT.709.
HDR_TRANSFERS = {
    int(ColorTrc.SMPTE2084): "PQ (SMPTE ST 2084, HDR10)",
    int(ColorTrc.ARIB_STD_B67): "HLG (ARIB STD-B67)",
}
WIDE_PRIMARIES = {
    int(ColorPrimaries.BT2020): "BT.2020",
    int(ColorPrimaries.SMPTE431): "DCI-P3",
    int(ColorPrimaries.SMPTE432): "Display P3",
}
# FFmpeg's AVColorSpace (what a frame declares) -> libswscale's coefficient set (what PyAV takes).
_MATRICES = {1: Colorspace.ITU709, 4: Colorspace.FCC, 5: Colorspace.ITU601, 6: Colorspace.SMPTE170M}
_MATRICES.update({7: Colorspace.SMPTE240M, 9: Colorspace.BT2020, 10: Colorspace.BT2020})

RE_ENCODE = (
    "re-encode it to SDR first, e.g. `ffmpeg -i IN -vf zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,"
    "tonemap=hable,zscale=t=bt709:m=bt709:r=tv,format=yuv420p OUT.mp4`, or install PyAV >= 18"
)


def hdr_description(frame: av.VideoFrame) -> str | None:
    """What makes ``frame`` need mapping for an SDR BT.709 screen ("HLG (ARIB STD-B67) transfer with
    BT.2020 primaries"), or None when it is SDR with BT.709-like primaries (or declares nothing)."""
    trc, primaries = HDR_TRANSFERS.get(int(frame.color_trc)), WIDE_PRIMARIES.get(int(frame.color_primaries))
    if trc and primaries:
        return f"{trc} transfer with {primaries} primaries"
    if trc:
        return f"{trc} transfer"
    return f"{primaries} primaries" if primaries else None


class SdrConverter:
    """Decoded frames of one source -> RGB as an SDR BT.709 player shows them.

    One converter per source: libswscale builds its tone-mapping table once (a few seconds on a
    CPU) and reuses it for every frame of the same size and colour description.

    Args:
        source: the file the frames come from (named in the warning).
    """

    def __init__(self, source: str | Path = "the clip"):
        self.source = str(source)
        self._reformatter = VideoReformatter()
        self._warned = False

    def __call__(self, frame: av.VideoFrame, format: str = "rgb24") -> np.ndarray:
        """``frame`` as (h, w, C) uint8, C = 3 (``rgb24``) or 4 (``rgba``), in BT.709 SDR colours.

        The declared matrix and range are used (explicitly, so older PyAV, whose default was
        BT.601 limited whatever the frame said, reads them too); HDR transfers and wide primaries
        are mapped to BT.709 by libswscale. Where that fails, the frame is read as stored after one
        warning that names the transfer.
        """
        matrix = {"src_colorspace": _MATRICES[int(frame.colorspace)]} if int(frame.colorspace) in _MATRICES else {}
        if int(frame.color_range) in (int(ColorRange.MPEG), int(ColorRange.JPEG)):
            matrix["src_color_range"] = ColorRange(int(frame.color_range))
        what = hdr_description(frame)
        if what is not None:
            try:
                out = self._reformatter.reformat(
                    frame,
                    format=format,
                    dst_color_trc=ColorTrc.BT709,
                    dst_color_primaries=ColorPrimaries.BT709,
                    **matrix,
                )
                return out.to_ndarray()
            except (TypeError, ValueError, av.FFmpegError) as e:  # PyAV < 18 (no dst_color_trc), or libswscale refused
                if not self._warned:
                    self._warned = True
                    warn(
                        f"{self.source} is HDR or wide-gamut video ({what}) that this PyAV build cannot map to SDR "
                        f"BT.709 ({e}), so it trains with washed-out colours; {RE_ENCODE}."
                    )
        return frame.to_ndarray(format=format, **matrix)
