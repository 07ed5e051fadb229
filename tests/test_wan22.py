"""Wan 2.2 on tiny seeded diffusers folders (CPU): T2V-A14B's two experts and TI2V-5B's 48-channel VAE,
from loading a folder to training, sampling and exporting LoRAs that diffusers' own loader reads."""

from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from safetensors.torch import load_file  # noqa: E402

from conftest import tiny_config  # noqa: E402
from setseq import concept as cio  # noqa: E402
from setseq import flow, lora, parallel  # noqa: E402
from setseq.backbones import Geometry, load_backbone, wan  # noqa: E402
from setseq.cli import main  # noqa: E402
from setseq.errors import SetseqError  # noqa: E402
from setseq.export import export  # noqa: E402
from setseq.generate import generate  # noqa: E402
from setseq.train import ConceptSpec, Trainer  # noqa: E402

A14B, TI2V = wan.WAN_2_2_A14B, wan.WAN_2_2_TI2V_5B
PROMPT = "a [v] red square on a blue background. it moves in [u] motion."


def save_folder(layout, folder, seed=0):
    """A tiny model of `layout` saved as a WanPipeline folder, as diffusers writes Wan 2.2's, with its
    tiny instance's scheduler (UniPC with flow sigmas)."""
    from diffusers import WanPipeline

    from setseq.backbones.scheduling import make_scheduler

    options = {"boundary_ratio": wan.TINY_BOUNDARY} if layout.experts else {}
    if layout.expand_timesteps:
        options["expand_timesteps"] = True
    parts = wan.tiny_components(seed, layout=layout)
    WanPipeline(scheduler=make_scheduler(wan.tiny_scheduler(layout)), **parts, **options).save_pretrained(folder)
    return folder


def expert_inputs(bb):
    """{expert module: [timestep tensors it was called with]}, recorded by forward pre-hooks."""
    seen = {}
    experts = dict(bb.transformer.named_children()) if bb.layout.experts else {"transformer": bb.transformer}

    def record(module, args, kwargs):
        seen[module].append((kwargs["timestep"] if "timestep" in kwargs else args[1]).detach().clone())

    for module in experts.values():
        seen[module] = []
        module.register_forward_pre_hook(record, with_kwargs=True)
    return experts, seen


# --------------------------------------------------------------------------------------------
# Layouts: each folder gets its own model's defaults; an unknown one is refused
# --------------------------------------------------------------------------------------------


def _configs(two=False, boundary=None, expand=False, z=16, stride=8, channels=16):
    index = {"transformer_2": ["diffusers", "WanTransformer3DModel"] if two else [None, None]}
    index.update(boundary_ratio=boundary, expand_timesteps=expand)
    return index, {"in_channels": channels, "out_channels": channels}, {"z_dim": z, "scale_factor_spatial": stride}


def test_layouts_are_identified_and_unknown_ones_refused_in_one_sentence(tmp_path):
    assert wan.identify(*_configs()) is wan.WAN_2_1
    assert wan.identify({}, {"in_channels": 16, "out_channels": 16}, {"z_dim": 16}) is wan.WAN_2_1  # older folders
    assert wan.identify(*_configs(two=True, boundary=0.875)) is A14B
    assert wan.identify(*_configs(expand=True, z=48, stride=16, channels=48)) is TI2V
    unknown = [
        _configs(two=True),  # two transformers but no boundary
        _configs(boundary=0.9),  # a boundary but one transformer
        _configs(two=True, boundary=1.5),
        _configs(z=48, stride=16, channels=48),  # the 48-channel VAE without per-token timesteps
        _configs(expand=True),
        _configs(channels=36),  # an image-to-video transformer
    ]
    for configs in unknown:
        with pytest.raises(SetseqError, match="holds a Wan layout that setseq does not know") as e:
            wan.identify(*configs, where="'m'")
        assert str(e.value).count(". ") == 0 and str(e.value).endswith("TI2V-5B.")

    # through load_backbone, before any weight is read: the folder holds only its JSON files
    import json

    index, transformer, vae = _configs(z=48, stride=16, channels=48)
    for sub, config in (("transformer", transformer), ("vae", vae)):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "config.json").write_text(json.dumps(config))
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline", **index}))
    with pytest.raises(SetseqError, match="a 48-channel VAE of 16x spatial compression"):
        load_backbone(str(tmp_path))


# --------------------------------------------------------------------------------------------
# T2V-A14B's experts: each sample runs, and trains, the expert of its timestep
# --------------------------------------------------------------------------------------------


def test_each_sample_runs_the_expert_of_its_timestep():
    bb = wan.tiny(layout=A14B)
    high, low = bb.transformer.high_noise, bb.transformer.low_noise
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, *bb.latent_shape(bb.geometry), generator=g)
    t = torch.tensor([0.95, 0.3, 0.875, 0.874])  # the boundary itself is the high-noise expert's
    text = bb.encode_text(["a red square.", "a dog", "a blue circle.", "a man"])
    emb = torch.nn.functional.pad(text.emb * text.mask[..., None], (0, 0, 0, bb.text_len - text.emb.shape[1]))
    with torch.no_grad():
        v = bb.velocity(x, t, text)
        for i, expert in enumerate([high, low, high, low]):
            ref = expert(x[i : i + 1], 1000 * t[i : i + 1], emb[i : i + 1], return_dict=False)[0]
            assert torch.allclose(v[i : i + 1], ref, atol=1e-5)
        assert not torch.allclose(high(x, 1000 * t, emb)[0], low(x, 1000 * t, emb)[0])  # two different experts

    layers = lora.inject(bb.transformer, bb.lora_targets, rank=2)
    assert sorted({name.partition(".")[0] for name in layers}) == ["high_noise", "low_noise"]
    bb.transformer.train()
    bb.velocity(x[1:2], t[1:2], bb.encode_text(["a dog"])).pow(2).mean().backward()  # low noise only
    for name, layer in layers.items():
        assert (layer.identity.grad is not None) == name.startswith("low_noise.")
    assert len(parallel.blocks(bb.transformer)) == 2 * len(high.blocks)  # --compile reaches both
    with pytest.raises(SetseqError, match="--shard does not support a model of two experts"):
        parallel.shard(bb.transformer)


def test_the_trainer_warns_when_an_expert_draws_few_samples(capsys):
    for kind, shift in (("uniform", 3.0), ("logit-normal", 1.0), ("logit-normal", 12.0)):
        drawn = flow.sample_timesteps(200_000, kind, shift=shift, generator=torch.Generator().manual_seed(0))
        share = flow.fraction_at_least(0.875, kind, shift=shift)
        assert abs(share - (drawn >= 0.875).float().mean().item()) < 0.005
    assert abs(flow.fraction_at_least(0.875) - 0.0258) < 1e-4  # the default: 2.6 % at high noise
    bb = wan.tiny(layout=A14B)
    clip = torch.zeros(6, 3, 32, 32)
    spec = ConceptSpec("sq", clip, "a [v] red square on a blue background.", "it moves in [u] motion.")
    Trainer(bb, [spec], tiny_config(), "unused.safetensors", progress=False)
    assert "the high_noise expert serves t in [0.875, 1], where 2.6% of training samples" in capsys.readouterr().err
    cfg = tiny_config()
    cfg.flow.shift = 12.0
    Trainer(bb, [spec], cfg, "unused.safetensors", progress=False)
    assert "expert serves" not in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# End to end from a folder: train, generate, export (one run per layout, shared by the tests below)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["a14b", "ti2v"])
def trained(request, tmp_path_factory):
    layout = {"a14b": A14B, "ti2v": TI2V}[request.param]
    root = tmp_path_factory.mktemp(request.param)
    folder = save_folder(layout, root / "model")
    bb = load_backbone(str(folder), cache_dir=root / "cache")  # set up before conftest's isolated cache
    _, geometry, _ = wan.TINY[layout.name]
    clip = torch.rand(
        geometry.frames + 1, 3, geometry.height, geometry.width, generator=torch.Generator().manual_seed(0)
    )
    spec = ConceptSpec("sq", clip * 2 - 1, "a [v] red square on a blue background.", "it moves in [u] motion.")
    out = root / "sq.safetensors"

    def one_high_one_low(n, *args, device=None, **kwargs):  # each micro-batch: a sample for each expert
        return torch.tensor([0.95, 0.3] * n)[:n].to(device)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(flow, "sample_timesteps", one_high_one_low)
        cfg = tiny_config(steps=(2, 2), batch=2)
        Trainer(bb, [spec], cfg, out, geometry=geometry, progress=False, cache_dir=root / "cache").run()
    return SimpleNamespace(layout=layout, folder=folder, root=root, out=out, geometry=geometry, bb=bb)


def test_a_folder_gets_its_own_models_defaults(trained):
    bb, layout = trained.bb, trained.layout
    assert bb.layout is layout and bb.geometry == layout.geometry and bb.sampling == layout.sampling
    if layout is A14B:
        assert (bb.geometry, bb.sampling.shift) == (Geometry(81, 480, 832, 16.0), 12.0)
        assert isinstance(bb.transformer, wan.Experts) and bb.transformer.boundary == 0.875
    else:  # and its VAE's and patch's geometry rules
        assert (bb.geometry, bb.sampling.shift) == (Geometry(121, 704, 1280, 24.0), 5.0)
        assert (bb.latent_channels, bb.vae_stride, bb.size_step, bb.frame_step) == (48, 16, 32, 4)
        bb.check_geometry(bb.geometry)
        assert bb.latent_shape(bb.geometry) == (48, 31, 44, 80)
        with pytest.raises(SetseqError, match="multiples of 32.*nearest valid geometry is 121 frames at 704x1280"):
            bb.check_geometry(Geometry(121, 720, 1280, 24.0))


def test_both_stages_train_in_each_expert_and_the_file_says_which(trained, capsys):
    final, stage1 = cio.load(trained.out), cio.load(trained.out.with_name("sq.stage1.safetensors"))
    experts = ["high_noise", "low_noise"] if trained.layout.experts else [""]
    assert final.meta.get("experts", {}).keys() == stage1.meta.get("experts", {}).keys() == set(experts) - {""}
    for expert in experts:
        modules = [m for m in final.modules() if m.startswith(expert)]
        assert modules
        # stage 1 learned an identity basis in this expert; stage 2 left it alone and learned motion
        assert any(stage1.tensors[f"{m}.basis"].abs().sum() > 0 for m in modules)
        for m in modules:
            for part in ("basis", "identity"):
                assert torch.equal(final.tensors[f"{m}.{part}"], stage1.tensors[f"{m}.{part}"])
        assert any(final.tensors[f"{m}.motion.sq"].abs().sum() > 0 for m in modules)
    if trained.layout.experts:
        assert final.meta["experts"]["high_noise"] == {"component": "transformer", "t": [0.875, 1.0]}
        assert main(["info", str(trained.out)]) == 0
        assert (
            "expert       low_noise (transformer_2): t in [0.0, 0.875], 20 adapted modules" in capsys.readouterr().out
        )
        final.meta["experts"].pop("low_noise")
        with pytest.raises(SetseqError, match="module low_noise.blocks.0.* belongs to none of its experts"):
            cio.validate(final)


def test_generate_from_the_concept_file(trained):
    bb = load_backbone(str(trained.folder))
    cio.apply(cio.load(trained.out), bb)
    experts, seen = expert_inputs(bb)
    g = trained.geometry
    video = generate(bb, [PROMPT], geometry=g, steps=4, guidance=2.0, seed=3)
    assert video.shape == (1, g.frames, 3, g.height, g.width) and torch.isfinite(video).all()
    if trained.layout.experts:  # the folder's UniPC at flow shift 12 puts 3 of 4 steps above the boundary
        high, low = (torch.cat(seen[experts[e]]) for e in ("high_noise", "low_noise"))
        assert len(high) == 3 * 2 and len(low) == 1 * 2  # each step runs cond and uncond together
        assert (high >= 875).all() and (low < 875).all()
    else:  # TI2V-5B: one timestep per latent token, 2 x 2 x 2 tokens
        assert all(t.shape == (2, 8) and (t == t[:, :1]).all() for t in seen[experts["transformer"]])
    # the concept file alone reproduces the model the trainer left, in each expert
    x = torch.randn(2, *bb.latent_shape(g), generator=torch.Generator().manual_seed(0))
    t, text = torch.tensor([0.95, 0.3]), bb.encode_text([PROMPT, PROMPT])
    with torch.no_grad():
        assert torch.allclose(bb.velocity(x, t, text), trained.bb.velocity(x, t, text), atol=1e-5)


def _expert_outputs(modules, seed=0):
    """Each transformer's output on one seeded random input, at a timestep of its own range."""
    g = torch.Generator().manual_seed(seed)
    first = next(iter(modules.values()))
    c = first.config.in_channels
    x, text = torch.randn(1, c, 2, 4, 4, generator=g), torch.randn(1, 16, 32, generator=g)
    timesteps = {"high_noise": 950.0, "low_noise": 300.0, "": 500.0}
    with torch.no_grad():
        return {e: m(x, torch.tensor([timesteps[e]]), text, return_dict=False)[0] for e, m in modules.items()}


def _ours(bb):
    if bb.layout.experts:
        return {"high_noise": bb.transformer.high_noise, "low_noise": bb.transformer.low_noise}
    return {"": bb.transformer}


def _pipeline(folder):
    from diffusers import WanPipeline

    pytest.importorskip("peft")  # diffusers loads LoRAs through PEFT
    return WanPipeline.from_pretrained(str(folder), local_files_only=True)


def _load_lora(pipe, paths):
    """The exported files into the pipeline, as a user would: the low-noise one into transformer_2."""
    for path in paths:
        pipe.load_lora_weights(str(path), load_into_transformer_2=path.stem.endswith("_low_noise"))
    if pipe.transformer_2 is None:
        return {"": pipe.transformer}
    return {"high_noise": pipe.transformer, "low_noise": pipe.transformer_2}


@pytest.mark.parametrize("fmt", ["diffusers", "comfyui"])
def test_the_export_loads_with_the_pipelines_own_loader_and_changes_each_expert(trained, fmt, capsys):
    cs = cio.load(trained.out)
    out = trained.root / f"sq-{fmt}.safetensors"
    assert main(["export", str(trained.out), "--format", fmt, "--motion-scale", "0.7", "--out", str(out)]) == 0
    names = ["sq-{}_high_noise", "sq-{}_low_noise"] if trained.layout.experts else ["sq-{}"]
    paths = [trained.root / f"{name.format(fmt)}.safetensors" for name in names]
    assert capsys.readouterr().out.split() == [w for p in paths for w in ("wrote", str(p))]
    if fmt == "comfyui":  # Wan's own key names, alpha = R
        for path in paths:
            sd = load_file(path)
            assert all(k.startswith("diffusion_model.blocks.") for k in sd)
            assert "diffusion_model.blocks.1.self_attn.q.lora_A.weight" in sd
            assert sd["diffusion_model.blocks.0.ffn.2.alpha"].item() == cs.meta["rank"]
    pipe = _pipeline(trained.folder)
    base = _expert_outputs(_load_lora(pipe, []))
    theirs = _expert_outputs(_load_lora(pipe, paths))
    bb = load_backbone(str(trained.folder))
    cio.apply(cs, bb)
    with lora.scales(bb.transformer, motion=0.7):
        ours = _expert_outputs(_ours(bb))
    assert theirs.keys() == ours.keys() == base.keys()
    for e in ours:
        assert not torch.allclose(ours[e], base[e], atol=1e-4)  # the concept changes every expert
        assert torch.allclose(theirs[e], ours[e], atol=1e-5)


def test_the_identity_export_still_reconstructs_stage_1(trained):
    """The paper's appearance-only model is stage 1's: the final concept's identity part, exported and
    loaded by diffusers, gives every expert the outputs of the stage-1 concept file's model."""
    final, stage1 = cio.load(trained.out), cio.load(trained.out.with_name("sq.stage1.safetensors"))
    paths = export(final, trained.root / "sq-identity.safetensors", "diffusers", part="identity")
    theirs = _expert_outputs(_load_lora(_pipeline(trained.folder), paths))
    bb = load_backbone(str(trained.folder))
    base = _expert_outputs(_ours(bb))
    cio.apply(stage1, bb)
    ours = _expert_outputs(_ours(bb))
    for e in ours:
        gap, effect = (theirs[e] - ours[e]).abs().max().item(), (ours[e] - base[e]).abs().max().item()
        print(
            f"{trained.layout.name} {e or 'transformer'}: |export - stage 1| {gap:.2e}, |stage 1 - base| {effect:.2e}"
        )
        assert effect > 1e-4 and gap < 1e-5
