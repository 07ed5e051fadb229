"""Trainer properties: what changes, what stays bit-identical, resume, regularisers, presets."""

import dataclasses

import pytest
import torch

from conftest import tiny_backbone, tiny_config
from setseq import concept as cio
from setseq import lora
from setseq.config import PRESETS
from setseq.errors import SetseqError
from setseq.train import ConceptSpec, Trainer

STATIC, MOTION = "a [v] red square on a blue background.", "it moves in [u] motion."


def _spec(frames=6, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    video = torch.rand(frames, 3, 16, 16, generator=g) * 2 - 1
    return ConceptSpec(kw.pop("name", "sq"), video, kw.pop("prompt", STATIC), kw.pop("motion_prompt", MOTION), **kw)


def _train(tmp_path, cfg, name="c", specs=None, backbone=None, resume=False):
    bb = backbone or tiny_backbone()
    out = tmp_path / f"{name}.safetensors"
    result = Trainer(bb, specs or [_spec()], cfg, out, progress=False).run(resume=resume)
    return bb, result, out


def _probe(bb, prompt=f"{STATIC} {MOTION}"):
    """The model's velocity on a fixed input: a fingerprint of the function it computes."""
    g = torch.Generator().manual_seed(123)
    x = torch.randn(1, 4, 3, 16, 16, generator=g)
    bb.transformer.eval()
    with torch.no_grad():
        return bb.velocity(x, torch.tensor([0.5]), bb.encode_text([prompt]), None)


def test_only_adapter_parameters_change(tmp_path):
    bb = tiny_backbone()
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    _, result, _ = _train(tmp_path, tiny_config(), backbone=bb)
    adapter = (".basis", ".identity", ".motion.")
    after = {n.replace(".base_layer", ""): v for n, v in bb.state_dict().items() if not any(a in n for a in adapter)}
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # tokens stay at zero unless a token learning rate is set
    assert all(torch.equal(e, torch.zeros_like(e)) for e in result.tokens.values())
    # while the adapters did move
    assert any(v.abs().sum() > 0 for k, v in result.tensors.items() if k.endswith(".basis"))
    assert any(v.abs().sum() > 0 for k, v in result.tensors.items() if ".motion." in k)


def test_token_embeddings_train_at_their_own_rate(tmp_path):
    cfg = tiny_config()
    cfg.optim.token_lr = 1e-2
    _, result, _ = _train(tmp_path, cfg)
    assert set(result.tokens) == {"[v]", "[u]"}
    assert all(e.abs().sum() > 0 for e in result.tokens.values())


def test_stage_two_keeps_basis_and_identity_and_starts_at_stage_one(tmp_path):
    _, final, out = _train(tmp_path, tiny_config())
    stage1 = cio.load(tmp_path / "c.stage1.safetensors")
    for key, value in stage1.tensors.items():
        if key.endswith((".basis", ".identity")):
            assert torch.equal(value, final.tensors[key]), key
        if ".motion." in key:  # stage 2's coefficients start at zero: step 0 is the stage-1 model
            assert torch.equal(value, torch.zeros_like(value))
    # and the final model with its motion switched off computes exactly the stage-1 model
    a, b = tiny_backbone(), tiny_backbone()
    cio.apply(stage1, a)
    cio.apply(final, b)
    lora.set_scales(b.transformer, motion=0.0)
    assert torch.equal(_probe(a), _probe(b))
    lora.set_scales(b.transformer, motion=1.0)
    assert not torch.equal(_probe(a), _probe(b))


def test_train_basis_lets_stage_two_move_the_basis_but_not_the_identity_coefficients(tmp_path):
    cfg = tiny_config()
    cfg.stages[1].train_basis = True
    _, final, _ = _train(tmp_path, cfg)
    stage1 = cio.load(tmp_path / "c.stage1.safetensors")
    moved = [k for k in stage1.tensors if k.endswith(".basis") and not torch.equal(stage1.tensors[k], final.tensors[k])]
    assert moved
    assert all(torch.equal(v, final.tensors[k]) for k, v in stage1.tensors.items() if k.endswith(".identity"))
    with pytest.raises(SetseqError, match="motion stage only"):
        bad = tiny_config()
        bad.stages[0].train_basis = True
        bad.validate()


def test_first_stage_sees_single_frames_and_second_whole_clips(tmp_path, monkeypatch):
    shapes = []
    bb = tiny_backbone()
    real = bb.velocity

    def spy(x, t, text, sc=None):
        shapes.append(tuple(x.shape))
        return real(x, t, text, sc)

    monkeypatch.setattr(bb, "velocity", spy)
    _train(tmp_path, tiny_config(steps=(2, 2), self_conditioning=False), backbone=bb)
    assert shapes[:2] == [(2, 1, 3, 16, 16)] * 2
    assert shapes[2:] == [(2, 4, 3, 16, 16)] * 2


def test_random_windows_of_a_long_clip(tmp_path, monkeypatch):
    bb = tiny_backbone()
    seen = []
    real = bb.encode_video
    monkeypatch.setattr(bb, "encode_video", lambda v: (seen.append(v[:, 0, 0, 0, 0].clone()), real(v))[1])
    spec = _spec(frames=12)
    _train(tmp_path, tiny_config(method="lora", steps=(6,)), specs=[spec], backbone=bb)
    firsts = torch.cat(seen)
    starts = {int((spec.video[:, 0, 0, 0] == f).nonzero()[0]) for f in firsts}
    assert len(starts) > 1 and max(starts) <= 12 - 4


def _assert_same(a, b):
    assert a.tensors.keys() == b.tensors.keys()
    for k in a.tensors:
        assert torch.equal(a.tensors[k], b.tensors[k]), k
    assert a.meta["losses"] == b.meta["losses"]


@pytest.mark.parametrize("stop_at", [3, 5])  # inside stage 1, inside stage 2
def test_resumed_run_is_bit_identical(tmp_path, monkeypatch, stop_at):
    cfg = lambda: tiny_config(steps=(4, 4), prior=True, token_mask_prob=0.3, prompt_dropout=0.3)
    _, full, _ = _train(tmp_path / "full", cfg())
    calls = {"n": 0}
    real = Trainer._step

    def interrupted(self, *args):
        calls["n"] += 1
        if calls["n"] > stop_at:
            raise KeyboardInterrupt
        return real(self, *args)

    monkeypatch.setattr(Trainer, "_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "cut", cfg())
    assert (tmp_path / "cut" / "c.ckpt").is_file()
    assert not (tmp_path / "cut" / "c.safetensors").exists()
    monkeypatch.setattr(Trainer, "_step", real)
    _, resumed, _ = _train(tmp_path / "cut", cfg(), resume=True)
    _assert_same(full, resumed)
    assert not (tmp_path / "cut" / "c.ckpt").exists()  # removed once the run is complete


@pytest.mark.parametrize("stop_after", [2, 6])  # inside stage 1, inside stage 2 (of 4 + 4 steps)
def test_a_monitor_sees_every_step_and_its_stop_resumes_bit_identical(tmp_path, stop_after):
    from setseq.train import Monitor, Stopped

    class Watch(Monitor):
        flush_every = 1
        seen: list = []

        def start(self, cfg, done):
            self.seen.append(("start", done))

        def losses(self, stage_index, stage, step, losses):
            self.seen.append((stage_index, step, len(losses[stage.name])))

        def stop(self):  # asked after a step, before that step's loss is reported
            return sum(1 for s in self.seen if s[0] != "start") + 1 >= stop_after

    cfg = lambda: tiny_config(steps=(4, 4), prior=True, token_mask_prob=0.3, prompt_dropout=0.3)
    _, full, _ = _train(tmp_path / "full", cfg())
    out = tmp_path / "cut" / "c.safetensors"
    watch = Watch()
    with pytest.raises(Stopped):
        Trainer(tiny_backbone(), [_spec()], cfg(), out, progress=False, monitor=watch).run()
    assert out.with_suffix(".ckpt").is_file() and not out.exists()
    steps = [s for s in watch.seen if s[0] != "start"]
    assert watch.seen[0] == ("start", 0) and len(steps) == stop_after  # each step reported, with its loss
    assert steps == [(i // 4, i % 4 + 1, i % 4 + 1) for i in range(stop_after)]
    _, resumed, _ = _train(tmp_path / "cut", cfg(), resume=True)
    _assert_same(full, resumed)


def test_same_seed_repeats_a_run(tmp_path):
    _, a, _ = _train(tmp_path / "a", tiny_config())
    _, b, _ = _train(tmp_path / "b", tiny_config())
    _assert_same(a, b)
    cfg = tiny_config()
    cfg.seed = 1
    _, c, _ = _train(tmp_path / "c", cfg)
    assert not torch.equal(a.tensors["blocks.0.attn.q.basis"], c.tensors["blocks.0.attn.q.basis"])


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    bb = tiny_backbone()
    real, calls = bb.velocity, {"n": 0}

    def poisoned(x, t, text, sc=None):
        calls["n"] += 1
        v = real(x, t, text, sc)
        return v * float("nan") if calls["n"] > 12 else v

    monkeypatch.setattr(bb, "velocity", poisoned)
    cfg = tiny_config(steps=(20, 4), self_conditioning=False)
    cfg.checkpoint_every = 4
    with pytest.raises(SetseqError, match="non-finite.*last good checkpoint"):
        _train(tmp_path, cfg, backbone=bb)
    state = torch.load(tmp_path / "c.ckpt", weights_only=False)
    assert state["step"] == 12  # the checkpoint before the first bad step (13), not after it
    assert all(torch.isfinite(v).all() for v in state["tensors"].values())
    assert not (tmp_path / "c.safetensors").exists()


def test_prior_videos_are_generated_once_and_mixed_in(tmp_path, monkeypatch):
    import setseq.prior as prior_mod

    monkeypatch.setenv("SETSEQ_CACHE", str(tmp_path / "cache"))
    calls = []
    real = prior_mod.generate
    monkeypatch.setattr(prior_mod, "generate", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    _train(tmp_path / "a", tiny_config(prior=True))
    assert len(calls) == 2  # prior_videos = 2
    _train(tmp_path / "b", tiny_config(prior=True))
    assert len(calls) == 2  # the cache served the second run


@pytest.mark.parametrize("method", sorted(PRESETS))
def test_every_method_preset_trains_and_writes_its_parts(tmp_path, method):
    _, result, out = _train(tmp_path, tiny_config(method, steps=(2, 2)))
    keys = result.tensors.keys()
    has_motion = any(".motion." in k for k in keys)
    has_lora = any(k.endswith(".basis") for k in keys)
    assert has_motion == (method in ("setseq", "two-stage", "toy"))
    assert has_lora == (method != "textual-inversion")
    assert (tmp_path / "c.stage1.safetensors").exists() == (method in ("setseq", "two-stage", "toy"))
    if method == "textual-inversion":
        assert any(e.abs().sum() > 0 for e in result.tokens.values())


def test_prompts_must_carry_their_tokens(tmp_path):
    with pytest.raises(SetseqError, match=r"must contain its concept token \[v\]"):
        _train(tmp_path, tiny_config(), specs=[_spec(prompt="a red square")])
    with pytest.raises(SetseqError, match=r"motion token \[u\]"):
        _train(tmp_path, tiny_config(), specs=[_spec(motion_prompt="it moves")])
    with pytest.raises(SetseqError, match="needs 4"):
        _train(tmp_path, tiny_config(), specs=[_spec(frames=2)])
    assert list(tmp_path.iterdir()) == []


def test_two_concepts_get_their_own_motion(tmp_path):
    specs = [
        _spec(
            name="a",
            prompt="a [v1] square.",
            motion_prompt="it moves in [u1] motion.",
            identity_token="[v1]",
            motion_token="[u1]",
        ),
        _spec(
            seed=1,
            name="b",
            prompt="a [v2] ring.",
            motion_prompt="it moves in [u2] motion.",
            identity_token="[v2]",
            motion_token="[u2]",
        ),
    ]
    _, result, _ = _train(tmp_path, tiny_config(steps=(2, 6)), specs=specs)
    a = result.tensors["blocks.0.attn.q.motion.a"]
    b = result.tensors["blocks.0.attn.q.motion.b"]
    assert a.abs().sum() > 0 and b.abs().sum() > 0 and not torch.equal(a, b)
    assert [c["name"] for c in result.concepts] == ["a", "b"]


def test_validation_samples_are_written_every_n_steps(tmp_path):
    cfg = tiny_config(steps=(2, 2))
    cfg.validate_every = 2
    _, full, _ = _train(tmp_path, cfg)
    samples = sorted(p.name for p in (tmp_path / "c.samples").iterdir())
    assert samples == ["sequence-00002.mp4", "set-00002.mp4"]
    # sampling for validation draws no training randomness: the result equals a run without it
    _, plain, _ = _train(tmp_path / "plain", tiny_config(steps=(2, 2)))
    _assert_same(full, plain)


@pytest.mark.parametrize("method", ["setseq", "two-stage", "lora", "dreammix", "textual-inversion"])
def test_toy_scale_keeps_each_method_and_changes_only_its_numbers(method):
    """Only the numbers that suit a small model change: rank, lr, clip, steps, batch, timesteps; the
    stages, dropout, regularisers, adapted layers and concept-token rate are the preset's."""
    from setseq.config import TOY_STEPS, preset, toy_scale

    toy, paper = toy_scale(preset(method)), preset(method)
    assert [(s.name, s.data, s.prompt, s.train, s.coef_dropout, s.train_basis) for s in toy.stages] == [
        (s.name, s.data, s.prompt, s.train, s.coef_dropout, s.train_basis) for s in paper.stages
    ]
    assert toy.reg == dataclasses.replace(paper.reg, prompt_dropout=2 * paper.reg.prompt_dropout)
    assert toy.lora.targets == paper.lora.targets and toy.lora.scale == paper.lora.scale
    assert toy.lora.rank == 8 * paper.lora.rank  # high rank, with the same dropout on the coefficients
    assert toy.optim.lr == pytest.approx(10 * paper.optim.lr) and toy.optim.token_lr == paper.optim.token_lr
    # every method gets the same budget: TOY_STEPS for two stages, their sum for one
    assert [s.steps for s in toy.stages] == (list(TOY_STEPS) if len(paper.stages) == 2 else [sum(TOY_STEPS)])
    toy.validate()


def test_toy_preset_is_set_and_sequence_at_toy_scale():
    from setseq.config import preset, toy_scale

    toy, scaled = preset("toy"), toy_scale(preset("setseq"))
    assert toy.method == "toy" and toy.to_dict() == {**scaled.to_dict(), "method": "toy"}
    assert [s.steps for s in toy.stages] == [200, 550] and toy.lora.rank == 64 and toy.reg.prompt_dropout == 0.2


def test_toy_scale_refuses_a_method_it_cannot_map():
    from setseq.config import StageConfig, preset, toy_scale

    cfg = preset("setseq")
    cfg.stages.append(StageConfig("extra", data="clip", prompt="full", train="motion", steps=10))
    with pytest.raises(SetseqError, match="one- and two-stage"):
        toy_scale(cfg)
