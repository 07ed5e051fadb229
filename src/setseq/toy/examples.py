"""The shipped example concepts: real video files with prompt files, rendered from the toy world.

Each is a dynamic concept the base model cannot produce from text alone: its pattern or its
motion has no words in the world's captions ("it moves.", "the waves roll.").
"""

from __future__ import annotations

from pathlib import Path

from setseq.data import write_video
from setseq.fileio import atomic_path
from setseq.toy import world

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
FRAMES, SIZE, FPS = 8, 64, 8.0  # rendered at twice the model's size; loading resizes to 32 x 32


def example_path(name: str) -> Path:
    return EXAMPLES_DIR / f"{name}.mp4"


def write_examples(folder: str | Path = EXAMPLES_DIR) -> list[Path]:
    """Render the three example concepts to `folder`/NAME.mp4 with NAME.txt prompts beside them."""
    folder = Path(folder)
    out = []
    for name in world.CONCEPTS:
        video = world.render(world.concept_scene(name), FRAMES, SIZE, SIZE).video
        path = write_video(folder / f"{name}.mp4", video, FPS)
        static, motion = world.concept_prompts(name)
        with atomic_path(path.with_suffix(".txt")) as tmp:
            tmp.write_text(f"# example concept '{name}' of the setseq toy world\nstatic: {static}\nmotion: {motion}\n")
        out.append(path)
    return out
