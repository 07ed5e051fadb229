"""Several concepts: joint training, stitched clips, per-concept scales, restyling controls."""

import pytest
import torch

from conftest import tiny_backbone, tiny_config
from setseq import concept as cio
from setseq import data, lora
from setseq.cli import _concept_scales, main
from setseq.errors import SetseqError
from setseq.train import ConceptSpec, Trainer


def _two_specs():
    g = torch.Generator().manual_seed(0)
    left = torch.full((6, 3, 16, 16), -0.8)  # two concepts with clearly different looks
    right = torch.rand(6, 3, 16, 16, generator=g)
    return [ConceptSpec("a", left, "a [v1] square.", "it moves in [u1] motion.", "[v1]", "[u1]"),
            ConceptSpec("b", right, "a [v2] ring.", "it moves in [u2] motion.", "[v2]", "[u2]")]


def _velocity_spy(bb, monkeypatch):
    seen = []
    real_v, real_t = bb.velocity, bb.encode_text
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
    identity, motion = _concept_scales(cs, {"u1": 0.0, "v1": 0.5})
    assert identity == 0.5 and motion == {"a": 0.0}
    with pytest.raises(SetseqError, match="shared by all concepts"):
        _concept_scales(cs, {"v1": 0.5, "v2": 1.0})
    with pytest.raises(SetseqError, match="does not have"):
        _concept_scales(cs, {"u9": 1.0})
    # switching u1 off equals deleting concept a's residual, and leaves b's in place
    scaled, deleted = tiny_backbone(), tiny_backbone()
    cio.apply(cs, scaled)
    lora.set_scales(scaled.transformer, motion={"a": 0.0})
    trimmed = cio.ConceptSet({k: (torch.zeros_like(v) if ".motion.a" in k else v) for k, v in cs.tensors.items()}, cs.meta)
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
    args = ["generate", str(pair), "--prompt", "a [v1] square. a [v2] ring.", "--out", str(out), "--steps", "2",
            "--scale", "u1=0.5,u2=1", "--rank-weights", ",".join(["1"] * 8)]
    assert main(args) == 0 and out.is_file()
    assert main([*args[:-1], "1,2"]) == 2


def test_concept_list_file(tmp_path):
    for name in ("x", "y"):
        data.make_test_video(tmp_path / f"{name}.mp4", frames=6, size=(16, 16))
    (tmp_path / "set.toml").write_text(
        '[[concept]]\nvideo = "x.mp4"\nname = "first"\nprompt = "a [v1] square."\nmotion_prompt = "it moves in [u1] motion."\n'
        '[[concept]]\nvideo = "y.mp4"\nprompt = "a [v2] ring."\nmotion_prompt = "it moves in [u2] motion."\n')
    out = tmp_path / "set.safetensors"
    args = ["train", "--concepts", str(tmp_path / "set.toml"), "--base", "toy-tiny", "--stage1-steps", "1",
            "--stage2-steps", "1", "--batch-size", "2", "--no-prior", "--quiet", "--out", str(out)]
    assert main(args) == 0
    assert [c["name"] for c in cio.load(out).concepts] == ["first", "y"]
    (tmp_path / "bad.toml").write_text('[[concept]]\nprompt = "a [v1]"\n')
    assert main([*args[:2], str(tmp_path / "bad.toml"), *args[3:]]) == 2
