"""Training over several processes (gloo on the CPU) trains on the very batches one process would,
whether the ranks hold whole models (data parallel) or shards of them (FSDP2); optimiser options."""

import datetime
import os
import signal
import socket
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

from conftest import tiny_backbone, tiny_config
from setseq import parallel
from setseq.cli import main
from setseq.config import OptimConfig, load_config
from setseq.errors import SetseqError
from setseq.preempt import Preempted
from setseq.train import ConceptSpec, Trainer

WORLD = 2


def _specs():
    """Two concepts, so that stitched clips and per-concept motion micro-batches are drawn too."""
    specs = []
    for i in (1, 2):
        g = torch.Generator().manual_seed(i)
        video = torch.rand(6, 3, 16, 16, generator=g) * 2 - 1
        specs.append(
            ConceptSpec(
                f"c{i}",
                video,
                f"a [v{i}] square.",
                f"it moves in [u{i}] motion.",
                identity_token=f"[v{i}]",
                motion_token=f"[u{i}]",
            )
        )
    return specs


def _config(shard=False):
    # every random regulariser on; two steps of stage 1, one of stage 2; a global batch of 4
    cfg = tiny_config(steps=(2, 1), batch=4, prior=True, token_mask_prob=0.3, prompt_dropout=0.3, stitch_prob=0.5)
    cfg.checkpoint_every = 1
    cfg.validate_every = 2  # a sample video after stage 1: sharded, every rank must take part
    cfg.optim.token_lr = 1e-2  # concept tokens live outside the sharded transformer: summed by hand
    cfg.shard = shard
    return cfg


def _run(out_dir, shard=False, resume=False):
    """Train; returns the concept set and each step's gradients before clipping (the weights alone
    would hide a wrong gradient scale: clipping and Adam's update hardly depend on it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    grads = []

    def recording(clip):
        def record_then_clip(params, max_norm):
            grads.append([None if p.grad is None else parallel.full_tensor(p.grad).clone() for p in params])
            return clip(params, max_norm)

        return record_then_clip

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.nn.utils, "clip_grad_norm_", recording(torch.nn.utils.clip_grad_norm_))
        patch.setattr(parallel, "clip_grad_norm", recording(parallel.clip_grad_norm))  # the sharded one
        trainer = Trainer(tiny_backbone(), _specs(), _config(shard), out_dir / "c.safetensors", progress=False)
        result = trainer.run(resume=resume)
    return result, grads


def _cut_and_resumed(out_dir, shard):
    """A run stopped in its second step (after the first step's checkpoint), then resumed."""
    real, calls = Trainer._step, {"n": 0}

    def step(self, *args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, *args)

    real_save = Trainer._save_checkpoint

    def slow_save(self, *args):  # rank 0 is slow to write: the other rank must wait for it to resume
        if self.world.main:
            time.sleep(1.0)
        return real_save(self, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "_step", step)
        patch.setattr(Trainer, "_save_checkpoint", slow_save)
        with pytest.raises(KeyboardInterrupt):
            _run(out_dir, shard)
    if os.environ["RANK"] == "0":  # the writer
        assert (out_dir / "c.ckpt").is_file()
    return _run(out_dir, shard, resume=True)[0]


def _preempted_and_resumed(out_dir):
    """Rank 1 alone receives SIGTERM in the first step (as when a scheduler stops one node first):
    both ranks stop after that step, rank 0 writes the checkpoint, and the resumed run completes."""
    real, calls = Trainer._step, {"n": 0}

    def step(self, *args):
        loss = real(self, *args)
        calls["n"] += 1
        if calls["n"] == 1 and os.environ["RANK"] == "1":
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "_step", step)
        with pytest.raises(Preempted):
            _run(out_dir)
    if os.environ["RANK"] == "0":
        assert torch.load(out_dir / "c.ckpt", weights_only=False)["step"] == 1
    return _run(out_dir, resume=True)[0]


def _worker(rank, port, root):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    # a rank left waiting on a collective fails the test in a minute, not gloo's default 30
    torch.distributed.init_process_group("gloo", timeout=datetime.timedelta(seconds=90))
    try:
        for kind in ("ddp", "fsdp"):
            result, grads = _run(root / kind, shard=kind == "fsdp")
            resumed = _cut_and_resumed(root / f"{kind}-resumed", shard=kind == "fsdp")
            preempted = _preempted_and_resumed(root / "ddp-preempted") if kind == "ddp" else resumed
            torch.save(
                {
                    "tensors": result.tensors,
                    "losses": result.meta["losses"],
                    "grads": grads,
                    "resumed": resumed.tensors,
                    "preempted": preempted.tensors,
                },
                root / f"{kind}-rank{rank}.pt",
            )
    finally:
        parallel.shutdown()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _close(a, b, atol=1e-6):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=atol), (k, (a[k] - b[k]).abs().max())


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without torch.distributed")
def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path):
    single, grads = _run(tmp_path / "single")  # also fills the prior-video cache that the ranks then read
    mp.spawn(_worker, args=(_free_port(), tmp_path), nprocs=WORLD)
    for kind in ("ddp", "fsdp"):
        ranks = [torch.load(tmp_path / f"{kind}-rank{r}.pt") for r in range(WORLD)]
        assert len(ranks[0]["grads"]) == len(grads) == 3  # two steps of stage 1, one of stage 2
        for theirs, ours in zip(ranks[0]["grads"], grads):
            assert [g is None for g in theirs] == [g is None for g in ours]
            for a, b in zip(theirs, ours):
                assert a is None or torch.allclose(a, b, rtol=1e-4, atol=1e-7), (kind, (a - b).abs().max())
        _close(ranks[0]["tensors"], single.tensors)
        _close(ranks[1]["tensors"], ranks[0]["tensors"], atol=0)  # the ranks agree exactly
        _close(ranks[0]["resumed"], single.tensors)  # resuming from rank 0's checkpoint
        _close(ranks[0]["preempted"], single.tensors)  # a SIGTERM on one rank stopped both at one step
        _close(ranks[1]["preempted"], ranks[0]["preempted"], atol=0)
        for stage, losses in single.meta["losses"].items():
            assert ranks[0]["losses"][stage] == pytest.approx(losses, rel=1e-5, abs=1e-7)
        assert any(v.abs().sum() > 0 for k, v in single.tensors.items() if ".motion." in k)
        # only rank 0 wrote files, and the run cleaned up its checkpoint
        for run in (kind, f"{kind}-resumed"):
            assert sorted(p.name for p in (tmp_path / run).iterdir()) == [
                "c.safetensors",
                "c.samples",
                "c.stage1.safetensors",
            ]


def test_a_batch_that_does_not_split_over_the_processes_is_refused():
    with pytest.raises(SetseqError, match="batch size 4 cannot be split evenly over 3 processes"):
        parallel.check_batch(OptimConfig(batch_size=4), 3)
    with pytest.raises(SetseqError, match="micro batch 2 does not divide"):
        parallel.check_batch(OptimConfig(batch_size=6, micro_batch=2), 2)
    parallel.check_batch(OptimConfig(batch_size=8, micro_batch=2), 2)


def test_cli_refuses_an_uneven_split_before_loading_anything(tmp_path, monkeypatch, capsys):
    from setseq import data

    video = data.make_test_video(tmp_path / "clip.mp4", frames=8, size=(16, 16))
    monkeypatch.setenv("WORLD_SIZE", "3")  # as torchrun --nproc-per-node 3 would set it
    args = [
        "train",
        str(video),
        "--prompt",
        "a [v] square.",
        "--motion-prompt",
        "it moves in [u] motion.",
        "--base",
        "toy-tiny",
        "--batch-size",
        "4",
        "--quiet",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "batch size 4 cannot be split evenly over 3 processes" in err
    assert not torch.distributed.is_initialized()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_adamw8bit_without_bitsandbytes_is_one_clear_error(tmp_path, monkeypatch, capsys):
    from setseq import data

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if it were not installed
    video = data.make_test_video(tmp_path / "clip.mp4", frames=8, size=(16, 16))
    args = [
        "train",
        str(video),
        "--prompt",
        "a [v] square.",
        "--motion-prompt",
        "it moves in [u] motion.",
        "--base",
        "toy-tiny",
        "--optimizer",
        "adamw8bit",
        "--quiet",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "setseq: error: --optimizer adamw8bit needs bitsandbytes, which is not installed; "
        "run `pip install bitsandbytes` or use --optimizer adamw."
    ]
    with pytest.raises(SetseqError, match="pip install bitsandbytes"):
        Trainer(tiny_backbone(), _specs()[:1], _with(tiny_config(), optimizer="adamw8bit"), tmp_path / "c.safetensors")


def _with(cfg, **optim):
    for k, v in optim.items():
        setattr(cfg.optim, k, v)
    return cfg


def test_new_settings_round_trip_through_a_config_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('compile = true\nshard = true\n[optim]\noptimizer = "adamw8bit"\n')
    cfg = load_config(path)
    assert (cfg.compile, cfg.shard, cfg.optim.optimizer) == (True, True, "adamw8bit")
    # and back: the settings as a TOML file give the same configuration
    d = cfg.to_dict()
    path.write_text(
        f"compile = {str(d['compile']).lower()}\nshard = {str(d['shard']).lower()}\n"
        f'[optim]\noptimizer = "{d["optim"]["optimizer"]}"\n'
    )
    assert load_config(path).to_dict() == d
    assert load_config(None).to_dict()["optim"]["optimizer"] == "adamw"
    path.write_text('[optim]\noptimizer = "sgd"\n')
    with pytest.raises(SetseqError, match="unknown optimizer 'sgd'"):
        load_config(path).validate()


def test_cli_flags_set_the_new_settings():
    from setseq.cli import build_parser
    from setseq.cli.train import config_from_args as _config_from_args

    a = build_parser().parse_args(["train", "x.mp4", "--optimizer", "adamw8bit", "--compile", "--shard"])
    cfg = _config_from_args(a)
    assert (cfg.compile, cfg.shard, cfg.optim.optimizer) == (True, True, "adamw8bit")
    a = build_parser().parse_args(["train", "x.mp4"])
    cfg = _config_from_args(a)
    assert (cfg.compile, cfg.shard, cfg.optim.optimizer) == (False, False, "adamw")
