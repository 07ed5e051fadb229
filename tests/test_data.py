"""Tests for setseq.data: decoding, resampling, resizing, writing, prompt files and sampling.

Every clip is generated in tmp_path; frame k of an "index clip" is a solid grey whose level
encodes k, so decoded frames can be traced back to the source frame they came from.
"""

from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from setseq import data
from setseq.data import (
    Video,
    load_video,
    make_test_video,
    parse_prompts,
    random_window,
    read_prompt_file,
    sample_frames,
    write_preview,
    write_video,
)
from setseq.errors import SetseqError
from setseq.video import decode, write

STEP = 15  # grey level of frame k is 8 + STEP * k (k < 16)


def to_tensor(video_u8: np.ndarray) -> torch.Tensor:
    """(F, H, W, 3) uint8 -> (F, 3, H, W) float in [-1, 1]."""
    return torch.from_numpy(video_u8).permute(0, 3, 1, 2).float() / 127.5 - 1


def index_clip(n: int, size=(16, 24)) -> np.ndarray:
    """(n, H, W, 3) uint8 solid greys encoding the frame index."""
    return np.stack([np.full((*size, 3), 8 + STEP * k, np.uint8) for k in range(n)])


def decoded_indices(frames: torch.Tensor) -> list[int]:
    levels = (frames + 1) * 127.5  # (F, 3, H, W) in [0, 255]
    return [round((level.mean().item() - 8) / STEP) for level in levels]


def write_images(folder, video_u8: np.ndarray, names: list[str]) -> None:
    """Encode each (H, W, 3) uint8 frame as a still image file named by ``names``."""
    codecs = {
        "png": ("png", "rgb24"),
        "jpg": ("mjpeg", "yuvj420p"),
        "bmp": ("bmp", "bgr24"),
        "webp": ("libwebp", "bgra"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for rgb, name in zip(video_u8, names):
        codec, pix_fmt = codecs[name.rsplit(".", 1)[1]]
        ctx = av.CodecContext.create(codec, "w")
        ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = rgb.shape[1], rgb.shape[0], pix_fmt, Fraction(1, 1)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format=pix_fmt)
        (folder / name).write_bytes(b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)]))


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(("suffix", "tol"), [(".mp4", 3), (".webm", 3), (".gif", 0.5)])
def test_container_round_trip(tmp_path, suffix, tol):
    colours = np.array(
        [[200, 30, 40], [20, 180, 60], [30, 50, 220], [240, 240, 20], [90, 90, 90], [10, 200, 200]], np.uint8
    )
    clip = np.broadcast_to(colours[:, None, None, :], (6, 24, 40, 3)).copy()
    path = write_video(tmp_path / f"clip{suffix}", to_tensor(clip), fps=10)
    video = load_video(path)
    assert video.frames.shape == (6, 3, 24, 40)
    assert video.frames.dtype == torch.float32
    assert video.fps == pytest.approx(10)
    assert video.source == str(path)
    means = ((video.frames + 1) * 127.5).mean(dim=(2, 3))  # (F, 3)
    assert torch.allclose(means, torch.from_numpy(colours).float(), atol=tol)


@pytest.mark.parametrize("ext", ["png", "jpg", "bmp", "webp"])
def test_directory_round_trip_natural_order(tmp_path, ext):
    names = [f"frame{k + 1}.{ext}" for k in range(12)]  # frame10 sorts after frame9, not after frame1
    write_images(tmp_path / "frames", index_clip(12), names)
    (tmp_path / "frames" / "notes.txt").write_text("not an image")
    video = load_video(tmp_path / "frames")
    assert video.frames.shape == (12, 3, 16, 24)
    assert video.fps == 8.0
    assert decoded_indices(video.frames) == list(range(12))
    assert load_video(tmp_path / "frames", fps=12).fps == 12.0


def test_mixed_size_images_need_size(tmp_path):
    write_images(tmp_path / "a", index_clip(1, (16, 24)), ["1.png"])
    write_images(tmp_path / "a", index_clip(1, (20, 20)), ["2.png"])
    with pytest.raises(SetseqError, match="differ in size"):
        load_video(tmp_path / "a")
    assert load_video(tmp_path / "a", size=(8, 8)).frames.shape == (2, 3, 8, 8)


# ----------------------------------------------------------------------------- timing


@pytest.mark.parametrize(
    ("count", "src_fps", "fps", "expected"),
    [
        (16, 16, 8, [0, 2, 4, 6, 8, 10, 12, 14]),
        (16, 16, 6, [0, 3, 5, 8, 11, 13]),
        (4, 8, 20, [0, 0, 1, 1, 2, 2, 2, 3, 3, 3]),
        (12, 8, 8, list(range(12))),
    ],
)
def test_resampling_picks_nearest_frames(tmp_path, count, src_fps, fps, expected):
    path = write_video(tmp_path / "idx.mp4", to_tensor(index_clip(count)), fps=src_fps)
    video = load_video(path, fps=fps)
    assert video.fps == fps
    assert decoded_indices(video.frames) == expected


def test_resampling_gif_with_centisecond_delays(tmp_path):
    path = write_video(tmp_path / "idx.gif", to_tensor(index_clip(12)), fps=8)  # delays 13, 12, 13, ... cs
    assert decoded_indices(load_video(path, fps=8).frames) == list(range(12))
    assert decoded_indices(load_video(path, fps=4).frames) == [0, 2, 4, 6, 8, 10]


@pytest.mark.parametrize(("fps", "expected"), [(None, [0, 1, 2, 3, 4]), (8, [0, 2, 4])])
def test_max_frames_keeps_the_first_and_stops_decoding(tmp_path, monkeypatch, fps, expected):
    path = write_video(tmp_path / "idx.mp4", to_tensor(index_clip(16)), fps=16)
    decoded = []
    original = decode._stream_frames

    def counting(*args):
        for item in original(*args):
            decoded.append(item)
            yield item

    monkeypatch.setattr(decode, "_stream_frames", counting)
    video = load_video(path, fps=fps, max_frames=len(expected))
    assert decoded_indices(video.frames) == expected
    assert len(decoded) <= expected[-1] + 2


# ----------------------------------------------------------------------------- resizing


@pytest.fixture
def striped_dir(tmp_path):
    """One 32x64 frame: 12 red columns, 40 green, 12 blue (the central 32x32 is all green)."""
    frame = np.zeros((1, 32, 64, 3), np.uint8)
    frame[:, :, :12] = (255, 0, 0)
    frame[:, :, 12:52] = (0, 255, 0)
    frame[:, :, 52:] = (0, 0, 255)
    write_images(tmp_path / "striped", frame, ["0.png"])
    return tmp_path / "striped"


@pytest.mark.parametrize("size", [(16, 16), (64, 64), (30, 30)])
def test_resize_cover_crops_the_centre(striped_dir, size):
    frames = load_video(striped_dir, size=size).frames
    assert frames.shape == (1, 3, *size)
    green = torch.tensor([-1.0, 1.0, -1.0])[:, None, None]
    assert torch.allclose(frames[0], green.expand(3, *size), atol=0.02)


def test_resize_cover_keeps_full_width_when_height_limits(striped_dir):
    frames = load_video(striped_dir, size=(8, 40)).frames  # scale 0.625 -> 20x40, crop rows 6..14
    assert frames.shape == (1, 3, 8, 40)
    assert torch.allclose(frames[0, :, :, 0], torch.tensor([1.0, -1.0, -1.0])[:, None].expand(3, 8), atol=0.02)
    assert torch.allclose(frames[0, :, :, -1], torch.tensor([-1.0, -1.0, 1.0])[:, None].expand(3, 8), atol=0.02)


# ----------------------------------------------------------------------------- writing


def test_scale_is_nearest_neighbour_and_yuv_pads_to_even(tmp_path):
    checker = (torch.arange(5 * 7).reshape(1, 1, 5, 7) % 2).float().expand(2, 3, 5, 7) * 2 - 1  # (2, 3, 5, 7)
    gif = load_video(write_video(tmp_path / "c.gif", checker, fps=4, scale=3)).frames
    assert gif.shape == (2, 3, 15, 21)
    assert torch.equal(gif, checker.repeat_interleave(3, 2).repeat_interleave(3, 3))
    assert load_video(write_video(tmp_path / "c.mp4", checker, fps=4, scale=3)).frames.shape == (2, 3, 16, 22)


def test_write_clamps_out_of_range_values(tmp_path):
    frames = torch.tensor([-5.0, 5.0, 0.0])[None, :, None, None].expand(2, 3, 4, 4)
    decoded = load_video(write_preview(tmp_path / "p.gif", frames, fps=4, scale=1)).frames
    assert torch.allclose(decoded[:, :, 0, 0], torch.tensor([[-1.0, 1.0, 0.0]]).expand(2, 3), atol=0.01)


def test_webp_is_animated_and_looping(tmp_path):
    path = make_test_video(tmp_path / "a.webp", frames=5)
    blob = path.read_bytes()
    assert blob[:4] == b"RIFF" and blob[8:12] == b"WEBP"
    assert blob.count(b"ANMF") == 5
    anim = blob.index(b"ANIM")
    assert blob[anim + 12 : anim + 14] == b"\x00\x00"  # loop count 0 = forever


def test_gif_loops_forever(tmp_path):
    blob = make_test_video(tmp_path / "a.gif", frames=3).read_bytes()
    assert b"NETSCAPE2.0\x03\x01\x00\x00" in blob


def test_preview_gets_gif_suffix_and_parents(tmp_path):
    path = write_preview(tmp_path / "deep" / "er" / "p.mp4", torch.zeros(2, 3, 4, 4), fps=4, scale=2)
    assert path == tmp_path / "deep" / "er" / "p.gif"
    assert load_video(path).frames.shape == (2, 3, 8, 8)


def test_overwrite_is_atomic_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "v.mp4"
    write_video(target, torch.zeros(3, 3, 8, 8), fps=4)
    write_video(target, torch.ones(5, 3, 8, 8), fps=4)
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]
    assert load_video(target).frames.shape[0] == 5


def test_failed_encode_removes_temp_and_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "v.gif"
    write_video(target, torch.zeros(2, 3, 8, 8), fps=4)
    old = target.read_bytes()

    def broken_encode(file, *args):
        file.write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(write, "_encode", broken_encode)
    with pytest.raises(SetseqError, match="v.gif"):
        write_video(target, torch.ones(2, 3, 8, 8), fps=4)
    assert [p.name for p in tmp_path.iterdir()] == ["v.gif"]
    assert target.read_bytes() == old


@pytest.mark.parametrize(
    ("name", "frames", "kwargs", "message"),
    [
        ("v.avi", torch.zeros(2, 3, 8, 8), {}, r"'\.avi'"),
        ("v.mp4", torch.zeros(2, 1, 8, 8), {}, r"\(2, 1, 8, 8\)"),
        ("v.mp4", torch.zeros(0, 3, 8, 8), {}, "F >= 1"),
        ("v.gif", torch.zeros(2, 3, 8, 8), {"scale": 0}, "scale"),
        ("v.gif", torch.zeros(2, 3, 8, 8), {"fps": 0}, "fps"),
    ],
)
def test_write_errors(tmp_path, name, frames, kwargs, message):
    kwargs = {"fps": 8, **kwargs}
    with pytest.raises(SetseqError, match=message):
        write_video(tmp_path / name, frames, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_missing_webp_encoder_names_available_formats(tmp_path, monkeypatch):
    monkeypatch.setattr(write, "_has_encoder", lambda name: not name.startswith("libwebp"))
    with pytest.raises(SetseqError, match=r"'\.webp'.*\.mp4, \.webm, \.gif\.$"):
        write_video(tmp_path / "v.webp", torch.zeros(2, 3, 8, 8), fps=8)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("suffix", "missing", "expected"), [(".mp4", "libx264", "mpeg4"), (".webm", "libvpx-vp9", "vp8")]
)
def test_encoder_fallbacks(tmp_path, monkeypatch, suffix, missing, expected):
    monkeypatch.setattr(write, "_has_encoder", lambda name: name != missing)
    path = write_video(tmp_path / f"v{suffix}", to_tensor(index_clip(4)), fps=8)
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == expected
    assert decoded_indices(load_video(path).frames) == [0, 1, 2, 3]


def test_webp_falls_back_to_libwebp(tmp_path, monkeypatch):
    monkeypatch.setattr(write, "_has_encoder", lambda name: name != "libwebp_anim")
    assert make_test_video(tmp_path / "a.webp", frames=4).read_bytes().count(b"ANMF") == 4


# ----------------------------------------------------------------------------- load errors


def _audio_only(path):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def test_load_errors(tmp_path):
    (tmp_path / "notes.mp4").write_text("this is not a video")
    _audio_only(tmp_path / "sound.wav")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no frames here")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "1.png").write_bytes(b"\x89PNG garbage")
    write_video(tmp_path / "short.mp4", torch.zeros(4, 3, 8, 8), fps=8)
    before = sorted(p.name for p in tmp_path.iterdir())
    cases = [
        (tmp_path / "missing.mp4", {}, "missing.mp4 does not exist"),
        (tmp_path / "notes.mp4", {}, "notes.mp4 is not a video PyAV can read"),
        (tmp_path / "sound.wav", {}, "sound.wav is not a video PyAV can read.*no video stream"),
        (tmp_path / "empty", {}, "empty has no images"),
        (tmp_path / "broken", {}, r"1\.png is not an image PyAV can read"),
        (tmp_path / "short.mp4", {"min_frames": 10}, "has 4 frames at 8 fps but 10 are needed"),
        (tmp_path / "short.mp4", {"fps": 4, "min_frames": 3}, "has 2 frames at 4 fps but 3 are needed"),
        (tmp_path / "short.mp4", {"size": (0, 8)}, r"size must be.*\(0, 8\)"),
        (tmp_path / "short.mp4", {"fps": 0}, "fps must be a positive number"),
        (tmp_path / "short.mp4", {"max_frames": 2, "min_frames": 3}, "max_frames=2 is below min_frames=3"),
    ]
    for path, kwargs, message in cases:
        with pytest.raises(SetseqError, match=message):
            load_video(path, **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# ----------------------------------------------------------------------------- prompts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("static: A red car.\nmotion: The car [u] drifts.", ("A red car.", "The car [u] drifts.")),
        ("# comment\n\n  MOTION :  spins [u1] fast  \n", (None, "spins [u1] fast")),
        ("Static: only looks", ("only looks", None)),
        ("A red car.\nThe car [u] drifts.", ("A red car.", "The car [u] drifts.")),
        (
            "A [v] dancer in red. She [u] spins fast! Then bows.",
            ("A [v] dancer in red.", "She [u] spins fast! Then bows."),
        ),
        ("Calm. Lake? Then [u12] ripples. End.", ("Calm. Lake?", "Then [u12] ripples. End.")),
        ("[u] spinning dancer. In red.", (None, "[u] spinning dancer. In red.")),
        ("Model v1.5 renders a [v] car that [u] drifts.", (None, "Model v1.5 renders a [v] car that [u] drifts.")),
        ("A calm [v] lake. Mist [ux] rises.", ("A calm [v] lake. Mist [ux] rises.", None)),
        ("# only a comment\n\n", (None, None)),
        ("", (None, None)),
    ],
)
def test_parse_prompts(text, expected):
    assert parse_prompts(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("one\ntwo\nthree", "3 unkeyed lines"),
        ("static: a\nsomething else", "mixes"),
        ("motion: a [u]\nMotion: b [u]", "more than one 'motion:'"),
    ],
)
def test_parse_prompts_errors(text, message):
    with pytest.raises(SetseqError, match=message):
        parse_prompts(text)


def test_read_prompt_file(tmp_path):
    make_test_video(tmp_path / "dancer.mp4", frames=2)
    assert read_prompt_file(tmp_path / "dancer.mp4") == (None, None)
    (tmp_path / "dancer.txt").write_text("\ufeffstatic: A dancer.\nmotion: She [u] spins.\n", encoding="utf-8")
    assert read_prompt_file(tmp_path / "dancer.mp4") == ("A dancer.", "She [u] spins.")
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames.txt").write_text("A lake. Water [u] ripples.")
    assert read_prompt_file(tmp_path / "frames") == ("A lake.", "Water [u] ripples.")
    (tmp_path / "dancer.txt").write_text("a\nb\nc")
    with pytest.raises(SetseqError, match="dancer.txt has 3 unkeyed lines"):
        read_prompt_file(tmp_path / "dancer.mp4")


# ----------------------------------------------------------------------------- sampling


@pytest.fixture
def counting_video():
    """8 frames where every value of frame k is k."""
    return Video(frames=torch.arange(8.0)[:, None, None, None].expand(8, 3, 4, 4).clone(), fps=8.0, source="counting")


def _ids(frames):
    return frames[:, 0, 0, 0].long().tolist()


def test_sample_frames(counting_video):
    first = sample_frames(counting_video, 50, torch.Generator().manual_seed(0))
    assert first.shape == (50, 3, 4, 4)
    assert torch.equal(first, sample_frames(counting_video, 50, torch.Generator().manual_seed(0)))
    assert not torch.equal(first, sample_frames(counting_video, 50, torch.Generator().manual_seed(1)))
    ids = _ids(first)
    assert set(ids) == set(range(8))  # every frame reachable, drawn with replacement
    assert all((frame == frame.flatten()[0]).all() for frame in first)  # whole frames, not mixed
    with pytest.raises(SetseqError):
        sample_frames(counting_video, 0, torch.Generator())


def test_random_window(counting_video):
    window = random_window(counting_video, 3, torch.Generator().manual_seed(5))
    assert torch.equal(window, random_window(counting_video, 3, torch.Generator().manual_seed(5)))
    ids = _ids(window)
    assert ids == list(range(ids[0], ids[0] + 3))
    starts = {_ids(random_window(counting_video, 3, torch.Generator().manual_seed(s)))[0] for s in range(200)}
    assert starts == set(range(6))
    assert torch.equal(random_window(counting_video, 8, torch.Generator()), counting_video.frames)
    with pytest.raises(SetseqError, match="counting has 8 frames at 8 fps but windows of 9"):
        random_window(counting_video, 9, torch.Generator())


def test_make_test_video_moves_and_is_deterministic(tmp_path):
    first = load_video(make_test_video(tmp_path / "a.mp4", frames=6, size=(32, 48), fps=6))
    second = load_video(make_test_video(tmp_path / "b.mp4", frames=6, size=(32, 48), fps=6))
    assert first.frames.shape == (6, 3, 32, 48) and first.fps == 6
    assert torch.equal(first.frames, second.frames)
    square = (first.frames[:, 0] > 0.8) & (first.frames[:, 2] < -0.3)  # yellow pixels, (F, H, W)
    ys, xs = torch.arange(32.0)[:, None], torch.arange(48.0)[None, :]
    cy = [(ys * m).sum().item() / m.sum().item() for m in square]
    cx = [(xs * m).sum().item() / m.sum().item() for m in square]
    assert cy == sorted(cy) and cx == sorted(cx) and cx[-1] - cx[0] > 30 and cy[-1] - cy[0] > 20


# ----------------------------------------------------------------------------- masks


def bar_clip(frames: int, size: tuple[int, int], repeat: int = 1) -> torch.Tensor:
    """(frames * repeat, 3, H, W): a white bar a sixth of the width wide, sliding left to right
    over black, each position held for `repeat` frames."""
    H, W = size
    bar = W // 6
    video = torch.full((frames, 3, H, W), -1.0)
    for k in range(frames):
        x = round(k / (frames - 1) * (W - bar))
        video[k, :, :, x : x + bar] = 1.0
    return video.repeat_interleave(repeat, 0)


def test_mask_beside_the_clip_is_found(tmp_path):
    clip = write_video(tmp_path / "clip.mp4", bar_clip(4, (16, 24)), 8)
    assert data.find_mask(clip) is None
    mask = write_video(tmp_path / "clip.mask.webm", bar_clip(4, (16, 24)), 8)
    assert data.find_mask(clip) == mask and data.is_mask_path(mask) and not data.is_mask_path(clip)
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames.mask").mkdir()
    assert data.find_mask(tmp_path / "frames") == tmp_path / "frames.mask"
    assert data.is_mask_path(tmp_path / "frames.mask") and not data.is_mask_path(tmp_path / "frames")


def test_mask_is_resampled_and_resized_like_its_clip(tmp_path):
    # the clip: 12 frames at 12 fps, 24x36; its mask: twice the frame rate and twice the size
    clip_file = write_video(tmp_path / "clip.mp4", bar_clip(12, (24, 36)), 12)
    mask_file = write_video(tmp_path / "clip.mask.mp4", bar_clip(12, (48, 72), repeat=2), 24)
    clip = load_video(clip_file, fps=8, size=(16, 16))
    mask = data.load_mask(mask_file, clip, (16, 16))
    assert mask.dtype == torch.bool and mask.shape == (clip.frames.shape[0], 16, 16) == (8, 16, 16)
    bright = clip.frames.mean(1) > 0  # (F, H, W): where the clip's bar is
    assert (mask == bright).float().mean() > 0.97
    assert (mask[1:] == bright[:-1]).float().mean() < 0.9  # the bar moves: a frame off would show


def test_mask_errors(tmp_path):
    clip = load_video(write_video(tmp_path / "clip.mp4", bar_clip(8, (16, 24)), 8), size=(16, 16))
    cases = {
        "other length": (bar_clip(5, (16, 24)), "has 5 frames"),
        "other aspect": (bar_clip(8, (16, 16)), "different aspect ratio"),
        "black": (torch.full((8, 3, 16, 24), -1.0), "black in every frame"),
    }
    for name, (video, message) in cases.items():
        file = write_video(tmp_path / f"{name}.mp4", video, 8)
        with pytest.raises(SetseqError, match=message):
            data.load_mask(file, clip, (16, 16))
