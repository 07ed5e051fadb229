"""Preemption: a scheduler's SIGTERM (or Ctrl-C) finishes the step, writes the checkpoint and says how
to resume; the resumed run ends equal to an uninterrupted one; a second signal stops at once. The
signals are real (os.kill of this process), sent from inside a chosen training step."""

import os
import signal

import pytest
import torch

from conftest import tiny_backbone, tiny_config
from setseq import concept as cio
from setseq import data
from setseq.cli import main
from setseq.preempt import Preempted, StoppedAtOnce
from setseq.train import ConceptSpec, Trainer

STATIC, MOTION = "a [v] red square on a blue background.", "it moves in [u] motion."


def _config():
    cfg = tiny_config(steps=(3, 3), token_mask_prob=0.3, prompt_dropout=0.3)
    cfg.checkpoint_every = 1000  # no periodic checkpoint: a signal before it once lost everything
    return cfg


def _train(folder, resume=False):
    g = torch.Generator().manual_seed(0)
    spec = ConceptSpec("sq", torch.rand(6, 3, 16, 16, generator=g) * 2 - 1, STATIC, MOTION)
    return Trainer(tiny_backbone(), [spec], _config(), folder / "c.safetensors", progress=False).run(resume=resume)


def _signal_at(monkeypatch, step, signals):
    """Send `signals` to this process during optimiser step number `step` (1-based, over all stages)."""
    real, calls = Trainer._step, {"n": 0}

    def step_then_signal(self, *args):
        calls["n"] += 1
        loss = real(self, *args)
        if calls["n"] == step:
            for s in signals:
                os.kill(os.getpid(), s)
        return loss

    monkeypatch.setattr(Trainer, "_step", step_then_signal)
    return real


@pytest.mark.parametrize("step", [1, 3, 5])  # before any checkpoint, at the end of stage 1, inside stage 2
def test_sigterm_checkpoints_and_the_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch, step):
    full = _train(tmp_path)
    cut = tmp_path / "cut"
    cut.mkdir()
    real = _signal_at(monkeypatch, step, [signal.SIGTERM])
    with pytest.raises(Preempted) as stopped:
        _train(cut)
    assert stopped.value.code == 143
    assert "--resume" in str(stopped.value) and "c.ckpt" in str(stopped.value)
    assert sorted(p.name for p in cut.iterdir()) == ["c.ckpt"] + (["c.stage1.safetensors"] if step >= 3 else [])
    assert torch.load(cut / "c.ckpt", weights_only=False)["step"] == (0 if step == 3 else step - 3 * (step > 3))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the run's handler is gone
    monkeypatch.setattr(Trainer, "_step", real)
    resumed = _train(cut, resume=True)
    assert full.tensors.keys() == resumed.tensors.keys()
    assert all(torch.equal(full.tensors[k], resumed.tensors[k]) for k in full.tensors)
    assert full.meta["losses"] == resumed.meta["losses"]


def test_a_second_signal_stops_at_once(tmp_path, monkeypatch):
    _signal_at(monkeypatch, 2, [signal.SIGTERM, signal.SIGTERM])
    with pytest.raises(StoppedAtOnce) as stopped:
        _train(tmp_path)
    assert stopped.value.code == 143
    assert list(tmp_path.iterdir()) == []  # no checkpoint was due, and nothing half-written


def test_cli_exits_with_the_conventional_code_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    video = data.make_test_video(tmp_path / "clip.mp4", frames=8, size=(16, 16))
    args = ["train", str(video), "--prompt", STATIC, "--motion-prompt", MOTION, "--base", "toy-tiny"]
    args += ["--stage1-steps", "2", "--stage2-steps", "2", "--batch-size", "2", "--no-prior", "--quiet"]
    _signal_at(monkeypatch, 1, [signal.SIGINT])
    assert main(args) == 130
    err = capsys.readouterr().err
    assert "stopped by SIGINT after step 1 of 2" in err and "--resume" in err and "Traceback" not in err
    monkeypatch.undo()
    assert main([*args, "--resume"]) == 0
    assert cio.load(tmp_path / "clip.safetensors").meta["stage"] == "final"
    assert not (tmp_path / "clip.ckpt").exists()


def test_sigterm_outside_training_ends_a_command_without_leaving_temporary_files(tmp_path, monkeypatch, capsys):
    """`setseq generate` stopped by a scheduler while it writes its video: exit 143, nothing left."""
    video = data.make_test_video(tmp_path / "clip.mp4", frames=8, size=(16, 16))
    args = ["train", str(video), "--prompt", STATIC, "--motion-prompt", MOTION, "--base", "toy-tiny"]
    assert (
        main([*args, "--stage1-steps", "1", "--stage2-steps", "1", "--batch-size", "1", "--no-prior", "--quiet"]) == 0
    )
    from setseq.video import write as video_write

    real_encode = video_write._encode

    def encode_then_stop(file, *rest):
        real_encode(file, *rest)  # the temporary file is whole on disk now
        assert file.is_file()
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(video_write, "_encode", encode_then_stop)
    out = tmp_path / "gen" / "g.mp4"
    gen = ["generate", str(tmp_path / "clip.safetensors"), "--prompt", "a [v]. it moves in [u] motion."]
    assert main([*gen, "--steps", "1", "--out", str(out)]) == 143
    assert "Traceback" not in capsys.readouterr().err
    assert list(out.parent.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
