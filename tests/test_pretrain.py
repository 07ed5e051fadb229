"""`setseq toy pretrain`: trains from scratch, resumes, writes loadable weights."""

import pytest
import torch

from setseq.backbones import load_backbone
from setseq.backbones.toy import load_file_weights, save_weights
from setseq.cli import main
from setseq.toylab.pretrain import weighted_loss


def test_pretraining_command_trains_resumes_and_writes_weights(tmp_path):
    args = ["toy", "pretrain", "--model", "toy-tiny", "--out", str(tmp_path), "--steps", "4", "--batch-size", "2"]
    assert main(args) == 0
    first = torch.load(tmp_path / "ckpt.pt", weights_only=False)["step"]
    assert main([*args[:-4], "--steps", "6", "--batch-size", "2", "--resume"]) == 0
    assert first == 4 and torch.load(tmp_path / "ckpt.pt", weights_only=False)["step"] == 6
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["step-000004.png", "step-000006.png"]
    bb = load_backbone("toy-tiny")
    trained = load_file_weights(tmp_path / "toy-tiny.safetensors", "toy-tiny")
    assert trained.fingerprint() != bb.fingerprint()


def test_pretraining_can_start_from_weights_and_refuses_foreign_ones(tmp_path, capsys):
    base = ["toy", "pretrain", "--model", "toy-tiny", "--batch-size", "2"]
    assert main([*base, "--out", str(tmp_path / "a"), "--steps", "2"]) == 0
    start = tmp_path / "a" / "toy-tiny.safetensors"
    # a learning rate of zero leaves the starting weights (and their average) exactly as they were
    assert (
        main(
            [
                *base,
                "--out",
                str(tmp_path / "b"),
                "--steps",
                "1",
                "--lr",
                "0",
                "--init",
                str(start),
                "--frame-prob",
                "1",
                "--frame-batch-size",
                "3",
                "--foreground-weight",
                "4",
            ]
        )
        == 0
    )
    assert (
        load_file_weights(tmp_path / "b" / "toy-tiny.safetensors").fingerprint()
        == load_file_weights(start).fingerprint()
    )
    capsys.readouterr()
    assert (
        main(["toy", "pretrain", "--model", "toy", "--out", str(tmp_path / "c"), "--steps", "1", "--init", str(start)])
        == 2
    )
    assert "another architecture" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_the_foreground_weight_moves_the_loss_towards_the_object():
    target = torch.zeros(1, 1, 3, 4, 4)
    mask = torch.zeros(1, 1, 1, 4, 4, dtype=torch.bool)
    mask[..., :2, :2] = True  # 4 of 16 pixels
    on_object, off_object = target.clone(), target.clone()
    on_object[..., :2, :2] = 1.0
    off_object[..., 2:, 2:] = 1.0  # the same amount of error on the background
    plain = [weighted_loss(p, target, mask, 0.0) for p in (on_object, off_object)]
    weighted = [weighted_loss(p, target, mask, 4.0) for p in (on_object, off_object)]
    assert plain[0] == plain[1] == torch.tensor(0.25)  # plain mean squared error
    assert torch.isclose(weighted[0], torch.tensor(0.25 * 5 / 2))  # weights 5 on the object, mean weight 2
    assert torch.isclose(weighted[1], torch.tensor(0.25 * 1 / 2))


def test_the_patch_size_can_be_changed_and_must_divide_the_frames(tmp_path, capsys):
    base = ["toy", "pretrain", "--model", "toy-tiny", "--steps", "1", "--batch-size", "2"]
    assert main([*base, "--out", str(tmp_path / "p8"), "--patch", "8"]) == 0
    bb = load_file_weights(tmp_path / "p8" / "toy-tiny.safetensors")
    assert bb.cfg.patch == 8 and load_backbone("toy-tiny").cfg.patch == 4
    g = bb.geometry
    x = torch.randn(1, g.frames, 3, g.height, g.width)
    assert bb.velocity(x, torch.tensor([0.5]), bb.encode_text(["a red circle."])).shape == x.shape
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "p5"), "--patch", "5"]) == 2
    assert "does not divide" in capsys.readouterr().err
    assert not (tmp_path / "p5").exists()


def test_width_depth_and_heads_can_be_changed_and_must_suit_the_rope_split(tmp_path, capsys):
    base = ["toy", "pretrain", "--model", "toy-tiny", "--steps", "1", "--batch-size", "2"]
    assert main([*base, "--out", str(tmp_path / "wide"), "--dim", "48", "--depth", "3", "--heads", "3"]) == 0
    bb = load_file_weights(tmp_path / "wide" / "toy-tiny.safetensors")
    assert (bb.cfg.dim, bb.cfg.depth, bb.cfg.heads) == (48, 3, 3) and len(bb.transformer.blocks) == 3
    g = bb.geometry
    x = torch.randn(1, g.frames, 3, g.height, g.width)
    assert bb.velocity(x, torch.tensor([0.5]), bb.encode_text(["a red circle."])).shape == x.shape
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "odd"), "--dim", "40", "--heads", "2"]) == 2  # heads of 20 channels
    assert "multiple of 8" in capsys.readouterr().err
    assert not (tmp_path / "odd").exists()


def _tiny(steps: int, **kw):
    from setseq.toylab.pretrain import PretrainConfig

    return PretrainConfig(model="toy-tiny", steps=steps, batch_size=2, frame_batch_size=3, warmup=2, **kw)


def test_the_result_does_not_depend_on_the_rendering_workers(tmp_path):
    from setseq.toylab.pretrain import pretrain

    alone = pretrain(tmp_path / "w0", _tiny(3), progress=False, device="cpu", workers=0)
    shared = pretrain(tmp_path / "w2", _tiny(3), progress=False, device="cpu", workers=2)
    assert load_file_weights(alone).fingerprint() == load_file_weights(shared).fingerprint()


def test_an_interrupted_run_resumes_to_the_weights_of_an_unbroken_one(tmp_path, monkeypatch):
    import pytest

    from setseq.toylab import pretrain as pt

    unbroken = pt.pretrain(tmp_path / "a", _tiny(6, checkpoint_every=2), progress=False, device="cpu")
    calls, render = [], pt.batch

    def interrupted(*args, **kw):  # the fifth batch (step 4) never comes: Ctrl-C after the step-4 checkpoint
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return render(*args, **kw)

    monkeypatch.setattr(pt, "batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pt.pretrain(tmp_path / "b", _tiny(6, checkpoint_every=2), progress=False, device="cpu")
    assert torch.load(tmp_path / "b" / "ckpt.pt", weights_only=False)["step"] == 4
    monkeypatch.setattr(pt, "batch", render)
    resumed = pt.pretrain(tmp_path / "b", _tiny(6, checkpoint_every=2), resume=True, progress=False, device="cpu")
    assert load_file_weights(resumed).fingerprint() == load_file_weights(unbroken).fingerprint()


def test_pretraining_refuses_a_device_it_cannot_use(tmp_path, capsys):
    base = ["toy", "pretrain", "--model", "toy-tiny", "--steps", "1", "--batch-size", "2", "--out", str(tmp_path / "d")]
    for bad in (
        ["--device", "gpu"],
        ["--workers", "-1"],
        *([["--device", "cuda"]] if not torch.cuda.is_available() else []),
    ):
        assert main([*base, *bad]) == 2
        assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "d").exists()


def test_a_frozen_word_table_stays_fixed_and_distinct_while_the_rest_trains(tmp_path):
    from setseq.backbones.toy import PRESETS, ToyBackbone
    from setseq.toy.dit import DiTConfig
    from setseq.toylab.pretrain import pretrain

    weights = load_file_weights(pretrain(tmp_path / "f", _tiny(3, frozen_words=True), progress=False, device="cpu"))
    assert weights.cfg.frozen_words
    cfg, g = PRESETS["toy-tiny"]
    start = ToyBackbone(
        "toy-tiny", DiTConfig(**{**cfg.to_dict(), "frozen_words": True}), g, seed=0, pretrained_init=True
    )
    # the table is the seeded initial one, and the layers reading it did train
    assert torch.equal(weights.text_encoder.words.weight, start.text_encoder.words.weight)
    assert not torch.equal(
        weights.text_encoder.encoder.layers[0].linear1.weight, start.text_encoder.encoder.layers[0].linear1.weight
    )
    table = start.text_encoder.words.weight
    cos = torch.nn.functional.cosine_similarity(table[:, None], table[None], dim=-1)
    off = cos[~torch.eye(len(table), dtype=torch.bool)]
    assert off.abs().max() < 0.9  # no two words start nearly the same


def test_the_motion_curriculum_draws_straight_movers_at_high_noise(tmp_path, monkeypatch):
    import numpy as np

    from setseq.backbones.toy import PRESETS
    from setseq.toylab import pretrain as pt

    g = PRESETS["toy-tiny"][1]
    _, _, texts = pt.batch(np.random.default_rng(0), 24, g, frames_only=False, straight_only=True)
    for text in texts:
        motion = text.split(".")[1]
        assert any(f" {d}" in motion for d in pt.STRAIGHT) and "camera" not in motion, text
    seen = []
    interpolate = pt.flow.interpolate

    def spy(x0, noise, t):
        seen.append(t.clone())
        return interpolate(x0, noise, t)

    monkeypatch.setattr(pt.flow, "interpolate", spy)
    pt.pretrain(tmp_path / "m", _tiny(3, min_t=0.85, straight_only=True), progress=False, device="cpu")
    t = torch.cat(seen)
    assert t.min() >= 0.85 and t.max() <= 1.0 and t.std() > 0


def test_the_camera_curriculum_draws_sprites_under_every_camera_from_the_train_split():
    import numpy as np

    from setseq.backbones.toy import PRESETS
    from setseq.toy import world
    from setseq.toylab import pretrain as pt

    g = PRESETS["toy-tiny"][1]
    _, _, texts = pt.batch(np.random.default_rng(0), 60, g, frames_only=False, cameras=pt.world.CAMERAS)
    said = [next((w for w in ("pans left", "pans right", "zooms in", "zooms out") if w in t), "still") for t in texts]
    assert set(said) == {"pans left", "pans right", "zooms in", "zooms out", "still"}
    assert not any("flames" in t or "waves" in t for t in texts)  # sprites only
    # the draw stays in the train split: no caption of the held-out split comes out
    held = {world.caption_text(world.sample_scene(np.random.default_rng(i), "heldout")) for i in range(200)}
    assert not held & set(texts)


def test_a_camera_change_recentres_the_path_as_the_world_draws_it():
    import numpy as np

    from setseq.toy import world

    rng = np.random.default_rng(3)
    for _ in range(30):
        s = world.sample_scene(rng, "train")
        if s.kind != "sprite":
            continue
        back = world.with_camera(world.with_camera(s, "pan-left"), s.camera)
        assert abs(back.x - s.x) < 1e-9
        assert world.with_camera(s, "pan-right").x - world.with_camera(s, "pan-left").x == pytest.approx(world.PAN)


def test_the_named_recipes_need_earlier_weights_and_run_from_them(tmp_path, capsys):
    import json

    from setseq.toy import world

    args = ["toy", "pretrain", "--model", "toy-tiny", "--batch-size", "2", "--frame-batch-size", "2"]
    assert main([*args, "--out", str(tmp_path / "b"), "--recipe", "camera-focus"]) == 2
    assert "--init" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "a"), "--steps", "2"]) == 0
    a = str(tmp_path / "a" / "toy-tiny.safetensors")
    assert main([*args, "--out", str(tmp_path / "b"), "--recipe", "camera-focus", "--init", a, "--steps", "2"]) == 0
    info = json.loads((tmp_path / "b" / "log.json").read_text())["info"]["pretrain"]
    assert info["cameras"] == list(world.CAMERAS) and info["min_t"] == 0.8 and info["steps"] == 2
    assert "camera_follows" in json.loads((tmp_path / "b" / "log.json").read_text())["probes"][-1]


def test_one_mover_keeps_either_the_object_or_the_camera_still():
    import numpy as np

    from setseq.backbones.toy import PRESETS
    from setseq.toylab import pretrain as pt

    g = PRESETS["toy-tiny"][1]
    motions, cameras = ("still", *pt.STRAIGHT), pt.world.CAMERAS
    _, _, texts = pt.batch(np.random.default_rng(1), 60, g, False, motions=motions, cameras=cameras, one_mover=True)
    clauses = [t.split(". ")[1] for t in texts]
    assert not [c for c in clauses if "camera" in c and "stays still" not in c]
    assert any("camera" in c for c in clauses) and any("moves" in c for c in clauses)


def test_captions_padded_to_one_length_give_the_same_velocity():
    """`encode_text(pad_to_max=True)`, the fixed shape compiled pretraining uses, only adds masked padding."""
    bb = load_backbone("toy-tiny", seed=0)
    g = bb.geometry
    prompts = ["a red circle on a blue background moves left while the camera is still", "", "a green ring"]
    short, padded = bb.encode_text(prompts), bb.encode_text(prompts, pad_to_max=True)
    assert padded.emb.shape[1] == bb.cfg.max_text_len > short.emb.shape[1]
    assert padded.mask[:, short.mask.shape[1] :].sum() == 0
    x = torch.randn(3, g.frames, 3, g.height, g.width, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.2, 0.6, 0.95])
    with torch.no_grad():
        torch.testing.assert_close(bb.velocity(x, t, padded), bb.velocity(x, t, short), atol=1e-5, rtol=1e-4)


def test_a_base_of_ones_own_replaces_the_shipped_one_everywhere(tmp_path, monkeypatch, capsys):
    """SETSEQ_TOY_WEIGHTS makes `--base toy` load that file: what `setseq toy pretrain` wrote is used
    by every command; a path that is not a weights file is one clear error."""
    own = load_backbone("toy-tiny", seed=3)
    save_weights(own, tmp_path / "mine.safetensors")
    monkeypatch.setenv("SETSEQ_TOY_WEIGHTS", str(tmp_path / "mine.safetensors"))
    bb = load_backbone("toy")
    assert bb.name == "toy" and bb.cfg.dim == own.cfg.dim and bb.fingerprint() == own.fingerprint()
    monkeypatch.setenv("SETSEQ_TOY_WEIGHTS", str(tmp_path / "missing.safetensors"))
    assert main(["toy", "eval", "-n", "1"]) == 2
    assert "missing.safetensors" in capsys.readouterr().err


def test_a_convolutional_head_grows_onto_weights_without_one_and_starts_as_a_no_op(tmp_path):
    """`refine` on weights pretrained without the head: the same velocities at first, then it trains."""
    from setseq.toylab.pretrain import add_refine

    bb = load_backbone("toy-tiny", seed=0)
    grown = add_refine(bb, 8)
    g = bb.geometry
    x = torch.randn(2, g.frames, 3, g.height, g.width, generator=torch.Generator().manual_seed(1))
    t, text = torch.tensor([0.3, 0.8]), bb.encode_text(["a red circle on a blue background", ""])
    with torch.no_grad():
        torch.testing.assert_close(grown.velocity(x, t, text), bb.velocity(x, t, text))
    save_weights(bb, tmp_path / "plain.safetensors")
    args = ["toy", "pretrain", "--model", "toy-tiny", "--steps", "2", "--batch-size", "2"]
    assert (
        main([*args, "--out", str(tmp_path / "r"), "--refine", "8", "--init", str(tmp_path / "plain.safetensors")]) == 0
    )
    trained = load_file_weights(tmp_path / "r" / "toy-tiny.safetensors", "toy-tiny")
    assert trained.cfg.refine == 8 and trained.transformer.refine[-1].weight.abs().sum() > 0
