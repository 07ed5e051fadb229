"""Wan and LTX-Video backbones on tiny seeded diffusers models (CPU): protocol, training, loading."""

import json

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from conftest import tiny_config  # noqa: E402
from setseq import concept as cio  # noqa: E402
from setseq import flow, lora  # noqa: E402
from setseq.backbones import Geometry, load_backbone, ltx, wan  # noqa: E402  # noqa: E402
from setseq.backbones.diffusers_common import weights_fingerprint  # noqa: E402
from setseq.errors import SetseqError  # noqa: E402
from setseq.generate import generate  # noqa: E402
from setseq.train import ConceptSpec, Trainer  # noqa: E402

MODULES = {"wan": wan, "ltx": ltx}
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
    ],
)
def test_geometry_rules_name_the_nearest_valid_values(kind, bad, nearest):
    bb = MODULES[kind].tiny()
    bb.check_geometry(bb.geometry)
    bb.check_geometry(MODULES[kind].GEOMETRY)  # the real model's default clip
    with pytest.raises(SetseqError, match=nearest):
        bb.check_geometry(bad)


def _save_pipeline(kind, folder, seed=0):
    """A tiny model saved as a diffusers pipeline folder (model_index.json and subfolders)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, LTXPipeline, WanPipeline

    pipe_class = {"wan": WanPipeline, "ltx": LTXPipeline}[kind]
    pipe = pipe_class(scheduler=FlowMatchEulerDiscreteScheduler(), **MODULES[kind].tiny_components(seed))
    pipe.save_pretrained(folder)
    return folder


def test_a_local_diffusers_folder_loads_as_the_same_model(tmp_path, kind):
    folder = _save_pipeline(kind, tmp_path / "model")
    bb = load_backbone(str(folder))
    ref = MODULES[kind].tiny()
    assert type(bb) is type(ref) and bb.name == str(folder.resolve())
    assert bb.fingerprint() == ref.fingerprint()
    x = torch.randn(1, *ref.latent_shape(ref.geometry), generator=torch.Generator().manual_seed(0))
    bb.text_len = ref.text_len  # the folder gets the pipeline's prompt length; compare at the tiny one's
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
    with pytest.raises(SetseqError, match="supports text-to-video WanPipeline and LTXPipeline"):
        load_backbone(str(other))
    broken = _save_pipeline("wan", tmp_path / "broken")
    for f in (broken / "transformer").iterdir():  # the weights were never downloaded
        if f.suffix == ".safetensors":
            f.unlink()
    with pytest.raises(SetseqError, match="cannot load the transformer"):
        load_backbone(str(broken))


def test_the_cache_serves_latents_and_text_without_the_models(tmp_path):
    bb = wan.tiny(cache_dir=tmp_path)
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
    bb.load_token_embeddings({"[v]": torch.ones(32)})  # new token values: a new key, a new embedding
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
