"""Colour as an SDR player shows it: HDR (PQ, HLG) and BT.2020 clips are tone- and gamut-mapped to
BT.709, and the colour matrix and range a file declares are honoured. Each clip is built here: its
Y'CbCr samples are computed from the standards' formulas (ST 2084, BT.2100 HLG, BT.2020 and BT.601
/ BT.709 matrices), written straight into the planes and encoded losslessly, so the expected RGB is
known independently of the decoder that is tested."""

import av
import numpy as np
import pytest

from setseq import colour
from setseq.data import load_video

# SDR BT.709 code values (0..1) of the patches: light grey, mid grey, dark grey, an orange.
PATCHES = np.array([[0.8, 0.8, 0.8], [0.5, 0.5, 0.5], [0.2, 0.2, 0.2], [0.5, 0.2, 0.05]])
BT709_TO_BT2020 = np.array([[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]])  # BT.2087
REFERENCE_WHITE = 203.0  # cd/m2, HDR reference white = SDR white (BT.2408)
SIZE = 64  # frames are SIZE x SIZE, one vertical band per patch


def _pq(nits):
    """ST 2084 inverse EOTF: absolute display light -> signal in [0, 1]."""
    m1, m2, c1, c2, c3 = 2610 / 16384, 2523 / 4096 * 128, 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    y = (np.asarray(nits, float) / 10000) ** m1
    return ((c1 + c2 * y) / (1 + c3 * y)) ** m2


def _hlg(display, peak=1000.0):
    """BT.2100 HLG: display light (cd/m2, BT.2020 RGB) -> signal, through the inverse OOTF (gamma 1.2)
    and the OETF."""
    d = np.asarray(display, float) / peak
    ys = (d @ np.array([0.2627, 0.6780, 0.0593])) ** (1 / 1.2)  # scene luminance
    e = d / np.maximum(ys, 1e-9)[..., None] ** 0.2
    a, b, c = 0.17883277, 0.28466892, 0.55991073
    return np.where(e <= 1 / 12, np.sqrt(3 * e), a * np.log(np.maximum(12 * e - b, 1e-9)) + c)


def _ycbcr(rgb, kr, kb, bits, full):
    """Non-linear R'G'B' in [0, 1] -> integer Y', Cb, Cr samples (limited or full range)."""
    r, g, b = np.moveaxis(np.asarray(rgb, float), -1, 0)
    y = kr * r + (1 - kr - kb) * g + kb * b
    cb, cr = (b - y) / (2 * (1 - kb)), (r - y) / (2 * (1 - kr))
    top = 2**bits - 1
    if full:
        return np.round(top * y), np.round(2 ** (bits - 1) + top * cb), np.round(2 ** (bits - 1) + top * cr)
    s = 2 ** (bits - 8)
    return np.round(s * (16 + 219 * y)), np.round(s * (128 + 224 * cb)), np.round(s * (128 + 224 * cr))


def _encode_bands(path, samples, *, codec, pix_fmt, options, trc, primaries, matrix, full):
    """Two frames of vertical bands, band k holding the samples (Y', Cb, Cr)[k], tagged as given."""
    bands = len(samples[0])
    dtype = np.uint16 if pix_fmt.endswith("10le") else np.uint8
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=8, options=options)
        s.width, s.height, s.pix_fmt = SIZE, SIZE, pix_fmt
        cc = s.codec_context
        cc.color_trc, cc.color_primaries, cc.colorspace = trc, primaries, matrix
        cc.color_range = {None: 0, False: 1, True: 2}[full]  # None: undeclared
        for i in range(2):
            frame = av.VideoFrame(SIZE, SIZE, pix_fmt)
            for plane, values in zip(frame.planes, samples):
                width = plane.line_size // np.dtype(dtype).itemsize
                row = np.repeat(np.asarray(values), plane.width // bands)
                row = np.pad(row, (0, width - len(row)), mode="edge")
                plane.update(np.tile(row, (plane.height, 1)).astype(dtype).tobytes())
            frame.pts = i
            c.mux(_with_dts(s.encode(frame)))
        c.mux(_with_dts(s.encode(None)))
    return path


def _with_dts(packets):
    """libx265 in the PyAV 18.1 wheels leaves the packets' decode time stamps uninitialised (seen:
    -2**32, -2**57, ...); a muxer refuses a packet whose dts lies after its pts, so the clip failed
    to write at random. Without B-frames decode order is presentation order, so dts = pts is exact."""
    for p in packets:
        p.dts = p.pts
    return packets


def _band_colours(path) -> np.ndarray:
    """(bands, 3) RGB 0..255 at the centre of each band, through setseq's loader."""
    frames = load_video(path).frames  # (F, 3, H, W) in [-1, 1]
    rgb = (frames[0] + 1) * 127.5
    bands = len(PATCHES)
    return np.stack([rgb[:, SIZE // 2, (2 * k + 1) * SIZE // (2 * bands)].numpy() for k in range(bands)])


def _hdr_clip(path, transfer):
    light = REFERENCE_WHITE * PATCHES ** (1 / 0.45) @ BT709_TO_BT2020.T  # BT.709 display light in BT.2020 RGB
    signal = _pq(light) if transfer == "pq" else _hlg(light)
    samples = _ycbcr(signal, 0.2627, 0.0593, bits=10, full=False)
    trc = colour.TRC_PQ if transfer == "pq" else colour.TRC_HLG
    options = {"x265-params": "log-level=none:lossless=1:bframes=0"}
    return _encode_bands(
        path,
        samples,
        codec="libx265",
        pix_fmt="yuv420p10le",
        options=options,
        trc=trc,
        primaries=9,
        matrix=9,
        full=False,
    )


def _has_encoder(name):
    try:
        av.codec.Codec(name, "w")
    except Exception:
        return False
    return True


needs_x265 = pytest.mark.skipif(not _has_encoder("libx265"), reason="this PyAV build has no libx265 (10-bit HEVC)")


@needs_x265
@pytest.mark.parametrize("transfer", ["pq", "hlg"])
def test_hdr_clip_decodes_to_the_colours_an_sdr_player_shows(tmp_path, transfer):
    clip = _hdr_clip(tmp_path / f"{transfer}.mkv", transfer)
    with av.open(str(clip)) as c:  # as stored, read as if SDR BT.709: what setseq trained before
        stored = next(c.decode(video=0)).to_ndarray(format="rgb24")[SIZE // 2, (np.arange(4) * 2 + 1) * SIZE // 8]
    expected = 255 * PATCHES
    got = _band_colours(clip)
    assert np.abs(stored - expected).max() > 30  # read as stored, the clip is far from what it shows
    assert np.abs(got - expected).max() < 14, (got.round(), expected)


@pytest.mark.parametrize(
    "matrix, full",
    [(6, False), (5, False), (1, False), (1, True), (6, True), (2, None)],
    ids=["bt601-limited", "bt470bg-limited", "bt709-limited", "bt709-full", "bt601-full", "undeclared"],
)
def test_declared_matrix_and_range_are_honoured(tmp_path, matrix, full):
    kr, kb = (0.2126, 0.0722) if matrix == 1 else (0.299, 0.114)  # undeclared: FFmpeg reads BT.601 limited
    samples = _ycbcr(PATCHES, kr, kb, bits=8, full=bool(full))
    clip = _encode_bands(
        tmp_path / "sdr.mp4", samples, codec="libx264", pix_fmt="yuv420p", options={"qp": "0"},
        trc=1, primaries=1, matrix=matrix, full=full,
    )  # fmt: skip
    assert np.abs(_band_colours(clip) - 255 * PATCHES).max() < 4


@needs_x265
def test_hdr_that_cannot_be_mapped_warns_in_one_line_naming_the_transfer(tmp_path, monkeypatch, capsys):
    class OldReformatter:  # PyAV < 18: no dst_color_trc
        def reformat(self, frame, **kwargs):
            raise TypeError("reformat() got an unexpected keyword argument 'dst_color_trc'")

    monkeypatch.setattr(colour, "VideoReformatter", OldReformatter)
    video = load_video(_hdr_clip(tmp_path / "phone.mkv", "hlg"))
    assert video.frames.shape[0] == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(lines) == 1 and "HLG" in lines[0] and "phone.mkv" in lines[0] and "re-encode it to SDR" in lines[0]


def test_sdr_frames_need_no_mapping():
    frame = av.VideoFrame(16, 16, "yuv420p")
    assert colour.hdr_description(frame) is None
    frame.color_trc, frame.color_primaries = colour.TRC_PQ, 9  # BT.2020
    assert colour.hdr_description(frame) == "PQ (SMPTE ST 2084, HDR10) transfer with BT.2020 primaries"
