"""What a training micro-batch holds (setseq.batches), and the loss taken on it (batch_loss, flow.training_loss)."""

import pytest
import torch

from setseq import flow
from setseq.batches import Batches, ConceptSpec, LatentCache, batch_loss, mask_tokens
from setseq.config import RegConfig, StageConfig
from setseq.parallel import World

FRAMES = 4


def _concepts(n=2):
    g = torch.Generator().manual_seed(0)
    return [
        ConceptSpec(c, torch.rand(6, 3, 8, 8, generator=g), f"a [v{i}] square.", f"it moves in [u{i}] motion.")
        for i, c in enumerate("abc"[:n])
    ]


def _stage(train="motion", data="clip"):
    return StageConfig("s", data, "full", train, steps=1)


@pytest.mark.parametrize("batch, micro, ranks", [(8, None, 1), (8, 2, 1), (8, 2, 2), (2, None, 1), (6, 1, 3)])
@pytest.mark.parametrize("concepts", [1, 3])
def test_micro_batches_cover_the_batch_and_give_each_motion_concept_its_own(batch, micro, ranks, concepts):
    batches = Batches(_concepts(concepts), FRAMES, RegConfig())
    share = batch // ranks
    for train in ("identity", "motion"):
        sizes = batches.micro_sizes(_stage(train), batch, micro, ranks)
        assert sum(sizes) == batch and all(s > 0 and s % ranks == 0 for s in sizes)  # equal shares per rank
        if train == "motion" and concepts > 1:  # a micro-batch per concept, as far as the share allows
            assert len(sizes) >= min(concepts, share)
        else:
            assert sizes == [(micro or share) * ranks] * (share // (micro or share))


def test_a_motion_micro_batch_trains_one_concept_with_its_residual_alone():
    torch.manual_seed(0)
    specs = _concepts(3)
    batches = Batches(specs, FRAMES, RegConfig(stitch_prob=0.0, prompt_dropout=0.0, prior_preservation=False))
    for i in range(6):
        b = batches.draw(_stage("motion"), 4, i)
        on = specs[i % 3]
        assert b.motion == {c.name: float(c is on) for c in specs}
        assert b.clips.shape == (4, FRAMES, 3, 8, 8) and all(p == on.full_prompt for p in b.prompts)
    frames = batches.draw(_stage("identity", "frames"), 5, 0)
    assert frames.motion is None and frames.clips.shape == (5, 1, 3, 8, 8)  # a set of single frames
    assert all(p in (c.prompt for c in specs) for p in frames.prompts)  # static prompts only


def test_token_masking_never_masks_a_whole_prompt():
    torch.manual_seed(0)
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]] * 50)
    kept = mask_tokens(mask, 0.9)
    assert not (kept & ~mask).any() and kept.any(1).all() and kept.sum() < mask.sum()


def test_training_loss_in_velocity_and_x0_space():
    g = torch.Generator().manual_seed(0)
    x0, eps, v = (torch.randn(5, 2, 3, 4, generator=g) for _ in range(3))
    t = torch.rand(5, generator=g)
    exact = flow.target_velocity(x0, eps)
    for space in flow.LOSS_SPACES:
        torch.testing.assert_close(flow.training_loss(exact, x0, eps, t, space), torch.zeros(5), rtol=0, atol=1e-12)
    velocity = flow.training_loss(v, x0, eps, t, "velocity")
    torch.testing.assert_close(velocity, flow.loss_per_sample(v, exact))
    # x_t - t v - x0 = t (eps - x0 - v): the x0 loss is the velocity loss weighted by t^2
    torch.testing.assert_close(flow.training_loss(v, x0, eps, t, "x0"), t**2 * velocity)
    with pytest.raises(ValueError, match="loss space"):
        flow.training_loss(v, x0, eps, t, "eps")


def test_the_ranks_shares_of_a_batch_loss_sum_to_the_whole_batch_loss():
    """Each rank draws every sample's noise, timestep, token mask and self-conditioning coin but runs
    only its share, so the shares of two ranks add up to what one process computes alone."""
    from conftest import tiny_backbone, tiny_config

    bb = tiny_backbone()
    cfg = tiny_config(token_mask_prob=0.3, self_conditioning=True, self_cond_prob=0.5)
    g = torch.Generator().manual_seed(0)
    spec = ConceptSpec("a", torch.rand(6, 3, 16, 16, generator=g) * 2 - 1, "a [v] square.", "it moves in [u] motion.")
    torch.manual_seed(0)
    batch = Batches([spec], bb.geometry.frames, cfg.reg).draw(cfg.stages[1], 4, 0)
    batch.weights = torch.tensor([1.0, 0.5, 2.0, 1.0])

    def loss(world):
        torch.manual_seed(1)  # the same draws on every rank
        with torch.no_grad():
            return batch_loss(bb, batch, cfg, world)

    whole = loss(World())
    torch.testing.assert_close(loss(World(0, 2)) + loss(World(1, 2)), whole)
    assert loss(World(0, 2)) != loss(World(1, 2))  # two different shares, not the whole twice


def test_clip_windows_start_on_the_grid_and_at_the_last_window():
    """A 14-frame clip, windows of 5 on a grid of 4: starts 0, 4, 8 and 9 (the clip's end), each
    sample keyed by where it was cut from."""
    g = torch.Generator().manual_seed(0)
    spec = ConceptSpec("a", torch.rand(14, 3, 8, 8, generator=g), "a [v] square.", "it moves in [u] motion.")
    batches = Batches([spec], 5, RegConfig(prior_preservation=False, prompt_dropout=0.0), stride=4)
    torch.manual_seed(0)
    starts = []
    for i in range(40):
        batch = batches.draw(_stage(), 2, i)
        for clip, key in zip(batch.clips, batch.keys):
            kind, name, first, end = key
            assert (kind, name, end - first) == ("concept", "a", 5) and torch.equal(clip, spec.video[first:end])
            starts.append(first)
    assert set(starts) == {0, 4, 8, 9}


def test_the_latent_cache_encodes_each_window_once():
    calls = []
    cache = LatentCache(lambda clips: (calls.append(len(clips)), clips * 2)[1])
    clips = torch.rand(3, 2, 3, 4, 4)
    first = cache(clips, [("c", "a", 0, 2), None, ("c", "a", 4, 6)])
    again = cache(clips[[2, 1, 0]], [("c", "a", 4, 6), None, ("c", "a", 0, 2)])
    assert torch.equal(first, clips * 2) and torch.equal(again, clips[[2, 1, 0]] * 2)
    assert calls == [3, 1] and cache.encoded == 4  # the second time only the stitched sample (no key)
    cache(clips[[0, 0]], [("c", "b", 0, 2), ("c", "b", 0, 2)])  # twice in one batch: encoded once
    assert calls == [3, 1, 1]


@pytest.mark.parametrize("stitch_remove_background", [False, True])
def test_everything_a_run_draws_is_known_before_its_first_step(stitch_remove_background):
    """`Batches.prompts` and `Batches.windows` list every prompt and window that draws can hold (so the
    encoders can leave the GPU): stitched pairs, prior videos, prompt dropout, frames and clips."""
    torch.manual_seed(0)
    concepts = _concepts(3)
    for c in concepts:
        c.mask = torch.rand(6, 8, 8) > 0.5
    prior = (torch.rand(2, FRAMES, 3, 8, 8), [("a dog.", "it runs."), ("a cat.", "it sits.")])
    reg = RegConfig(
        stitch_prob=0.5, prompt_dropout=0.3, prior_ratio=0.3, stitch_remove_background=stitch_remove_background
    )
    batches = Batches(concepts, FRAMES, reg, prior, stride=2)
    stages = [StageConfig("set", "frames", "static", "identity", steps=1), _stage("motion", "clip")]
    prompts, windows = set(batches.prompts(stages)), {k for k, _ in batches.windows(stages)}
    drawn_prompts, drawn_keys = set(), set()
    for i in range(300):
        batch = batches.draw(stages[i % 2], 2, i)
        drawn_prompts.update(batch.prompts)
        drawn_keys.update(k for k in batch.keys if k is not None)
    assert drawn_prompts <= prompts and drawn_keys <= windows
    assert "" in drawn_prompts and any(k[0] == "prior" for k in drawn_keys) and len(drawn_prompts) > 10
    for key, clip in batches.windows(stages):  # each window is the frames its key names
        video = concepts[[c.name for c in concepts].index(key[1])].video if key[0] == "concept" else prior[0][key[1]]
        assert torch.equal(clip, video[key[2] : key[3]])
