"""Wan, LTX-Video, LTX-2 and HunyuanVideo 1.5 backbones on tiny seeded diffusers models (CPU): protocol,
training, loading."""

import json

import av
import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from conftest import tiny_config  # noqa: E402
from setseq import concept as cio  # noqa: E402
from setseq import flow, lora  # noqa: E402
from setseq.backbones import Geometry, load_backbone, wan  # noqa: E402
from setseq.backbones.diffusers_common import weights_fingerprint  # noqa: E402
from setseq.errors import SetseqError  # noqa: E402
from setseq.generate import generate  # noqa: E402
from setseq.train import ConceptSpec, Trainer, begin_stage  # noqa: E402
from tiny_pipelines import MODULES, pipeline  # noqa: E402

PROMPT = "a [v] red square on a blue background. it moves in [u] motion."


@pytest.fixture(params=sorted(MODULES))
def kind(request):
    return request.param


def _clip(bb, frames=None, seed=0):
    g = bb.geometry
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(frames or g.frames, 3, g.height, g.width, generator=gen) * 2 - 1  # (F, C, H, W)


def test_two_stage_round_trip(tmp_path, kind):
    bb = MODULES[kind].tiny()
    spec = ConceptSpec(
        "sq", _clip(bb, bb.geometry.frames + 1), "a [v] red square on a blue background.", "it moves in [u] motion."
    )
    out = tmp_path / "sq.safetensors"
    result = Trainer(bb, [spec], tiny_config(steps=(2, 2), batch=1), out, progress=False).run()
    stage1 = cio.load(tmp_path / "sq.stage1.safetensors")
    for key, t in stage1.tensors.items():  # stage 2 leaves the basis and identity coefficients alone
        if key.endswith((".basis", ".identity")):
            assert torch.equal(t, result.tensors[key])
    assert any(v.abs().sum() > 0 for k, v in result.tensors.items() if ".motion." in k)
    video = generate(bb, [PROMPT], steps=2, guidance=2.0, seed=3)
    g = bb.geometry
    assert video.shape == (1, g.frames, 3, g.height, g.width)
    assert torch.isfinite(video).all() and video.abs().max() <= 1.0

    fresh = MODULES[kind].tiny()  # the concept file alone reproduces the adapted model
    cio.apply(cio.load(out), fresh)
    assert torch.allclose(generate(fresh, [PROMPT], steps=2, guidance=2.0, seed=3), video, atol=1e-5)


def test_setseq_time_and_velocity_are_the_diffusers_schedulers():
    """diffusers' flow scheduler steps x by (sigma' - sigma) * output with sigma = timestep / 1000,
    exactly setseq's Euler step with v = eps - x_0 at t = sigma, including the shift formula."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    sched.set_timesteps(sigmas=torch.linspace(1.0, 0.0, 5)[:-1].tolist())  # setseq's grid, unshifted
    ts = flow.schedule(4, shift=3.0)
    assert torch.allclose(sched.sigmas, ts, atol=1e-6)
    assert torch.allclose(sched.timesteps, 1000 * ts[:-1], atol=1e-3)
    x, v = torch.randn(2, 3), torch.randn(2, 3)
    for i, timestep in enumerate(sched.timesteps):
        x_next = sched.step(v, timestep, x).prev_sample
        assert torch.allclose(x_next, x + (ts[i + 1] - ts[i]) * v, atol=1e-6)
        x = x_next


def test_velocity_calls_the_transformer_at_1000_t():
    bb = wan.tiny()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, *bb.latent_shape(bb.geometry), generator=g)
    text = bb.encode_text(["a red square."])
    with torch.no_grad():
        v = bb.velocity(x, torch.tensor([0.3]), text)
        emb = torch.nn.functional.pad(text.emb, (0, 0, 0, bb.text_len - text.emb.shape[1]))
        ref = bb.transformer(x, torch.tensor([300.0]), emb, return_dict=False)[0]
        other = bb.velocity(x, torch.tensor([0.6]), text)
    assert torch.allclose(v, ref, atol=1e-6)
    assert not torch.allclose(v, other)


def test_concept_tokens_start_at_zero_and_train_alone(kind):
    bb = MODULES[kind].tiny()
    bb.add_concept_tokens(["[v]"])
    assert all(torch.equal(e, torch.zeros_like(e)) for e in bb.token_embeddings().values())
    ids = bb.tokenizer("a [v] dog", add_special_tokens=False).input_ids
    assert len(ids) == 3 and ids[1] == bb.tokenizer.convert_tokens_to_ids("[v]")

    base = bb.text_encoder.get_input_embeddings().base.weight.detach().clone()
    with torch.no_grad():
        plain_before = bb.encode_text(["a red dog"]).emb
        concept_before = bb.encode_text(["a [v] dog"]).emb
    params = bb.concept_token_parameters()
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.SGD(params, lr=1.0)
    bb.encode_text(["a [v] dog"]).emb.pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    assert all(p.grad is None for p in bb.text_encoder.parameters() if all(p is not q for q in params))
    opt.step()
    with torch.no_grad():
        assert torch.equal(bb.text_encoder.get_input_embeddings().base.weight, base)
        assert torch.equal(bb.encode_text(["a red dog"]).emb, plain_before)
        assert not torch.allclose(bb.encode_text(["a [v] dog"]).emb, concept_before)


@pytest.mark.parametrize(
    "kind, bad, nearest",
    [
        ("wan", Geometry(80, 470, 832, 16.0), "81 frames at 464x832"),
        ("ltx", Geometry(160, 500, 704, 25.0), "161 frames at 512x704"),
        ("ltx2", Geometry(120, 500, 768, 24.0), "121 frames at 512x768"),
        ("hunyuan15", Geometry(120, 470, 848, 24.0), "121 frames at 464x848"),
    ],
)
def test_geometry_rules_name_the_nearest_valid_values(kind, bad, nearest):
    bb = MODULES[kind].tiny()
    bb.check_geometry(bb.geometry)
    bb.check_geometry(MODULES[kind].GEOMETRY)  # the real model's default clip
    with pytest.raises(SetseqError, match=nearest):
        bb.check_geometry(bad)


def _save_pipeline(kind, folder, seed=0):
    """A tiny model saved as a diffusers pipeline folder (model_index.json and subfolders), with the
    scheduler its tiny instance samples with."""
    pipeline(kind, seed).save_pretrained(folder)
    return folder


def test_a_local_diffusers_folder_loads_as_the_same_model(tmp_path, kind):
    folder = _save_pipeline(kind, tmp_path / "model")
    bb = load_backbone(str(folder))
    ref = MODULES[kind].tiny()
    assert type(bb) is type(ref) and bb.name == str(folder.resolve())
    assert bb.fingerprint() == ref.fingerprint()
    x = torch.randn(1, *ref.latent_shape(ref.geometry), generator=torch.Generator().manual_seed(0))
    bb.text_len = ref.text_len  # the folder gets the pipeline's prompt length; compare at the tiny one's
    if kind == "hunyuan15":  # and the pipeline's prompt template; compare with the tiny one's
        bb.system_message, bb.crop_start = ref.system_message, ref.crop_start
    with torch.no_grad():
        v = bb.velocity(x, torch.tensor([0.5]), bb.encode_text(["a red dog"]))
        assert torch.allclose(v, ref.velocity(x, torch.tensor([0.5]), ref.encode_text(["a red dog"])), atol=1e-5)


def test_bad_model_folders_get_one_sentence(tmp_path):
    with pytest.raises(SetseqError, match="unknown base model"):
        load_backbone(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SetseqError, match="not a diffusers model folder"):
        load_backbone(str(tmp_path / "empty"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(
        SetseqError,
        match="supports text-to-video WanPipeline, LTXPipeline, LTX2Pipeline and HunyuanVideo15Pipeline folders",
    ):
        load_backbone(str(other))
    broken = _save_pipeline("wan", tmp_path / "broken")
    for f in (broken / "transformer").iterdir():  # the weights were never downloaded
        if f.suffix == ".safetensors":
            f.unlink()
    with pytest.raises(SetseqError, match="cannot load the transformer"):
        load_backbone(str(broken))


@pytest.mark.parametrize(
    "kind, change, found",
    [
        ("ltx", {"patch_size": 2}, "patches of 1x2x2"),
        ("ltx2", {"patch_size_t": 2}, "patches of 2x1x1"),
        ("hunyuan15", {"in_channels": 8}, "a transformer of 8 input and 8 output channels"),
    ],
)
def test_a_layout_setseq_does_not_know_is_refused_before_any_weight_loads(tmp_path, kind, change, found):
    folder = _save_pipeline(kind, tmp_path / "model")
    config = folder / "transformer" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **change}))
    for f in (folder / "transformer").iterdir():  # no weights to load: the config alone must decide
        if f.suffix == ".safetensors":
            f.unlink()
    with pytest.raises(SetseqError, match=f"layout that setseq does not know \\({found}.*setseq knows"):
        load_backbone(str(folder))


@pytest.mark.parametrize("kind", ["wan", "ltx2", "hunyuan15"])
def test_the_cache_serves_latents_and_text_without_the_models(tmp_path, kind):
    """Latents and text embeddings (LTX-2's: the connectors' output) come from the cache, and a
    changed concept token makes a new text key."""
    bb = MODULES[kind].tiny(cache_dir=tmp_path)
    bb.add_concept_tokens(["[v]"])
    clip = _clip(bb)[None]  # (1, F, C, H, W)
    with torch.no_grad():
        latents, text = bb.encode_video(clip), bb.encode_text(["a [v] dog"])

    def unavailable(*args, **kwargs):
        raise AssertionError("the cache should have answered")

    vae_encode, bb.vae.encode = bb.vae.encode, unavailable
    encoder_forward, bb.text_encoder.forward = bb.text_encoder.forward, unavailable
    with torch.no_grad():
        assert torch.equal(bb.encode_video(clip), latents)
        cached = bb.encode_text(["a [v] dog"])
    assert torch.equal(cached.emb, text.emb) and torch.equal(cached.mask, text.mask)
    assert len(list((tmp_path / "latents").iterdir())) == 1

    bb.vae.encode, bb.text_encoder.forward = vae_encode, encoder_forward
    row = bb.token_embeddings()["[v]"]
    bb.load_token_embeddings({"[v]": torch.ones_like(row)})  # new token values: a new key, a new embedding
    with torch.no_grad():
        assert not torch.allclose(bb.encode_text(["a [v] dog"]).emb, text.emb)


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        bb = wan.tiny(gradient_checkpointing=checkpointing)
        torch.manual_seed(0)
        layers = lora.inject(bb.transformer, bb.lora_targets, rank=2)
        for layer in layers.values():
            torch.nn.init.normal_(layer.basis)
        bb.transformer.train()
        x = torch.randn(1, *bb.latent_shape(bb.geometry), generator=torch.Generator().manual_seed(1))
        bb.velocity(x, torch.tensor([0.5]), bb.encode_text(["a dog"])).pow(2).mean().backward()
        grads.append(torch.cat([layer.basis.grad.flatten() for layer in layers.values()]))
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_fingerprint_follows_the_weights():
    parts = wan.tiny_components(seed=0)
    modules = {k: parts[k] for k in ("transformer", "text_encoder", "vae")}
    before = weights_fingerprint(modules)
    assert before == wan.tiny(seed=0).fingerprint() != wan.tiny(seed=1).fingerprint()
    with torch.no_grad():
        parts["transformer"].proj_out.weight.add_(1.0)
    assert weights_fingerprint(modules) != before


def test_the_gradient_checkpointing_setting_reaches_the_model_and_changes_no_number(tmp_path):
    """The run's setting switches diffusers' block checkpointing; losses and adapters come out the
    same either way (dropout masks included: the recomputation redraws them from the same state)."""
    results = []
    for on in (True, False):
        bb = wan.tiny(gradient_checkpointing=not on)  # the run's setting wins over the loader's
        spec = ConceptSpec("sq", _clip(bb, 9), "a [v] red square on a blue background.", "it moves in [u] motion.")
        cfg = tiny_config(steps=(1, 1), batch=1)
        cfg.gradient_checkpointing = on
        results.append(Trainer(bb, [spec], cfg, tmp_path / f"{on}.safetensors", progress=False).run())
        assert bb.transformer.gradient_checkpointing is on
    with_it, without = results
    assert with_it.meta["losses"] == without.meta["losses"]
    for key, t in with_it.tensors.items():
        torch.testing.assert_close(t, without.tensors[key], rtol=1e-5, atol=1e-6)


def test_stage_two_encodes_each_window_of_a_clip_once():
    """14 frames, 5-frame windows on Wan's grid of 4: 4 distinct windows (0, 4, 8, 9), so 8 steps of
    stage 2 at batch 2 send at most 4 clips through the VAE, not 16."""
    bb = wan.tiny()
    encodes = []
    real = bb.vae.encode
    bb.vae.encode = lambda x, *a, **k: (encodes.append(x.shape), real(x, *a, **k))[1]
    spec = ConceptSpec("sq", _clip(bb, 14), "a [v] red square on a blue background.", "it moves in [u] motion.")
    trainer = Trainer(bb, [spec], tiny_config(steps=(0, 8), batch=2), "unused.safetensors", progress=False)
    trainer._start(resume=False)  # run the stage's steps alone, without writing files
    stage = trainer.cfg.stages[1]
    opt, params, tokens = begin_stage(trainer.backbone, trainer.layers, stage, trainer.cfg.optim)
    for step in range(stage.steps):
        trainer._step(stage, step, params, opt, tokens)
    assert 1 < len(encodes) <= 4 and all(shape[2] == 5 for shape in encodes)  # (1, C, F, H, W)
    assert len(encodes) == len(trainer.latents.latents)


def test_the_clip_shape_sets_the_size_on_the_models_grid():
    """At Wan's 480p budget (832 x 480 px, grid 16): landscape, portrait, square and 4:3 clips, each within budget."""
    from setseq.backbones.diffusers_common import fit_geometry

    default, wide = wan.GEOMETRY, wan.WanBackbone.max_aspect
    shapes = {(1080, 1920): (480, 832), (1920, 1080): (832, 480), (720, 720): (624, 624), (480, 640): (544, 720)}
    shapes[(1080, 2560)] = (480, 832)  # wider than the model's widest: cropped to it, as before
    for shown, size in shapes.items():
        g = fit_geometry(default, 16, 4, shown, None, wide)
        assert (g.height, g.width) == size and g.height * g.width <= 480 * 832, shown
        assert (g.frames, g.fps) == (81, 16.0)
    assert fit_geometry(default, 16, 4, None, 48, wide).frames == 45  # 3 s at 16 fps: 4N+1 <= 48
    assert fit_geometry(default, 16, 4, None, 400, wide).frames == 81


def _phone_clip(path, frames, rotation=90, size=(36, 64), rate=16):
    """A clip stored landscape (w x h = size[1] x size[0]) with a display rotation: shown portrait."""
    from test_inputs import encode

    images = np.zeros((frames, *size, 3), np.uint8)
    images[..., 0] = np.linspace(0, 255, size[1], dtype=np.uint8)  # a gradient and a moving bar
    for k in range(frames):
        images[k, :, 2 * k % size[1]] = 255
    return encode(path, images, rotation=rotation, rate=rate)


def test_clip_geometry_follows_a_portrait_phone_clip_and_its_length(tmp_path):
    from setseq.specs import ConceptSource, clip_geometry

    bb = object.__new__(wan.WanBackbone)  # the real model's rules, without building one
    bb.geometry, bb.size_step = wan.GEOMETRY, 16  # its default: 81 frames of 832 x 480 at 16 fps
    clip = _phone_clip(tmp_path / "phone.mp4", 48)  # 3 s, shown 36 wide x 64 high
    g = clip_geometry(bb, [ConceptSource(clip)])
    assert (g.frames, g.height, g.width, g.fps) == (45, 832, 480, 16.0)
    assert clip_geometry(bb, [ConceptSource(clip)], excerpt={"start": 1.0}).frames == 29  # 32 frames left
    assert clip_geometry(bb, [ConceptSource(clip)], excerpt={"select": "head"}).frames == 81  # cut anyway


def test_a_portrait_clip_trains_and_generates_portrait_and_a_square_one_square(tmp_path, monkeypatch, capsys):
    """`setseq train` on a tiny Wan (default 32 x 32): the shape follows the clip and is stored in the
    concept, which `generate` then samples at; --no-gradient-checkpointing reaches the model."""
    import setseq.backbones
    from setseq.cli import main

    loaded = []
    monkeypatch.setattr(setseq.backbones, "load_backbone", lambda spec, **o: (loaded.append(wan.tiny()), loaded[-1])[1])
    flags = ["--stage1-steps", "1", "--stage2-steps", "1", "--batch-size", "1", "--no-prior", "--quiet"]
    prompts = ["--prompt", "a [v] red square.", "--motion-prompt", "it moves in [u] motion."]
    portrait = _phone_clip(tmp_path / "phone.mp4", 8)
    out = tmp_path / "phone.safetensors"
    assert main(["train", str(portrait), "--base", "wan-tiny", *prompts, *flags, "--no-gradient-checkpointing"]) == 0
    assert "5 frames of 16 wide x 32 high (portrait)" in capsys.readouterr().err
    assert cio.load(out).meta["geometry"] == {"frames": 5, "height": 32, "width": 16, "fps": 16.0}
    assert loaded[-1].transformer.gradient_checkpointing is False
    video = tmp_path / "gen.mp4"
    assert main(["generate", str(out), "--prompt", PROMPT, "--out", str(video), "--steps", "1", "--upscale", "1"]) == 0
    with av.open(str(video)) as c:
        assert (c.streams.video[0].height, c.streams.video[0].width) == (32, 16)

    square = _phone_clip(tmp_path / "square.mp4", 8, rotation=None, size=(48, 48))
    assert main(["train", str(square), "--base", "wan-tiny", *prompts, *flags]) == 0
    geometry = cio.load(tmp_path / "square.safetensors").meta["geometry"]
    assert (geometry["height"], geometry["width"]) == (32, 32)
    assert loaded[-1].transformer.gradient_checkpointing is True  # the default
