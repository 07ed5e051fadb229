"""Several concepts: joint training, stitched clips, per-concept scales, restyling controls."""

from dataclasses import replace

import pytest
import torch

from conftest import tiny_backbone, tiny_config
from setseq import concept as cio
from setseq import data, lora, stitch
from setseq.cli import main
from setseq.errors import SetseqError
from setseq.train import ConceptSpec, Trainer


def _two_specs():
    g = torch.Generator().manual_seed(0)
    left = torch.full((6, 3, 16, 16), -0.8)  # two concepts with clearly different looks
    right = torch.rand(6, 3, 16, 16, generator=g)
    return [
        ConceptSpec("a", left, "a [v1] square.", "it moves in [u1] motion.", "[v1]", "[u1]"),
        ConceptSpec("b", right, "a [v2] ring.", "it moves in [u2] motion.", "[v2]", "[u2]"),
    ]


def _velocity_spy(bb, monkeypatch):
    seen = []
    real_t = bb.encode_text
    monkeypatch.setattr(bb, "encode_text", lambda prompts: (seen.append(("text", list(prompts))), real_t(prompts))[1])
    monkeypatch.setattr(bb, "encode_video", lambda v: (seen.append(("video", v.clone())), v)[1])
    return seen


def test_stitched_clips_put_two_concepts_side_by_side_with_the_composed_prompt(tmp_path, monkeypatch):
    bb = tiny_backbone()
    seen = _velocity_spy(bb, monkeypatch)
    cfg = tiny_config(steps=(2, 2), stitch_prob=1.0, self_conditioning=False)
    Trainer(bb, _two_specs(), cfg, tmp_path / "ab.safetensors", progress=False).run()
    videos = [v for kind, v in seen if kind == "video"]
    texts = [t for kind, t in seen if kind == "text"]
    assert videos
    for clip in videos:  # (n, F, C, 16, 16): one half is exactly the flat concept a, the other is not
        halves = [clip[..., :, :8], clip[..., :, 8:], clip[..., :8, :], clip[..., 8:, :]]
        flat = [(h + 0.8).abs().flatten(1).amax(1) < 1e-5 for h in halves]  # each (n,)
        other = {0: 1, 1: 0, 2: 3, 3: 2}
        for i in range(clip.shape[0]):
            hits = [k for k in range(4) if flat[k][i]]
            assert len(hits) == 1 and not flat[other[hits[0]]][i]
    for batch in texts:
        for p in batch:
            assert p == "" or ("[v1]" in p and "[v2]" in p)
    assert any("[u1]" in p and "[u2]" in p for batch in texts for p in batch)  # stage 2: full prompts


def test_motion_stage_trains_each_residual_on_its_own_concept(tmp_path, monkeypatch):
    bb = tiny_backbone()
    log = []
    real = lora.set_scales

    def spy(model, identity=None, motion=None, rank_weights=None):
        if isinstance(motion, dict):
            log.append(dict(motion))
        return real(model, identity, motion, rank_weights)

    monkeypatch.setattr(lora, "set_scales", spy)
    seen = _velocity_spy(bb, monkeypatch)
    cfg = tiny_config(steps=(1, 2), stitch_prob=0.0)
    Trainer(bb, _two_specs(), cfg, tmp_path / "ab.safetensors", progress=False).run()
    assert {"a": 1.0, "b": 0.0} in log and {"a": 0.0, "b": 1.0} in log
    stage2_texts = [t for kind, t in seen if kind == "text"][1:]
    for batch in stage2_texts:  # a motion micro-batch holds a single concept
        tokens = {tok for p in batch for tok in ("[u1]", "[u2]") if tok in p}
        assert len(tokens) <= 1


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("pair")
    cfg = tiny_config(steps=(2, 3))
    cfg.optim.lr = 1e-2
    Trainer(tiny_backbone(), _two_specs(), cfg, d / "ab.safetensors", progress=False).run()
    return d / "ab.safetensors"


def _probe(bb):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 4, 3, 16, 16, generator=g)
    with torch.no_grad():
        return bb.velocity(x, torch.tensor([0.4]), bb.encode_text(["a [v1] square. a [v2] ring. [u1] [u2]"]))


def test_scale_keys_reach_the_right_concept(pair):
    cs = cio.load(pair)
    identity, motion = cio.resolve_scales(cs, {"u1": 0.0, "v1": 0.5})
    assert identity == 0.5 and motion == {"a": 0.0}
    with pytest.raises(SetseqError, match="shared by all concepts"):
        cio.resolve_scales(cs, {"v1": 0.5, "v2": 1.0})
    with pytest.raises(SetseqError, match="does not have"):
        cio.resolve_scales(cs, {"u9": 1.0})
    # switching u1 off equals deleting concept a's residual, and leaves b's in place
    scaled, deleted = tiny_backbone(), tiny_backbone()
    cio.apply(cs, scaled)
    lora.set_scales(scaled.transformer, motion={"a": 0.0})
    trimmed = cio.ConceptSet(
        {k: (torch.zeros_like(v) if ".motion.a" in k else v) for k, v in cs.tensors.items()}, cs.meta
    )
    cio.apply(trimmed, deleted)
    torch.testing.assert_close(_probe(scaled), _probe(deleted))
    lora.set_scales(scaled.transformer, motion={"a": 1.0, "b": 0.0})
    assert not torch.allclose(_probe(scaled), _probe(deleted))


def test_rank_weights_reweight_only_the_identity_part(pair):
    cs = cio.load(pair)
    a, b = tiny_backbone(), tiny_backbone()
    cio.apply(cs, a)
    cio.apply(cs, b)
    r = cs.meta["rank"]
    lora.set_scales(a.transformer, rank_weights=torch.full((r,), 0.5))
    lora.set_scales(b.transformer, identity=0.5)  # uniform weights are the identity scale
    torch.testing.assert_close(_probe(a), _probe(b))


def test_generate_with_scales_and_rank_weights_through_the_cli(pair, tmp_path):
    out = tmp_path / "ab.mp4"
    args = [
        "generate",
        str(pair),
        "--prompt",
        "a [v1] square. a [v2] ring.",
        "--out",
        str(out),
        "--steps",
        "2",
        "--scale",
        "u1=0.5,u2=1",
        "--rank-weights",
        ",".join(["1"] * 8),
    ]
    assert main(args) == 0 and out.is_file()
    assert main([*args[:-1], "1,2"]) == 2


def test_concept_list_file(tmp_path):
    for name in ("x", "y"):
        data.make_test_video(tmp_path / f"{name}.mp4", frames=6, size=(16, 16))
    (tmp_path / "set.toml").write_text(
        '[[concept]]\nvideo = "x.mp4"\nname = "first"\nprompt = "a [v1] square."\nmotion_prompt = "it moves in [u1] motion."\n'
        '[[concept]]\nvideo = "y.mp4"\nprompt = "a [v2] ring."\nmotion_prompt = "it moves in [u2] motion."\n'
    )
    out = tmp_path / "set.safetensors"
    args = [
        "train",
        "--concepts",
        str(tmp_path / "set.toml"),
        "--base",
        "toy-tiny",
        "--stage1-steps",
        "1",
        "--stage2-steps",
        "1",
        "--batch-size",
        "2",
        "--no-prior",
        "--quiet",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert [c["name"] for c in cio.load(out).concepts] == ["first", "y"]
    (tmp_path / "bad.toml").write_text('[[concept]]\nprompt = "a [v1]"\n')
    assert main([*args[:2], str(tmp_path / "bad.toml"), *args[3:]]) == 2


# --------------------------------------------------------------------------------------------
# Stitched clips with backgrounds removed
# --------------------------------------------------------------------------------------------


def _masked_pair(F=2, H=16, W=16):
    """Two clips with noisy backgrounds and flat square subjects, and the subjects' masks."""
    g = torch.Generator().manual_seed(1)
    xa, xb = torch.rand(F, 3, H, W, generator=g) - 0.5, torch.rand(F, 3, H, W, generator=g) - 0.5
    ma, mb = torch.zeros(F, H, W, dtype=torch.bool), torch.zeros(F, H, W, dtype=torch.bool)
    ma[:, 4:12, 2:10], mb[:, 3:13, 6:14] = True, True
    xa[ma.unsqueeze(1).expand_as(xa)], xb[mb.unsqueeze(1).expand_as(xb)] = 0.9, -0.9
    return xa, xb, ma, mb


def _squeezed(mask, dim):
    """Where a mask lands once squeezed into its half, as stitch squeezes it."""
    H, W = mask.shape[-2:]
    half = (H, W // 2) if dim == 3 else (H // 2, W)
    return (
        torch.nn.functional.interpolate(mask[:, None].float(), size=half, mode="bilinear", antialias=True)[:, 0] > 0.5
    )


@pytest.mark.parametrize("dim", [3, 2])
def test_stitching_with_masks_lays_both_subjects_on_the_first_clips_background(dim):
    xa, xb, ma, mb = _masked_pair()
    out = stitch.stitch(xa, xb, dim, ma, mb)
    plain = stitch.stitch(xa, xb, dim)  # the subjects as they are squeezed, with their own backgrounds
    subjects = torch.cat([_squeezed(ma, dim), _squeezed(mb, dim)], dim - 1)  # (F, H, W)
    inside = subjects[:, None].expand_as(out)
    torch.testing.assert_close(out[inside], plain[inside], rtol=0, atol=0)  # each concept's own pixels
    a_half, b_half = torch.zeros_like(subjects), torch.zeros_like(subjects)  # whose subject is where
    (a_half[..., :8] if dim == 3 else a_half[:, :8]).fill_(True)
    b_half[:] = ~a_half
    a_inside, b_inside = out[:, 0][subjects & a_half], out[:, 0][subjects & b_half]
    assert (a_inside == 0.9).float().mean() >= 0.5 and (a_inside > 0.5).all()  # squeezing blurs the rim
    assert (b_inside == -0.9).float().mean() >= 0.5 and (b_inside < -0.5).all()
    # outside both subjects (dilated by 1 px): the first clip's background, its subject painted over
    # with each frame's median background colour
    outside = ~stitch.dilate(subjects)
    a_subject = stitch.dilate(ma)
    for f in range(xa.shape[0]):
        median = xa[f].movedim(0, -1)[~a_subject[f]].median(0).values  # (C,)
        plate = torch.where(a_subject[f], median[:, None, None], xa[f])  # (C, H, W)
        torch.testing.assert_close(out[f][:, outside[f]], plate[:, outside[f]], rtol=0, atol=0)
        assert (plate[:, a_subject[f]] == median[:, None]).all()


def test_stitching_without_both_masks_is_the_plain_stitch():
    xa, xb, ma, mb = _masked_pair()
    old = torch.cat(
        [torch.nn.functional.interpolate(x, size=(16, 8), mode="bilinear", antialias=True) for x in (xa, xb)], 3
    )  # what stitching did before masks existed
    assert torch.equal(stitch.stitch(xa, xb, 3), old)
    assert torch.equal(stitch.stitch(xa, xb, 3, ma, None), old)
    assert torch.equal(stitch.stitch(xa, xb, 3, None, mb), old)


@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("a [v2] fire on a black to blue gradient background.", "a [v2] fire."),
        ("[v1] waves in front of the purple background, at dusk.", "[v1] waves, at dusk."),
        ("a [v] man in black track pants on a bridge.", "a [v] man in black track pants on a bridge."),
    ],
)
def test_drop_background(prompt, expected):
    assert stitch.drop_background(prompt) == expected


def _masked_specs():
    specs = _two_specs()
    for s, prompt in zip(specs, ("a [v1] square on a purple background.", "a [v2] ring on a white background.")):
        s.prompt = prompt
        s.mask = torch.zeros(s.video.shape[0], *s.video.shape[2:], dtype=torch.bool)
        s.mask[:, 4:12, 4:12] = True
    return specs


def _stitched_batches(tmp_path, monkeypatch, specs, **reg):
    bb = tiny_backbone()
    seen = _velocity_spy(bb, monkeypatch)
    cfg = tiny_config(steps=(2, 2), stitch_prob=1.0, self_conditioning=False, prompt_dropout=0.0, **reg)
    Trainer(bb, specs, cfg, tmp_path / "ab.safetensors", progress=False).run()
    return [v for kind, v in seen if kind == "video"], [p for kind, t in seen if kind == "text" for p in t]


def test_trainer_stitches_masked_concepts_on_one_background_with_one_background_in_the_prompt(tmp_path, monkeypatch):
    videos, prompts = _stitched_batches(tmp_path, monkeypatch, _masked_specs())
    for p in prompts:
        assert "[v1]" in p and "[v2]" in p and p.count("background") == 1
    # Concept a's clip is all -0.8, b's is noise. With a's background (a first) all but b's squeezed
    # subject is -0.8; with b's, only a's squeezed subject is. Plain stitching would give half and half.
    flat = [(sample == -0.8).float().mean().item() for clip in videos for sample in clip]
    assert all(f > 0.7 or f < 0.3 for f in flat), flat
    assert min(flat) < 0.3 < 0.7 < max(flat)  # both concepts' backgrounds are used


def test_masks_change_nothing_when_background_removal_is_off(tmp_path, monkeypatch):
    plain_v, plain_p = _stitched_batches(
        tmp_path / "plain", monkeypatch, [replace(s, mask=None) for s in _masked_specs()]
    )
    off_v, off_p = _stitched_batches(tmp_path / "off", monkeypatch, _masked_specs(), stitch_remove_background=False)
    on_v, _ = _stitched_batches(tmp_path / "on", monkeypatch, _masked_specs())
    assert off_p == plain_p and all(torch.equal(a, b) for a, b in zip(off_v, plain_v))
    assert not all(torch.equal(a, b) for a, b in zip(on_v, plain_v))


def test_a_mask_of_the_wrong_shape_is_refused(tmp_path):
    specs = _masked_specs()
    specs[1].mask = specs[1].mask[:, :8]
    with pytest.raises(SetseqError, match="mask of 'b'"):
        Trainer(tiny_backbone(), specs, tiny_config(), tmp_path / "ab.safetensors", progress=False)


def test_shipped_examples_carry_their_world_masks():
    from setseq.toy import world
    from setseq.toylab.examples import FRAMES, SIZE, example_path, example_spec

    for name in world.CONCEPTS:
        clip = data.load_video(example_path(name))
        mask = data.load_mask(data.find_mask(example_path(name)), clip)
        assert torch.equal(mask, world.render(world.concept_scene(name), FRAMES, SIZE, SIZE).mask)
    g = tiny_backbone().geometry
    spec = example_spec("waves", g)
    assert spec.mask.shape == (spec.video.shape[0], *spec.video.shape[2:])


def test_concept_list_with_masks_trains_on_one_background(tmp_path, monkeypatch):
    calls = []
    real = stitch.stitch
    monkeypatch.setattr(
        stitch, "stitch", lambda *args: (calls.append(len(args) == 5 and args[3] is not None), real(*args))[1]
    )
    for name in ("x", "y"):
        clip = data.make_test_video(tmp_path / f"{name}.mp4", frames=6, size=(16, 16))
        frames = data.load_video(clip).frames
        data.write_video(
            tmp_path / f"{name}-fg.mp4", (frames.mean(1, keepdim=True) > 0.3).float().expand_as(frames) * 2 - 1, 8
        )
    (tmp_path / "set.toml").write_text(
        '[[concept]]\nvideo = "x.mp4"\nmask = "x-fg.mp4"\nprompt = "a [v1] square on a blue background."\n'
        'motion_prompt = "it moves in [u1] motion."\n'
        '[[concept]]\nvideo = "y.mp4"\nmask = "y-fg.mp4"\nprompt = "a [v2] ring."\nmotion_prompt = "it moves in [u2] motion."\n'
    )
    (tmp_path / "cfg.toml").write_text("[reg]\nstitch_prob = 1.0\n")
    out = tmp_path / "set.safetensors"
    assert (
        main(
            [
                "train",
                "--concepts",
                str(tmp_path / "set.toml"),
                "--config",
                str(tmp_path / "cfg.toml"),
                "--base",
                "toy-tiny",
                "--stage1-steps",
                "1",
                "--stage2-steps",
                "1",
                "--batch-size",
                "2",
                "--no-prior",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert calls and all(calls)
    assert [c["name"] for c in cio.load(out).concepts] == ["x", "y"]
