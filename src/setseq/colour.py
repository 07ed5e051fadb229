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
from av.video.reformatter import VideoReformatter

from setseq.log import warn

# FFmpeg's enum values (libavutil/pixfmt.h; stable across versions, so older PyAV, which lacks
# the ColorTrc and ColorPrimaries enums, is served too).
TRC_BT709, TRC_PQ, TRC_HLG = 1, 16, 18
PRIMARIES_BT709 = 1
RANGE_LIMITED, RANGE_FULL = 1, 2
# What needs mapping to show on an SDR BT.709 screen: HDR transfers and primaries wider than BT.709.
HDR_TRANSFERS = {TRC_PQ: "PQ (SMPTE ST 2084, HDR10)", TRC_HLG: "HLG (ARIB STD-B67)"}
WIDE_PRIMARIES = {9: "BT.2020", 11: "DCI-P3", 12: "Display P3"}
# FFmpeg's AVColorSpace (what a frame declares) -> libswscale's SWS_CS_* coefficient set (what
# PyAV's src_colorspace takes): BT.709, FCC, BT.470BG, SMPTE 170M, SMPTE 240M, BT.2020 (NCL and CL).
_MATRICES = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}

RE_ENCODE = (
    "re-encode it to SDR first, e.g. `ffmpeg -i IN -vf zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,"
    "tonemap=hable,zscale=t=bt709:m=bt709:r=tv,format=yuv420p OUT.mp4`, or install PyAV >= 18"
)


def hdr_description(frame: av.VideoFrame) -> str | None:
    """What makes ``frame`` need mapping for an SDR BT.709 screen ("HLG (ARIB STD-B67) transfer with
    BT.2020 primaries"), or None when it is SDR with BT.709-like primaries (or declares nothing)."""
    trc = HDR_TRANSFERS.get(int(getattr(frame, "color_trc", 2)))
    primaries = WIDE_PRIMARIES.get(int(getattr(frame, "color_primaries", 2)))
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
        if int(frame.color_range) in (RANGE_LIMITED, RANGE_FULL):
            matrix["src_color_range"] = int(frame.color_range)
        what = hdr_description(frame)
        if what is not None:
            try:
                out = self._reformatter.reformat(
                    frame,
                    format=format,
                    dst_color_trc=TRC_BT709,
                    dst_color_primaries=PRIMARIES_BT709,
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
