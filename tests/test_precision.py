"""bf16 autocast on the toy base: chosen by CPU and width, overridable, and numbers within tolerance."""

import pytest
import torch

from setseq import flow, precision
from setseq.backbones.toy import PRESETS, ToyBackbone
from setseq.cli import main
from setseq.errors import SetseqError
from setseq.generate import generate
from setseq.toy.dit import Attention, DiTConfig


def _backbone(dim: int = 64) -> ToyBackbone:
    cfg, g = PRESETS["toy-tiny"]
    return ToyBackbone("toy-tiny", DiTConfig(**{**cfg.to_dict(), "dim": dim, "heads": dim // 32}), g, seed=0)


def test_the_environment_decides_over_the_cpu_and_the_width(monkeypatch):
    monkeypatch.setenv("SETSEQ_PRECISION", "fp32")
    assert not precision.use_bf16("cpu", width=4096)
    assert precision.describe("cpu", 4096) == "float32"
    monkeypatch.setenv("SETSEQ_PRECISION", "bf16")
    assert precision.use_bf16("cpu", width=8)
    assert not precision.use_bf16("cuda", width=4096)  # other devices keep their own dtypes
    monkeypatch.setenv("SETSEQ_PRECISION", "auto")
    wide, narrow = precision.MIN_WIDTH, precision.MIN_WIDTH - 1
    assert precision.use_bf16("cpu", wide) == precision.cpu_has_bf16()
    assert not precision.use_bf16("cpu", narrow)
    assert "float32" in precision.describe("cpu", narrow)
    monkeypatch.setenv("SETSEQ_PRECISION", "half")
    with pytest.raises(SetseqError, match="SETSEQ_PRECISION"):
        precision.use_bf16()


def test_the_cpu_probe_agrees_with_the_kernel_flags():
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        pytest.skip("no /proc/cpuinfo to compare with")
    assert precision.cpu_has_bf16() == (" amx_bf16" in flags or " avx512_bf16" in flags)


def test_the_backbone_takes_the_precision_its_width_calls_for(monkeypatch):
    monkeypatch.setenv("SETSEQ_PRECISION", "bf16")
    assert _backbone().bf16
    monkeypatch.setenv("SETSEQ_PRECISION", "auto")
    assert not _backbone(64).bf16  # narrower than MIN_WIDTH
    assert _backbone(precision.MIN_WIDTH).bf16 == precision.cpu_has_bf16()


# bf16 keeps 8 bits of mantissa: a relative error of ~0.4 % a product, a few % after the blocks.
TOLERANCE = 0.05


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_velocities_in_bf16_stay_within_tolerance_of_float32_and_stay_float32():
    bb = _backbone()
    g = bb.geometry
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, g.frames, 3, g.height, g.width, generator=gen)
    t = torch.tensor([0.3, 0.9])
    text = bb.encode_text(["a red circle on a blue background moves left", ""])
    bb.bf16 = False
    ref = bb.velocity(x, t, text)
    bb.bf16 = True
    out = bb.velocity(x, t, text)
    assert out.dtype == torch.float32 and all(p.dtype == torch.float32 for p in bb.parameters())
    assert 0.0 < _relative(out, ref) < TOLERANCE  # bf16 did run, and stayed close


def test_attention_under_bf16_autocast_trains_in_float32_and_samples_in_bf16():
    """With a backward to come the toy's attention leaves autocast for float32 (faster on the CPU);
    without one it stays bf16. Both stay within tolerance of float32 and carry gradients."""
    torch.manual_seed(0)
    attn = Attention(64, 2, kv_dim=32)
    x, ctx = torch.randn(2, 16, 64), torch.randn(2, 5, 32)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    ref = attn(x, ctx, key_mask=mask)
    with precision.autocast(True):
        trained = attn(x, ctx, key_mask=mask)
        with torch.no_grad():
            sampled = attn(x, ctx, key_mask=mask)
    assert trained.dtype == sampled.dtype == torch.bfloat16
    assert not torch.equal(trained, sampled)  # two paths ran
    assert _relative(trained.float(), ref) < TOLERANCE and _relative(sampled.float(), ref) < TOLERANCE
    trained.float().sum().backward()
    assert attn.q.weight.grad is not None and attn.q.weight.grad.abs().sum() > 0


def test_sampling_and_a_training_step_in_bf16_stay_within_tolerance():
    bb = _backbone()
    prompts = ["a green square on a white background moves up"]
    runs = {}
    for bf16 in (False, True):
        bb.bf16 = bf16
        video = generate(bb, prompts, steps=4, seed=0)
        x0 = video.detach()
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
        t = torch.full((1,), 0.6)
        for p in bb.transformer.parameters():
            p.requires_grad_(True)
        loss = (bb.velocity(flow.interpolate(x0, noise, t), t, bb.encode_text(prompts)) - (noise - x0)).pow(2).mean()
        loss.backward()
        grad = torch.cat([p.grad.flatten() for p in bb.transformer.parameters() if p.grad is not None])
        bb.transformer.zero_grad(set_to_none=True)
        runs[bf16] = video, loss.detach(), grad
    assert _relative(runs[True][0], runs[False][0]) < TOLERANCE
    assert abs(float(runs[True][1] - runs[False][1])) < TOLERANCE * float(runs[False][1])
    assert _relative(runs[True][2], runs[False][2]) < 2 * TOLERANCE  # gradients reach float32 weights


def test_a_plan_sets_every_phase_and_refuses_other_settings(tmp_path, capsys):
    from setseq.toylab.plans import PLANS, plan_phases

    phases = plan_phases("v2", tmp_path)
    assert [f.name for f, _ in phases] == [f"{i}-{name}" for i, (name, _) in enumerate(PLANS["v2"])]
    assert phases[0][1].init is None
    for (before, _), (_, cfg) in zip(phases, phases[1:]):
        assert cfg.init == str(before / "toy.safetensors")  # each phase starts from the one before
    assert len({(c.dim, c.depth, c.heads, c.frozen_words) for _, c in phases}) == 1
    with pytest.raises(SetseqError, match="unknown pretraining plan"):
        plan_phases("v9", tmp_path)
    assert main(["toy", "pretrain", "--plan", "v2", "--out", str(tmp_path), "--steps", "3"]) == 2
    assert "--plan sets every phase" in capsys.readouterr().err


def test_a_plan_keeps_finished_phases_resumes_the_others_and_ships_bf16(tmp_path, monkeypatch):
    from setseq.backbones.toy import load_file_weights, save_weights
    from setseq.toylab import plans
    from setseq.toylab import pretrain as pt

    calls, made = [], _backbone()

    def fake(folder, cfg, resume, **kwargs):
        calls.append((folder.name, resume))
        folder.mkdir(parents=True)
        save_weights(made, folder / "toy-tiny.safetensors")

    monkeypatch.setattr(pt, "pretrain", fake)
    phases = plans.plan_phases("v2", tmp_path, "toy-tiny")
    fake(phases[0][0], None, True)
    calls.clear()
    shipped = plans.pretrain_plan("v2", tmp_path, "toy-tiny")
    assert [name for name, _ in calls] == [f.name for f, _ in phases[1:]]
    assert all(resume for _, resume in calls)
    # the shipped file: the last phase's weights in bf16, computing in float32 once loaded
    loaded = load_file_weights(shipped, "toy-tiny")
    assert shipped.stat().st_size < 0.6 * (phases[-1][0] / "toy-tiny.safetensors").stat().st_size
    for (k, a), b in zip(made.state_dict().items(), loaded.state_dict().values()):
        assert b.dtype == a.dtype and torch.equal(b, a.to(torch.bfloat16).to(a.dtype)), k
