import pytest
import torch

from conftest import tiny_backbone
from setseq import flow


def test_interpolation_endpoints_and_target():
    x0, eps = torch.randn(3, 2, 4, 5), torch.randn(3, 2, 4, 5)
    assert torch.equal(flow.interpolate(x0, eps, torch.zeros(3)), x0)
    assert torch.equal(flow.interpolate(x0, eps, torch.ones(3)), eps)
    # the target is the time derivative of the path
    t, dt = torch.full((3,), 0.3), 1e-3
    fd = (flow.interpolate(x0, eps, t + dt) - flow.interpolate(x0, eps, t)) / dt
    torch.testing.assert_close(fd, flow.target_velocity(x0, eps), rtol=1e-2, atol=1e-2)


def test_loss_is_zero_for_true_velocity_and_positive_otherwise():
    x0, eps = torch.randn(4, 3, 8), torch.randn(4, 3, 8)
    v = flow.target_velocity(x0, eps)
    assert torch.equal(flow.loss_per_sample(v, v), torch.zeros(4))
    assert (flow.loss_per_sample(v + 0.1, v) > 0).all()


def test_sampler_with_zero_velocity_returns_its_input():
    noise = torch.randn(2, 3, 4, 4, 4)
    out = flow.euler_sample(lambda x, t, sc: torch.zeros_like(x), noise, steps=7, shift=3.0, self_condition=True)
    assert torch.equal(out, noise)


def test_sampler_recovers_data_under_the_true_velocity():
    """On a straight path the Euler sampler is exact: v = eps - x0 brings noise back to x0."""
    x0, eps = torch.randn(2, 5), torch.randn(2, 5)
    out = flow.euler_sample(lambda x, t, sc: eps - x0, eps, steps=4)
    torch.testing.assert_close(out, x0)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_schedule_from_a_partial_noise_level(shift):
    ts = flow.schedule(10, shift, start=0.7)
    assert ts[0].item() == pytest.approx(0.7) and ts[-1].item() == 0.0
    assert (ts[1:] < ts[:-1]).all()
    assert torch.allclose(flow.schedule(10, shift, start=1.0), flow.schedule(10, shift))


def test_sampler_from_a_partly_noised_sample_recovers_the_data():
    """Started at x_t on the straight path at t = start, the true velocity lands on x0 exactly."""
    x0, eps = torch.randn(2, 5), torch.randn(2, 5)
    x_start = flow.interpolate(x0, eps, torch.full((2,), 0.4))
    out = flow.euler_sample(lambda x, t, sc: eps - x0, x_start, steps=3, shift=3.0, start=0.4)
    torch.testing.assert_close(out, x0)


def test_self_conditioning_passes_the_previous_estimate():
    x0, eps = torch.randn(1, 3), torch.randn(1, 3)
    seen = []

    def v(x, t, sc):
        seen.append(sc)
        return eps - x0

    flow.euler_sample(v, eps, steps=3, self_condition=True)
    assert seen[0] is None
    torch.testing.assert_close(seen[1], x0)


def test_timesteps_in_range_and_shift_moves_them_to_noise():
    g = torch.Generator().manual_seed(0)
    for kind in ("uniform", "logit-normal"):
        t = flow.sample_timesteps(4000, kind, generator=g)
        assert t.min() > 0 and t.max() < 1
    t = flow.sample_timesteps(4000, "uniform", generator=torch.Generator().manual_seed(0))
    ts = flow.sample_timesteps(4000, "uniform", shift=3.0, generator=torch.Generator().manual_seed(0))
    assert ts.mean() > t.mean() + 0.1


def test_guidance_formula():
    vc, vu = torch.tensor([2.0]), torch.tensor([1.0])
    assert flow.guide(vc, vu, 1.0).item() == 2.0
    assert flow.guide(vc, vu, 8.0).item() == 9.0


def test_guidance_interval_guides_inside_it_only_with_one_pass_outside():
    from setseq.errors import SetseqError
    from setseq.generate import generate

    bb = tiny_backbone()
    batches = []  # the batch size of every forward pass: 2 when guided (cond + uncond), 1 when not
    velocity = bb.velocity
    bb.velocity = lambda x, t, text, sc: batches.append(len(x)) or velocity(x, t, text, sc)
    prompt, steps = ["a red square."], 4

    def run(interval, guidance=3.0):
        batches.clear()
        # a fixed patch grid: one forward pass a step (a moving one averages its last step's)
        out = generate(bb, prompt, steps=steps, guidance=guidance, guidance_interval=interval, seed=0, patch_shift=0)
        return out, list(batches)

    every, every_batches = run((0.0, 1.0))
    none, none_batches = run((0.0, 1e-6))  # no step's noise level lies in (0, 1e-6]
    plain, _ = run((0.0, 1.0), guidance=1.0)
    part, part_batches = run((0.6, 1.0))
    ts = flow.schedule(steps, bb.sampling.shift)[:-1]
    assert every_batches == [2] * steps and none_batches == [1] * steps
    assert part_batches == [2 if t > 0.6 else 1 for t in ts.tolist()] and 1 in part_batches and 2 in part_batches
    assert torch.equal(none, plain)  # outside the interval: exactly the conditional velocity
    assert not torch.allclose(part, every) and not torch.allclose(part, none)
    for bad in ((0.5, 0.5), (-0.1, 1.0), (0.2, 1.5)):
        with pytest.raises(SetseqError):
            generate(bb, prompt, steps=2, guidance=3.0, guidance_interval=bad)


def test_generate_from_init_keeps_what_survives_the_noise():
    from setseq.errors import SetseqError
    from setseq.generate import generate

    bb = tiny_backbone()
    init = torch.rand((2, *bb.latent_shape(bb.geometry))) * 2 - 1
    near = generate(bb, ["a red square.", "a blue circle."], steps=2, seed=0, init=init, start=0.02)
    far = generate(bb, ["a red square.", "a blue circle."], steps=2, seed=0)
    assert (near - init).abs().mean() < 0.05 < (far - init).abs().mean()
    with pytest.raises(SetseqError):
        generate(bb, ["a red square."], steps=2, init=init, start=0.5)  # two videos, one prompt
    with pytest.raises(SetseqError):
        generate(bb, ["a red square.", "a blue circle."], steps=2, init=init, start=0.0)
    with pytest.raises(SetseqError):
        generate(bb, ["a red square."], steps=2, start=0.5)  # nothing to noise
