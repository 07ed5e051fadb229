"""The video package's shape: one concern per module, imports that run downwards, and the old
``setseq.data`` names still there."""

import ast
from pathlib import Path

import torch

import setseq.video as video
from setseq import data

# A module may import only modules of a lower level: a clip's journey from path to tensor never comes back.
LEVELS = {"display": 0, "timing": 0, "write": 0, "frames": 1, "captions": 1, "decode": 2, "masks": 3, "clip": 4}


def _package_imports(file: Path) -> set[str]:
    """setseq.video modules a file imports at run time (not under ``if TYPE_CHECKING``)."""
    tree = ast.parse(file.read_text())
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for n in ast.walk(node)
    }
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and id(node) not in skipped
            and (node.module or "").startswith("setseq.video.")
        ):
            names.add(node.module.rsplit(".", 1)[1])
    return names


def test_video_modules_import_downwards_only():
    folder = Path(video.__file__).parent
    modules = {f.stem for f in folder.glob("*.py")} - {"__init__"}
    assert modules == set(LEVELS), "a new module in setseq/video needs its level here"
    for name in modules:
        for imported in _package_imports(folder / f"{name}.py"):
            assert LEVELS[imported] < LEVELS[name], f"setseq.video.{name} imports setseq.video.{imported}, a level up"


def test_data_reexports_the_video_package():
    for name in video.__all__:
        assert getattr(data, name) is getattr(video, name)


def test_load_clip_reads_prompts_excerpt_and_mask_beside_the_clip(tmp_path):
    clip_path = video.make_test_video(tmp_path / "dot.mp4", frames=16, fps=8)
    (tmp_path / "dot.txt").write_text("static: a [v] square.\nmotion: it [u] slides.\nstart: 0.5\n")
    mask = torch.full((16, 3, 32, 48), -1.0)  # black, with a white rectangle on the subject
    mask[:, :, 8:24, 12:36] = 1.0
    video.write_video(tmp_path / "dot.mask.mp4", mask, fps=8)
    clip = video.load_clip(clip_path, fps=8, size=(16, 24), frames=4, excerpt=[({"duration": 1.0}, "the test")])
    assert (clip.prompt, clip.motion_prompt) == ("a [v] square.", "it [u] slides.")
    assert (clip.excerpt.start, clip.excerpt.duration) == (0.5, 1.0)
    assert clip.video.frames.shape == (8, 3, 16, 24)
    assert clip.mask.shape == (8, 16, 24) and clip.mask[:, 8, 12].all() and not clip.mask[:, 0, 0].any()
    assert video.probe_clip(clip_path, fps=8, frames=4, excerpt=[({"duration": 1.0}, None)]) == ((32, 48), 8)
