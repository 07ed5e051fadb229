"""Sampling on a patch grid that moves at every step (`setseq.patch_shift`)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from setseq.backbones import load_backbone
from setseq.cli import main
from setseq.errors import SetseqError
from setseq.generate import generate
from setseq.metrics.toy import background_grid
from setseq.patch_shift import last_step_offsets, on_shifted_grid, shifting
from setseq.toy import world

P = 4


def patch_means(x, *_, grid_offset=(0.0, 0.0)):
    """A model that sees nothing beyond its own patch: each p x p patch becomes its mean."""
    lead, (c, h, w) = x.shape[:-3], x.shape[-3:]
    y = F.avg_pool2d(x.reshape(-1, c, h, w), P).repeat_interleave(P, -2).repeat_interleave(P, -1)
    return y.reshape(*lead, c, h, w)


@pytest.mark.parametrize("dy,dx", [(0, 0), (1, 3), (2, 2), (3, 0)])
def test_a_model_without_a_patch_grid_gives_the_same_output_on_any_shift(dy, dx):
    x, sc = torch.randn(2, 3, 3, 16, 12), torch.randn(2, 3, 3, 16, 12)
    t = torch.rand(2)  # not shaped like x: passed through untouched

    def pointwise(z, t_, s, grid_offset=(0.0, 0.0)):
        assert t_ is t and z.shape == s.shape
        assert z.shape[-2:] == ((16, 12) if (dy, dx) == (0, 0) else (16 + P, 12 + P))
        assert grid_offset == (-dy / P, -dx / P)  # where the first patch starts, in patches
        return 2 * z - s

    assert torch.allclose(on_shifted_grid(pointwise, x, dy, dx, P, t, sc), 2 * x - sc)


def test_the_patch_grid_moves_by_the_offset():
    x = torch.randn(1, 1, 3, 16, 16)
    flat_blocks = (
        lambda y, oy, ox: all(  # noqa: E731
            torch.allclose(block, block[..., :1, :1].expand_as(block), atol=1e-6)
            for i in range(oy, 16 - P + 1, P)
            for j in range(ox, 16 - P + 1, P)
            for block in [y[..., i : i + P, j : j + P]]
        )
    )
    plain = on_shifted_grid(patch_means, x, 0, 0, P)
    moved = on_shifted_grid(patch_means, x, 2, 1, P)  # the grid starts 2 rows up, 1 column left
    assert flat_blocks(plain, 0, 0) and not flat_blocks(plain, P - 2, P - 1)
    assert flat_blocks(moved, P - 2, P - 1) and not flat_blocks(moved, 0, 0)


def test_offsets_outside_the_patch_are_refused():
    with pytest.raises(ValueError, match="offsets"):
        on_shifted_grid(patch_means, torch.zeros(1, 1, 3, 8, 8), 4, 0, P)
    with pytest.raises(ValueError, match="mirroring"):
        on_shifted_grid(patch_means, torch.zeros(1, 1, 3, 4, 8), 1, 0, P)


def test_offsets_are_seeded_and_leave_the_global_random_state_alone():
    seen = []

    def record(x, *_, grid_offset):
        seen.append(grid_offset)
        return x

    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    for seed in (0, 0, 1):
        model = shifting(record, P, seed)
        for _ in range(12):
            model(torch.zeros(1, 1, 3, 8, 8), torch.ones(1))
    assert torch.rand(1) == before
    first, again, other = seen[:12], seen[12:24], seen[24:]
    assert first == again and first != other and len(set(first)) > 2


def test_the_last_step_averages_over_offsets_off_the_diagonal():
    calls = []

    def counted(x, t, *_, grid_offset=(0.0, 0.0)):
        calls.append(float(t[0]))
        return patch_means(x)

    x, final_t = torch.randn(1, 1, 3, 16, 16), 0.04
    model = shifting(counted, P, seed=0, final_t=final_t)
    model(x, torch.full((1,), 0.5))
    assert len(calls) == 1
    last = model(x, torch.full((1,), final_t))
    assert len(calls) == 1 + P
    offsets = last_step_offsets(P)
    assert sorted(dy for dy, _ in offsets) == sorted(dx for _, dx in offsets) == list(range(P))
    assert offsets != [(k, k) for k in range(P)]  # not the diagonal
    expected = sum(on_shifted_grid(patch_means, x, dy, dx, P) for dy, dx in offsets) / P
    assert torch.allclose(last, expected)
    # a model without a grid gives back what it gives unshifted
    triple = shifting(lambda z, *_, grid_offset: 3 * z, P, 0, final_t)
    assert torch.allclose(triple(x, torch.full((1,), final_t)), 3 * x)


def test_toy_sampling_shifts_by_default_reproducibly_and_can_be_turned_off():
    bb = load_backbone("toy-tiny")
    assert bb.sampling.patch_shift == bb.cfg.patch
    prompt = ["a red square on a blue background. it moves left."]
    a, b = (generate(bb, prompt, steps=3, seed=5) for _ in range(2))
    off = generate(bb, prompt, steps=3, seed=5, patch_shift=0)
    assert torch.equal(a, b) and not torch.allclose(a, off)
    with pytest.raises(SetseqError, match="0 or more"):
        generate(bb, prompt, steps=2, patch_shift=-1)


def test_moving_the_grid_keeps_every_pixels_position():
    """A model that draws where it is told each patch lies (its centre's pixel row and column)
    gives, on any grid, each pixel its own place to within half a patch and with no bias."""

    def centres(x, *_, grid_offset=(0.0, 0.0)):
        B, Fr, C, H, W = x.shape
        rows = (torch.arange(H // P) + grid_offset[0]) * P + (P - 1) / 2  # patch centres, pixels
        cols = (torch.arange(W // P) + grid_offset[1]) * P + (P - 1) / 2
        pic = torch.stack([rows[:, None].expand(-1, W // P), cols[None].expand(H // P, -1)])
        return pic.repeat_interleave(P, -2).repeat_interleave(P, -1)[None, None].expand(B, Fr, 2, H, W)

    x = torch.zeros(1, 1, 2, 16, 20)
    truth = torch.stack(torch.meshgrid(torch.arange(16.0), torch.arange(20.0), indexing="ij"))
    for dy, dx in [(0, 0), (1, 2), (3, 3)]:
        err = on_shifted_grid(centres, x, dy, dx, P)[0, 0] - truth
        assert err.abs().max() <= P / 2 and err.mean().abs() < 0.1


def test_the_dits_positions_move_with_the_offset():
    from setseq.toy.dit import rope_angles, sincos_embedding

    big = rope_angles(2, 5, 6, 32, 100.0).view(2, 5, 6, 16)
    part = rope_angles(2, 4, 4, 32, 100.0, offset=(1.0, 2.0)).view(2, 4, 4, 16)
    assert torch.allclose(part, big[:, 1:5, 2:6])  # whole-patch offsets: the same grid, further on
    half = sincos_embedding(1, 4, 4, 64, 100.0, offset=(-0.5, 0.0))
    assert not torch.allclose(half, sincos_embedding(1, 4, 4, 64, 100.0))


def test_only_a_model_that_can_move_its_grid_is_asked_to():
    bb = load_backbone("toy-tiny")
    bb.supports_patch_shift = False  # as a latent model
    prompt = ["a red square."]
    with pytest.raises(SetseqError, match="cannot move its patch grid"):
        generate(bb, prompt, steps=2, patch_shift=4)
    assert generate(bb, prompt, steps=2, patch_shift=0).shape[-1] == bb.geometry.width


def test_the_cli_takes_a_patch_shift_and_refuses_a_negative_one(tmp_path, capsys):
    assert main(["toy", "eval", "--base", "toy-tiny", "-n", "2", "--steps", "2", "--patch-shift", "0"]) == 0
    assert "patch grid" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit:  # argparse: usage and one sentence, exit code 2
        main(["toy", "eval", "--base", "toy-tiny", "--patch-shift", "-1"])
    assert exit.value.code == 2 and "pixels" in capsys.readouterr().err


def test_on_the_shipped_base_the_moving_grid_draws_fewer_seams():
    bb = load_backbone("toy")
    rng = np.random.default_rng(0)
    scenes = [world.sample_scene(rng, "heldout") for _ in range(4)]
    prompts = [world.caption_text(s) for s in scenes]
    grid = {
        shift: np.median([background_grid(v) for v in generate(bb, prompts, steps=15, seed=0, patch_shift=shift)])
        for shift in (0, bb.cfg.patch)
    }
    # measured on 48 held-out captions (2026-12-07): 1.91 on a fixed grid, 1.32 moving; truth about 1.1
    assert grid[bb.cfg.patch] < grid[0] - 0.2, grid
