"""The web UI's workspace: one folder of files that the CLI reads and writes too.

    WORKSPACE/
      clips/NAME.mp4, NAME.txt, NAME.mask.mp4     uploaded clips with their caption and mask sidecars
      runs/RUN/RUN.safetensors                    the concept file (`setseq train --out`)
               RUN.stage1.safetensors, RUN.ckpt   stage 1's concept file, the checkpoint `--resume` reads
               RUN.samples/*.mp4                  validation samples (`--validate-every`)
               RUN.job.json                       the UI's record of the run: its flags, state and progress
               results/NNNN.mp4, .png, .json      generated videos, their frame strips and settings
               exports/*.safetensors              LoRA files (`setseq export`)
      .uploads/                                   the web server's temporary upload files

Every path the UI takes from a page is resolved here and refused when it leads outside the workspace
or the models folder (`Workspace.inside`).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from setseq.backbones import BASES
from setseq.errors import SetseqError

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif")
SIDECAR_SUFFIXES = (".txt",)
TOY_BASES = BASES  # the embedded ones, by name
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@dataclass
class Workspace:
    """The folders the UI may read and write.

    Args:
        root: the workspace folder (made when missing).
        models: a folder of local diffusers-format model folders offered as bases, or None.
        max_upload: the largest file accepted from a page, in bytes.
    """

    root: Path
    models: Path | None = None
    max_upload: int = 200 * 2**20

    def __post_init__(self):
        self.root = Path(self.root).expanduser().resolve()
        self.models = Path(self.models).expanduser().resolve() if self.models else None
        if self.models is not None and not self.models.is_dir():
            raise SetseqError(f"the models folder {str(self.models)!r} does not exist; pass an existing --models.")
        for d in (self.clips_dir, self.runs_dir, self.uploads_dir):
            d.mkdir(parents=True, exist_ok=True)

    clips_dir = property(lambda self: self.root / "clips")
    runs_dir = property(lambda self: self.root / "runs")
    uploads_dir = property(lambda self: self.root / ".uploads")

    # ---- paths -------------------------------------------------------------------------------

    def inside(self, path: str | Path, what: str = "the path") -> Path:
        """`path` resolved (relative paths against the workspace), when it lies in the workspace or the
        models folder.

        Raises:
            SetseqError: a path that leads outside them (`..`, an absolute path, a link out).
        """
        p = Path(path).expanduser()
        p = (p if p.is_absolute() else self.root / p).resolve()
        for allowed in (self.root, self.models):
            if allowed is not None and p.is_relative_to(allowed):
                return p
        raise SetseqError(
            f"{what} {str(path)!r} is outside the workspace {str(self.root)!r}; the UI reads and writes only there."
        )

    def run_dir(self, run: str) -> Path:
        """The folder of run `run`, checked to be a plain name (no path)."""
        check_name(run, "run name")
        return self.runs_dir / run

    def concept_file(self, run: str) -> Path:
        return self.run_dir(run) / f"{run}.safetensors"

    # ---- what is there -----------------------------------------------------------------------

    def clips(self) -> list[str]:
        """Names of the clips in clips/ (their files, masks left out), sorted."""
        return sorted(
            p.name
            for p in self.clips_dir.iterdir()
            if p.suffix.lower() in VIDEO_SUFFIXES and ".mask" not in p.name and not p.name.startswith(".")
        )

    def clip(self, name: str) -> Path:
        """The clip file `name` in clips/."""
        p = self.inside(self.clips_dir / name, "the clip")
        if p.parent != self.clips_dir or not p.is_file():
            raise SetseqError(f"there is no clip {name!r} in {str(self.clips_dir)!r}; upload it or pick another.")
        return p

    def runs(self) -> list[str]:
        """Names of the runs in runs/: folders holding a concept file, a checkpoint or a UI record."""
        out = []
        for d in sorted(self.runs_dir.iterdir()):
            n = d.name
            if d.is_dir() and NAME_RE.match(n) and any((d / f"{n}{s}").is_file() for s in RUN_FILES):
                out.append(n)
        return out

    def bases(self) -> list[str]:
        """Bases to train on: the toy ones, then each model folder (with a model_index.json) under models/."""
        found = []
        if self.models is not None:
            found = sorted(p.name for p in self.models.iterdir() if (p / "model_index.json").is_file())
        return [*TOY_BASES, *found]

    def base(self, choice: str) -> str:
        """What `load_backbone` takes for a base picked on the page: a toy name or a model folder's path."""
        if choice in TOY_BASES:
            return choice
        if self.models is None:
            raise SetseqError(f"unknown base {choice!r}; start `setseq ui --models FOLDER` to offer model folders.")
        p = self.inside(self.models / choice, "the base model")
        if p.parent != self.models or not (p / "model_index.json").is_file():
            raise SetseqError(f"there is no model folder {choice!r} in {str(self.models)!r}.")
        return str(p)

    # ---- bringing files in -------------------------------------------------------------------

    def add_clips(self, files: list[str | Path]) -> list[str]:
        """Move uploaded files into clips/: videos, and their NAME.txt and NAME.mask.* sidecars.
        Returns the names of the videos added. An upload must already lie in the workspace (the
        server writes uploads to .uploads/).

        A name's stem becomes a plain name (`plain_file_name`), the same for a clip and its sidecars.

        Raises:
            SetseqError: a file outside the workspace, over the size limit, or of a type that is not a
                video or a caption.
        """
        checked = []
        for f in files:
            p = self.inside(f, "the upload")
            size = p.stat().st_size
            if size > self.max_upload:
                raise SetseqError(
                    f"{p.name} is {size / 2**20:.1f} MiB, over the upload limit of "
                    f"{self.max_upload / 2**20:.0f} MiB; upload a shorter clip or restart with a larger --max-upload."
                )
            if p.suffix.lower() not in VIDEO_SUFFIXES + SIDECAR_SUFFIXES:
                raise SetseqError(
                    f"{p.name} is neither a video ({', '.join(VIDEO_SUFFIXES)}) nor a caption (.txt); "
                    "upload clips and their .txt files."
                )
            checked.append(p)
        added = []
        for p in checked:
            name = plain_file_name(p.name)
            shutil.copyfile(p, self.clips_dir / name)
            if p.suffix.lower() in VIDEO_SUFFIXES and ".mask" not in name:
                added.append(name)
        return added

    def add_examples(self) -> None:
        """Copy the package's example clips (with captions and masks) into clips/ where missing."""
        for p in sorted(EXAMPLES.iterdir()):
            if p.is_file() and not (self.clips_dir / p.name).exists():
                shutil.copyfile(p, self.clips_dir / p.name)


RUN_FILES = (".safetensors", ".ckpt", ".job.json")


def plain_file_name(name: str) -> str:
    """`my clip (2).mask.mp4` -> `my-clip-2.mask.mp4`: the stem in letters, digits, '_' and '-'."""
    stem, dot, rest = name.partition(".")
    stem = re.sub(r"[^A-Za-z0-9_]+", "-", stem).strip("-")[:64] or "clip"
    return stem + dot + re.sub(r"[^A-Za-z0-9.]+", "", rest)


def check_name(name: str, what: str) -> str:
    """A plain name: letters, digits, '_' and '-', at most 64, so it never names a path.

    Raises:
        SetseqError: any other name.
    """
    if not NAME_RE.match(name or ""):
        raise SetseqError(f"the {what} {name!r} may hold only letters, digits, '_' and '-' (at most 64); rename it.")
    return name
