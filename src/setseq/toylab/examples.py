"""The shipped example concepts: real video files with prompt files and foreground masks
(NAME.mask.mp4, white on the subject), rendered from the toy world.

Each is a dynamic concept the base model cannot produce from text alone: its pattern or its
motion has no words in the world's captions ("it moves.", "the waves roll.").
"""

from __future__ import annotations

from pathlib import Path

from setseq.fileio import atomic_path
from setseq.toy import world
from setseq.video import write_video

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
FRAMES, SIZE, FPS = 8, 64, 8.0  # rendered at twice the model's size; loading resizes to 32 x 32


def example_path(name: str) -> Path:
    return EXAMPLES_DIR / f"{name}.mp4"


def write_examples(folder: str | Path = EXAMPLES_DIR) -> list[Path]:
    """Render the three example concepts to `folder`/NAME.mp4 with NAME.txt prompts and the
    NAME.mask.mp4 foreground masks beside them."""
    folder = Path(folder)
    out = []
    for name in world.CONCEPTS:
        render = world.render(world.concept_scene(name), FRAMES, SIZE, SIZE)
        path = write_video(folder / f"{name}.mp4", render.video, FPS)
        mask = render.mask[:, None].expand(-1, 3, -1, -1).float() * 2 - 1  # (F, 3, H, W): white on the subject
        write_video(folder / f"{name}.mask.mp4", mask, FPS)
        static, motion = world.concept_prompts(name)
        with atomic_path(path.with_suffix(".txt")) as tmp:
            tmp.write_text(f"# example concept '{name}' of the setseq toy world\nstatic: {static}\nmotion: {motion}\n")
        out.append(path)
    return out


def _free_colours(scene: world.Scene, n: int) -> list[str]:
    used = {scene.background, scene.background2, scene.color, scene.color2, scene.color3}
    return [c for c in ("green", "yellow", "white", "red", "black") if c not in used][:n]


def edit_prompts(name: str) -> list[tuple[str, str, dict[str, str]]]:
    """(label, prompt, expected attributes) for an example concept: its reconstruction, then four
    edits by prompt (two new backgrounds, a camera pan, a zoom), in the world's own words."""
    scene = world.concept_scene(name)
    static, motion = world.concept_prompts(name)
    recon = f"{static} {motion}"
    old = (
        f"{scene.background} background"
        if scene.background2 is None
        else f"{scene.background} to {scene.background2} gradient background"
    )
    out = [("reconstruction", recon, {})]
    for colour in _free_colours(scene, 2):
        out.append((f"background: {colour}", recon.replace(old, f"{colour} background"), {"background": colour}))
    for camera, phrase in (("pan-left", "pans left"), ("zoom-in", "zooms in")):
        out.append(
            (f"camera: {phrase}", f"{static} {motion.removesuffix('.')}, as the camera {phrase}.", {"camera": camera})
        )
    return out


def example_spec(name: str, geometry, index: int | None = None):
    """An example concept as a training spec at a backbone's geometry, from its shipped files.

    Args:
        name: one of world.CONCEPTS.
        geometry: the backbone's clip geometry (the video is resampled and resized to it).
        index: number the tokens ([v2], [u2]) for a set of several concepts; None keeps [v], [u].
    """
    from setseq.train import ConceptSpec
    from setseq.video import find_mask, load_mask, load_video, read_prompt_file

    source = example_path(name)
    size = (geometry.height, geometry.width)
    video = load_video(source, fps=geometry.fps, size=size, min_frames=geometry.frames)
    mask_file = find_mask(source)
    mask = None if mask_file is None else load_mask(mask_file, video, size)[: geometry.frames]
    static, motion = read_prompt_file(source)
    v, u = ("[v]", "[u]") if index is None else (f"[v{index}]", f"[u{index}]")
    static, motion = static.replace("[v]", v), motion.replace("[u]", u)
    return ConceptSpec(name, video.frames[: geometry.frames], static, motion, v, u, str(source), mask)
