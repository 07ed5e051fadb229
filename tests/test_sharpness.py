"""The patch-grid sharpness measure: about 1.2 on rendered truth, well above where a grid shows."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from setseq.errors import SetseqError
from setseq.metrics.toy import background_grid, toy_metrics
from setseq.metrics.video import patch_grid_ratio
from setseq.toy import world


def _renders(n: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [world.render(world.sample_scene(rng, "train"), 8, 32, 32) for _ in range(n)]


def _blocky(video: torch.Tensor, patch: int = 4, offset: int = 0) -> torch.Tensor:
    """Each patch drawn as its mean colour (patches shifted right and down by `offset` pixels)."""
    shifted = torch.roll(video, (-offset, -offset), (-2, -1))
    blocks = F.interpolate(F.avg_pool2d(shifted, patch), scale_factor=patch, mode="nearest")
    return torch.roll(blocks, (offset, offset), (-2, -1))


def test_rendered_truth_scores_about_one_on_the_whole_frame_and_on_the_background():
    renders = _renders()
    whole = [patch_grid_ratio(r.video, 4) for r in renders]
    background = [background_grid(r.video) for r in renders]
    # the worst of 16 grid offsets: about 1.2 (1.0 at any one offset)
    assert 1.0 < np.mean(whole) < 1.3 and 1.0 < np.mean(background) < 1.35
    assert max(whole) < 1.6


def test_drawing_the_patch_grid_raises_the_score_wherever_the_grid_lies():
    for r in _renders(4):
        smooth = r.video + 0.02 * torch.randn(r.video.shape, generator=torch.Generator().manual_seed(0))
        grid = 0.5 * smooth + 0.5 * _blocky(r.video)  # half-way to flat patches
        assert patch_grid_ratio(grid, 4) > 1.5 * patch_grid_ratio(smooth, 4)
        # the same blocks off the model's grid (moved 1 or 2 pixels, as a moving sampler leaves them)
        for offset in (1, 2):
            moved = 0.5 * smooth + 0.5 * _blocky(r.video, offset=offset)
            assert patch_grid_ratio(moved, 4) == pytest.approx(patch_grid_ratio(grid, 4), rel=0.25)


def test_ignored_pixels_leave_the_score_and_bad_arguments_are_refused():
    video = _renders(1)[0].video
    flat = torch.zeros_like(video)
    assert patch_grid_ratio(flat, 4) == 1.0  # no gradient anywhere
    edge = flat.clone()
    edge[..., 4:] = 1.0  # one step, on a patch border
    assert patch_grid_ratio(edge, 4) == float("inf")
    ignore = torch.zeros(video.shape[0], 32, 32, dtype=torch.bool)
    ignore[..., 3:5] = True  # the step's pixels are left out: flat again
    assert patch_grid_ratio(edge, 4, ignore) == 1.0
    with pytest.raises(SetseqError, match="at least 2"):
        patch_grid_ratio(video, 1)
    with pytest.raises(SetseqError, match="no patch border"):
        patch_grid_ratio(video[..., :6, :6], 4)
    with pytest.raises(SetseqError, match="ignore mask"):
        patch_grid_ratio(video, 4, ignore[:, :8])


def test_toy_metrics_report_the_grid_of_the_clip_and_of_its_reference():
    r = _renders(1)[0]
    out = toy_metrics(_blocky(r.video), r.video, "sprite", reference_mask=r.mask)
    assert out["grid"] > 2 * out["grid_truth"] and 0.7 < out["grid_truth"] < 1.4
