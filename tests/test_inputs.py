"""Inputs from the field (2026-11-30): what a player shows is what trains, timing comes from
timestamps, sidecars are found whatever their case, alpha masks the subject, cut-short files are
reported, long clips are excerpted. Every input is built here with PyAV, numpy or Pillow."""

from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from setseq import data
from setseq.data import Excerpt, load_video
from setseq.errors import SetseqError
from setseq.video import decode

STEP = 15  # grey level of frame k is 8 + STEP * k


def grey_index(frames: torch.Tensor) -> list[int]:
    levels = (frames + 1) * 127.5  # (F, 3, H, W) in [0, 255]
    return [round((level.mean().item() - 8) / STEP) for level in levels]


def encode(
    path,
    images,
    *,
    codec="libx264",
    rate=8,
    pix_fmt="yuv420p",
    times=None,
    rotation=None,
    hflip=False,
    sar=None,
    options=None,
    muxer=None,
):
    """Encode (F, h, w, 3 or 4) uint8 images; ``times`` in seconds gives each frame's timestamp."""
    fmt = "rgba" if images.shape[-1] == 4 else "rgb24"
    with av.open(str(path), "w", options=muxer or {}) as c:
        s = c.add_stream(codec, rate=rate, options=options or {})
        s.width, s.height, s.pix_fmt = images.shape[2], images.shape[1], pix_fmt
        if times is not None:
            s.codec_context.time_base = s.time_base = Fraction(1, 1000)
        if rotation is not None:
            s.set_display_rotation(rotation, hflip=hflip)
        if sar is not None:
            s.codec_context.sample_aspect_ratio = sar
        for k, img in enumerate(images):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format=fmt)
            if times is not None:
                frame.pts, frame.time_base = round(times[k] * 1000), Fraction(1, 1000)
            c.mux(s.encode(frame))
        c.mux(s.encode(None))
    return path


def marked(n=4, h=32, w=48):
    """(n, h, w, 3) grey frames with a white 8x8 marker in the top-left corner."""
    images = np.full((n, h, w, 3), 60, np.uint8)
    images[:, :8, :8] = 255
    return images


def corner(frames: torch.Tensor) -> str:
    """Which corner of the first frame holds the marker: 'tl', 'tr', 'bl' or 'br'."""
    x = frames[0].mean(0)  # (H, W)
    H, W = x.shape
    corners = {
        "tl": x[: H // 4, : W // 4],
        "tr": x[: H // 4, -W // 4 :],
        "bl": x[-H // 4 :, : W // 4],
        "br": x[-H // 4 :, -W // 4 :],
    }
    return max(corners, key=lambda k: corners[k].mean().item())


# ----------------------------------------------------------------------------- 1. display geometry


@pytest.mark.parametrize(
    ("rotation", "hflip", "expected"),
    [(90, False, "bl"), (-90, False, "tr"), (180, False, "br"), (90, True, "br"), (0, True, "tr")],
)
def test_display_rotation_is_applied(tmp_path, rotation, hflip, expected):
    # a phone clip stored 48 x 32 (w x h) with a display rotation (ffmpeg -display_rotation)
    path = encode(tmp_path / "phone.mp4", marked(), rotation=rotation, hflip=hflip)
    video = load_video(path)
    sideways = rotation in (90, -90)
    assert video.frames.shape[2:] == ((48, 32) if sideways else (32, 48))
    assert video.source_size == ((48, 32) if sideways else (32, 48))
    # the marker lands where the matching numpy rotation (counter-clockwise, as PyAV's frame.rotation) puts it
    shown = np.rot90(marked()[0], k=rotation // 90)
    shown = shown[:, ::-1] if hflip else shown
    assert corner(torch.from_numpy(shown.copy()).permute(2, 0, 1)[None].float()) == expected == corner(video.frames)
    # resized for training: a portrait clip fills a portrait frame without being squeezed sideways
    size = (24, 16) if sideways else (16, 24)
    small = load_video(path, size=size)
    assert small.frames.shape[2:] == size and corner(small.frames) == expected


def test_exif_orientation_of_still_frames(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    folder = tmp_path / "frames"
    folder.mkdir()
    for k, img in enumerate(marked(3)):
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90 CW to display", as a phone in portrait writes it
        Image.fromarray(img).save(folder / f"{k}.jpg", exif=exif, quality=95)
    video = load_video(folder)
    assert video.frames.shape[2:] == (48, 32)
    assert corner(video.frames) == "tr"  # rotated clockwise: top-left goes to top-right


def test_non_square_pixels_are_shown_at_their_aspect(tmp_path):
    # anamorphic: 24 x 32 stored, pixels twice as wide as tall -> shown 48 x 32
    images = np.full((3, 32, 24, 3), 60, np.uint8)
    images[:, :, :12] = 220  # left half bright
    path = encode(tmp_path / "anamorphic.mp4", images, sar=Fraction(2, 1))
    video = load_video(path)
    assert video.frames.shape[2:] == (32, 48) and video.source_size == (32, 48)
    # covering 32 x 32 crops the sides of the 48-wide picture instead of stretching it
    square = load_video(path, size=(32, 32)).frames[0].mean(0)  # (H, W)
    bright = (square > 0).float().mean(0)  # share of bright rows per column
    assert bright[:8].min() > 0.9 and bright[-8:].max() < 0.1
    assert abs(bright.mean().item() - 0.5) < 0.1  # half of the 32 kept columns are in the bright half


# ----------------------------------------------------------------------------- 2. timestamps


def test_uneven_frames_are_placed_by_timestamp_even_when_the_average_rate_matches(tmp_path):
    # 16 frames: 8 in a burst 10 ms apart, then 8 every 0.25 s (a phone's variable rate)
    times = [0.01 * k for k in range(8)] + [0.07 + 0.25 * k for k in range(1, 9)]
    images = np.stack([np.full((16, 24, 3), 8 + STEP * k, np.uint8) for k in range(16)])
    path = encode(tmp_path / "vfr.mp4", images, times=times)
    with av.open(str(path)) as c:
        average = float(c.streams.video[0].average_rate)
    video = load_video(path, fps=average)  # the model's fps equals the clip's average rate
    picked = grey_index(video.frames)
    for k, i in enumerate(picked):  # each output frame is the source frame nearest its time
        tk = k / average
        assert abs(times[i] - tk) <= min(abs(t - tk) for t in times) + 1e-6
    assert picked != list(range(len(picked)))  # read by index, it would be 0, 1, 2, ...


def test_last_frame_needs_half_coverage(tmp_path):
    images = np.stack([np.full((16, 24, 3), 8 + STEP * k, np.uint8) for k in range(10)])
    path = data.write_video(tmp_path / "ten.mp4", torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1, 24)
    # 10 frames at 24 fps last 0.417 s: 8-fps frames at 0, 0.125, 0.25 are covered, the one at 0.375 only a third
    assert load_video(path, fps=8).frames.shape[0] == 3


# ----------------------------------------------------------------------------- 7. sidecars


def test_sidecars_are_found_whatever_the_case_of_their_extension(tmp_path):
    clip = data.make_test_video(tmp_path / "CLIP.MP4", frames=8, size=(16, 16))
    data.make_test_video(tmp_path / "CLIP.mask.MP4", frames=8, size=(16, 16))
    assert data.find_mask(clip) == tmp_path / "CLIP.mask.MP4"
    assert data.is_mask_path(tmp_path / "CLIP.MASK.MP4")
    dsc = data.make_test_video(tmp_path / "dsc.mp4", frames=8, size=(16, 16)).rename(tmp_path / "DSC.MOV")
    (tmp_path / "DSC.TXT").write_text("static: a [v] square.\nmotion: it [u] slides.\n")
    assert data.read_prompt_file(dsc) == ("a [v] square.", "it [u] slides.")
    assert data.read_prompt_file(clip) == (None, None)  # CLIP has none: DSC's is not taken
    (tmp_path / "frames.Mask").mkdir()
    (tmp_path / "frames").mkdir()
    assert data.find_mask(tmp_path / "frames") == tmp_path / "frames.Mask"


# ----------------------------------------------------------------------------- 8. alpha


def matted(n=6, h=32, w=48):
    """(n, h, w, 4) RGBA: a red subject on the left half, opaque; bright green hidden under a transparent right half."""
    images = np.zeros((n, h, w, 4), np.uint8)
    images[:, :, : w // 2] = (200, 30, 30, 255)
    images[:, :, w // 2 :] = (0, 255, 0, 0)
    return images


def test_vp9_alpha_becomes_the_alpha_mask(tmp_path):
    path = encode(
        tmp_path / "matte.webm", matted(), codec="libvpx-vp9", pix_fmt="yuva420p", options={"crf": "20", "b": "0"}
    )
    video = load_video(path, fps=8, size=(16, 24))
    assert video.alpha is not None and video.alpha.shape == (6, 16, 24)
    assert video.alpha[:, :, :10].min() > 0.9 and video.alpha[:, :, 14:].max() < 0.1


def test_opaque_clips_have_no_alpha(tmp_path):
    path = encode(
        tmp_path / "opaque.webm", matted()[..., :3].copy(), codec="libvpx-vp9", options={"crf": "20", "b": "0"}
    )
    assert load_video(path).alpha is None
    assert load_video(data.make_test_video(tmp_path / "c.gif", frames=4, size=(16, 16))).alpha is None


def test_png_frames_with_alpha(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for k, img in enumerate(matted(3)):
        ctx = av.CodecContext.create("png", "w")
        ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = 48, 32, "rgba", Fraction(1, 1)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgba")
        (folder / f"{k}.png").write_bytes(b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)]))
    video = load_video(folder)
    assert video.alpha is not None and video.alpha[:, :, :20].min() > 0.99 and video.alpha[:, :, 28:].max() < 0.01


def test_alpha_without_a_libvpx_decoder_is_said(tmp_path, monkeypatch, capsys):
    path = encode(
        tmp_path / "matte.webm", matted(), codec="libvpx-vp9", pix_fmt="yuva420p", options={"crf": "20", "b": "0"}
    )
    monkeypatch.setattr(decode, "_has_decoder", lambda name: False)
    video = load_video(path)
    assert video.alpha is None
    assert "alpha channel" in capsys.readouterr().err


# ----------------------------------------------------------------------------- 9. cut-short files


def test_half_downloaded_file_warns_and_keeps_what_is_there(tmp_path, capsys):
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 48, 3), dtype=np.uint8)  # the data outweighs the index
    whole = encode(tmp_path / "whole.mp4", noise, muxer={"movflags": "+faststart"})  # the index first, as streamed
    (tmp_path / "half.mp4").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    video = load_video(tmp_path / "half.mp4", fps=8)
    err = capsys.readouterr().err
    assert 0 < video.frames.shape[0] < 32
    assert err.count("\n") == 1 and "cut short" in err and "of the 4.00 s" in err
    load_video(whole, fps=8)
    assert capsys.readouterr().err == ""  # a whole file says nothing


# ----------------------------------------------------------------------------- 10. long clips


@pytest.fixture(scope="module")
def ten_seconds(tmp_path_factory):
    """10 s at 10 fps, 16 x 24, grey level = the second (k // 10), a dot moving right = the tenth."""
    images = np.zeros((100, 16, 24, 3), np.uint8)
    for k in range(100):
        images[k] = 8 + STEP * (k // 10)
    return encode(tmp_path_factory.mktemp("long") / "long.mp4", images, rate=10, options={"g": "10"})


def seconds(frames):
    return [round(((f.mean().item() + 1) * 127.5 - 8) / STEP) for f in frames]


def test_excerpt_start_and_duration(ten_seconds):
    video = load_video(ten_seconds, fps=2, excerpt=Excerpt(start=3.0, duration=2.0))
    assert video.frames.shape[0] == 4 and seconds(video.frames) == [3, 3, 4, 4]
    assert seconds(load_video(ten_seconds, excerpt=Excerpt(start=7.0)).frames) == [7] * 10 + [8] * 10 + [9] * 10


@pytest.mark.parametrize(
    ("select", "expected", "fps"),
    [
        ("head", [2, 2, 2, 2], 8.0),
        ("uniform", [3, 5, 7, 9], 0.5),  # 4 frames at the centres of four 2 s parts of 2..10 s
    ],
)
def test_excerpt_selections(ten_seconds, select, expected, fps):
    video = load_video(ten_seconds, fps=8, excerpt=Excerpt(start=2.0, select=select, frames=4))
    assert seconds(video.frames) == expected and video.fps == fps and video.windows is None


def test_excerpt_windows_are_spread_and_marked(ten_seconds):
    video = load_video(ten_seconds, fps=4, excerpt=Excerpt(select="windows", frames=4, windows=3))
    assert video.windows == [0, 4, 8] and video.frames.shape[0] == 12
    assert seconds(video.frames) == [0] * 4 + [4, 4, 5, 5] + [9] * 4  # 1 s windows at 0, 4.5 and 9 s
    few = load_video(ten_seconds, fps=4, excerpt=Excerpt(select="windows", frames=16, windows=5))
    assert few.windows == [0, 16]  # only two 4 s windows fit in 10 s without overlapping


def test_excerpt_keeps_only_what_it_needs(ten_seconds, monkeypatch):
    made = []
    real = decode.frame_to_tensor
    monkeypatch.setattr(decode, "frame_to_tensor", lambda *a: made.append(1) or real(*a))
    load_video(ten_seconds, fps=10, size=(8, 8), excerpt=Excerpt(select="uniform", frames=5))
    assert len(made) == 5  # 100 frames decoded, 5 converted


def test_excerpt_errors(ten_seconds):
    for excerpt, message in [
        (Excerpt(start=-1), "start must be"),
        (Excerpt(duration=0), "duration must be"),
        (Excerpt(select="middle"), "select must be one of"),
        (Excerpt(select="head"), "needs frames"),
        (Excerpt(start=20.0, select="uniform", frames=2), "before the start"),
    ]:
        with pytest.raises(SetseqError, match=message):
            load_video(ten_seconds, excerpt=excerpt)


def test_prompt_file_settings(tmp_path):
    text = "A [v] dancer. The [v] dancer [u] spins.\nstart: 2.5\nSelect: windows\nwindows: 3\n"
    assert data.parse_clip_text(text) == (
        "A [v] dancer.",
        "The [v] dancer [u] spins.",
        {"start": "2.5", "select": "windows", "windows": "3"},
    )
    assert data.excerpt_settings({"start": "2.5", "select": "Windows", "windows": "3"}, "x") == {
        "start": 2.5,
        "select": "windows",
        "windows": 3,
    }
    for bad, message in [
        ("start: soon", "start must be a number"),
        ("windows: 0", "windows must be"),
        ("select: middle", "select must be one of"),
        ("duration: -1", "duration must be"),
    ]:
        with pytest.raises(SetseqError, match=message):
            data.parse_clip_text(f"static: a [v].\n{bad}")


def test_large_frames_are_shrunk_first_with_the_same_geometry(tmp_path):
    # over twice the output size, frames are shrunk by libswscale before torch: rotation and aspect still hold
    path = encode(tmp_path / "phone.mp4", marked(2, 64, 96), rotation=90)
    small = load_video(path, size=(24, 16))
    assert small.frames.shape[2:] == (24, 16) and corner(small.frames) == "bl"
    images = np.full((2, 64, 48, 3), 60, np.uint8)
    images[:, :, :24] = 220
    wide = load_video(encode(tmp_path / "anamorphic.mp4", images, sar=Fraction(2, 1)), size=(8, 24)).frames[0].mean(0)
    assert wide.shape == (8, 24) and wide[:, :10].min() > 0 and wide[:, 14:].max() < 0  # 96 x 64 shown: no crop


def test_probe_sees_the_displayed_shape_and_the_length_from_the_first_frame(tmp_path):
    phone = encode(tmp_path / "phone.mp4", marked(24, 32, 48), rotation=90, rate=8)  # stored 48 x 32, shown 32 x 48
    probe = data.probe_video(phone)
    assert probe.size == (48, 32) and probe.duration == pytest.approx(3.0, abs=0.2)
    anamorphic = encode(tmp_path / "dv.mp4", marked(2, 32, 48), sar=Fraction(2, 1))  # 48 stored, 96 shown
    assert data.probe_video(anamorphic).size == (32, 96)
    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(6):
        ctx = av.CodecContext.create("png", "w")
        ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = 10, 20, "rgb24", Fraction(1, 1)
        frame = av.VideoFrame.from_ndarray(marked(1, 20, 10)[0], format="rgb24")
        (folder / f"{k}.png").write_bytes(b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)]))
    assert data.probe_video(folder, fps=3.0) == data.Probe((20, 10), 2.0)
