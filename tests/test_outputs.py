"""Outputs that cannot be written: a folder in the way, a folder without write permission, a disk that
fills up. Each ends in one sentence and exit code 2, leaves no half-written or temporary file, and is
said before any training or sampling time is spent where it can be known in advance."""

import errno
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_backbone, tiny_config
from setseq import concept as cio
from setseq import data, fileio
from setseq.cli import main
from setseq.errors import SetseqError
from setseq.train import Trainer

PROMPT = ["--prompt", "a [v] red square on a blue background.", "--motion-prompt", "it moves in [u] motion."]
TRAIN = [
    "--base",
    "toy-tiny",
    "--stage1-steps",
    "2",
    "--stage2-steps",
    "2",
    "--batch-size",
    "2",
    "--no-prior",
    "--quiet",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("trained")
    video = data.make_test_video(d / "clip.mp4", frames=8, size=(16, 16))
    assert main(["train", str(video), *PROMPT, *TRAIN, "--out", str(d / "sq.safetensors")]) == 0
    return d / "sq.safetensors"


@pytest.fixture
def no_training(monkeypatch):
    """Any training or sampling started is a failure: the problem was knowable before."""

    def refuse(*args, **kwargs):
        raise AssertionError("training or sampling started")

    monkeypatch.setattr(Trainer, "run", refuse)
    monkeypatch.setattr("setseq.generate.generate", refuse)


def _one_sentence(capsys, *words):
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.startswith("setseq: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


def _commands(tmp_path, trained, out):
    video = data.make_test_video(tmp_path / "clip.mp4", frames=8, size=(16, 16))
    gen = ["--prompt", "a [v]. it moves in [u] motion.", "--steps", "2"]
    return {
        "train": ["train", str(video), *PROMPT, *TRAIN, "--out", str(out("c.safetensors"))],
        "generate": ["generate", str(trained), *gen, "--out", str(out("c.mp4"))],
        "export": ["export", str(trained), "--format", "diffusers", "--out", str(out("lora.safetensors"))],
    }


@pytest.mark.parametrize("suffixed", [False, True], ids=["out", "out.ext"])
@pytest.mark.parametrize("command", ["train", "generate", "export"])
def test_out_naming_an_existing_folder(tmp_path, trained, capsys, no_training, command, suffixed):
    suffix = {"train": ".safetensors", "generate": ".mp4", "export": ".safetensors"}[command]
    folder = tmp_path / ("out" + suffix * suffixed)
    folder.mkdir()
    args = _commands(tmp_path, trained, lambda name: folder)[command]
    before = sorted(tmp_path.rglob("*"))
    assert main(args) == 2
    _one_sentence(capsys, "is a folder", str(folder))
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EIO])
@pytest.mark.parametrize("command", ["train", "generate"])
def test_a_folder_that_refuses_files_is_said_before_any_work(
    tmp_path, trained, capsys, monkeypatch, no_training, command, code
):
    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    args = _commands(tmp_path, trained, lambda name: tmp_path / name)[command]
    monkeypatch.setattr(fileio.tempfile, "mkstemp", refuse)
    assert main(args) == 2
    line = _one_sentence(capsys, "could not write")
    said = {
        errno.EACCES: "permission denied",
        errno.EROFS: "read-only",
        errno.ENOSPC: "disk is full",
        errno.EDQUOT: "quota",
    }
    assert said.get(code, os.strerror(code).split()[0]) in line


def test_a_folder_without_write_permission(tmp_path, trained, capsys, no_training):
    if os.geteuid() == 0:  # root writes anywhere it may; sysfs takes no new files from anyone
        folder = Path("/sys")
        if not folder.is_dir():
            pytest.skip("no unwritable folder for root here")
    else:
        folder = tmp_path / "locked"
        folder.mkdir(mode=0o555)
    for command, args in _commands(tmp_path, trained, lambda name: folder / name).items():
        assert main(args) == 2, command
        _one_sentence(capsys, "could not write", str(folder))


def test_the_library_trainer_refuses_a_folder_before_training(tmp_path):
    from setseq.train import ConceptSpec

    spec = ConceptSpec("sq", torch.zeros(6, 3, 16, 16), "a [v] square.", "it moves in [u] motion.")
    (tmp_path / "c.ckpt").mkdir()  # the checkpoint's name is taken by a folder
    with pytest.raises(SetseqError, match="is a folder"):
        Trainer(tiny_backbone(), [spec], tiny_config(), tmp_path / "c.safetensors", progress=False)


# ----------------------------------------------------------------------------- a disk that fills up


def _writers(tmp_path, trained):
    cs = cio.load(trained)
    frames = torch.rand(8, 3, 64, 64) * 2 - 1  # noise: an encoded clip of some 100 KB
    from setseq import checkpoint
    from setseq.export import export

    return {
        "concept": lambda out: cio.save(cs, out / "c.safetensors"),
        "checkpoint": lambda out: checkpoint.save(
            out / "c.ckpt", cs.tensors, None, stage=0, step=1, losses={}, config={}, fingerprint=""
        ),
        "export": lambda out: export(cs, out / "lora.safetensors", "diffusers"),
        "video": lambda out: data.write_video(out / "v.mp4", frames, 8.0),
    }


@pytest.mark.parametrize("writer", ["concept", "checkpoint", "export", "video"])
def test_a_file_larger_than_the_disk_allows_leaves_nothing(tmp_path, trained, writer):
    """A real failed write, part way through: the file size limit (RLIMIT_FSIZE, as `ulimit -f`) stops
    every write past 4 KiB with EFBIG, as a full disk stops it with ENOSPC."""
    write = _writers(tmp_path, trained)[writer]
    out = tmp_path / "out"
    out.mkdir()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the limit's signal would end the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(SetseqError, match="could not write .*ulimit -f") as e:
            write(out)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    assert "\n" not in str(e.value)
    assert list(out.iterdir()) == []  # neither the file nor its temporary


def test_a_disk_that_fills_during_training_ends_in_one_sentence(tmp_path):
    """The whole CLI in a process whose writes stop past 20 KB: the stage-1 concept file fails part way.
    (With a real full disk, a 24 KiB tmpfs, the same run says "the disk is full"; mounting needs root.)"""
    video = data.make_test_video(tmp_path / "clip.mp4", frames=8, size=(16, 16))
    out = tmp_path / "out"
    out.mkdir()

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    proc = subprocess.run(
        [sys.executable, "-m", "setseq.cli", "train", str(video), *PROMPT, *TRAIN, "--out", str(out / "c.safetensors")],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        env={**os.environ, "SETSEQ_CACHE": str(tmp_path / "cache")},
    )
    assert proc.returncode == 2, proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("setseq: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr and "could not write" in errors[0], proc.stderr
    assert "ulimit -f" in errors[0]
    assert list(out.iterdir()) == []  # the stage-1 file was the first to fail: neither it nor its temporary


def test_a_disk_too_small_for_the_run_is_said_before_training(tmp_path, monkeypatch, capsys):
    import shutil

    steps = {"n": 0}
    real_step = Trainer._step

    def counted(self, *args):
        steps["n"] += 1
        return real_step(self, *args)

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda p: usage._replace(free=300_000))  # 0.3 MB free
    monkeypatch.setattr(Trainer, "_step", counted)
    video = data.make_test_video(tmp_path / "clip.mp4", frames=8, size=(16, 16))
    assert main(["train", str(video), *PROMPT, *TRAIN, "--out", str(tmp_path / "c.safetensors")]) == 2
    _one_sentence(capsys, "MiB free", "free some space")
    assert steps["n"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
