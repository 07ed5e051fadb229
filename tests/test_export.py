"""Export of a concept set as a standard LoRA: the math, the key names, and loading into diffusers."""

import pytest
import torch
from safetensors.torch import load_file

from conftest import random_concept, tiny_backbone
from setseq import concept as cio
from setseq import lora
from setseq.cli import main
from setseq.errors import SetseqError
from setseq.export import export, lora_pairs, wan_original_name

SCALES = dict(identity_scale=0.7, motion_scale={"a": 0.5, "b": 2.0})


# --------------------------------------------------------------------------------------------
# Any base (the toy): the math and the errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("part", ["full", "identity"])
def test_up_times_down_is_the_layers_weight_delta(part):
    bb = tiny_backbone()
    cs = random_concept(bb)
    motion = SCALES["motion_scale"] if part == "full" else 0.0
    lora.set_scales(bb.transformer, identity=SCALES["identity_scale"], motion=motion)
    pairs = lora_pairs(cs, part, **SCALES)
    layers = lora.adapters(bb.transformer)
    assert sorted(pairs) == sorted(layers)
    for name, (down, up) in pairs.items():
        assert down.shape == (4, layers[name].identity.shape[1]) and up.shape == (layers[name].basis.shape[0], 4)
        assert torch.allclose(up @ down, layers[name].delta_weight(), atol=1e-6)


def test_export_with_rank_weights_and_scales_is_the_delta_generate_merges(tmp_path):
    """The export of a restyled concept (per-component rank weights, identity and per-concept motion
    scales) is, layer by layer, the weight delta of the model `generate` samples with those settings:
    the concept applied to a fresh base as `setseq generate` does, scoped to the same scales, merged."""
    cs = random_concept(tiny_backbone())
    g = torch.tensor([1.5, 0.0, -0.5, 2.0])  # rank 4
    settings = dict(identity_scale=0.7, motion_scale={"a": 0.5, "b": -1.25})
    bb = tiny_backbone()
    cio.apply(cs, bb)
    bb.transformer.eval()
    layers = lora.adapters(bb.transformer)
    before = {n: l.base_layer.weight.clone() for n, l in layers.items()}
    with lora.scales(bb.transformer, identity=0.7, motion=settings["motion_scale"], rank_weights=g):
        lora.merge(bb.transformer)
        merged = {n: l.base_layer.weight - before[n] for n, l in layers.items()}
        lora.unmerge(bb.transformer)
    pairs = lora_pairs(cs, "full", **settings, rank_weights=g)
    assert sorted(pairs) == sorted(merged)
    for name, (down, up) in pairs.items():
        torch.testing.assert_close(up @ down, merged[name], rtol=1e-4, atol=1e-6)
    # the rank weights matter: without them the export would differ
    assert not torch.allclose(lora_pairs(cs, "full", **settings)[name][0], down)
    # and the file written by the CLI carries the same down matrices
    concept_file = cio.save(cs, tmp_path / "c.safetensors")
    out = tmp_path / "c.lora.safetensors"
    assert (
        main(
            [
                "export",
                str(concept_file),
                "--format",
                "diffusers",
                "--identity-scale",
                "0.7",
                "--rank-weights",
                "1.5,0,-0.5,2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    sd = load_file(out)
    full = lora_pairs(cs, "full", identity_scale=0.7, rank_weights=g)
    for name, (down, up) in full.items():
        torch.testing.assert_close(sd[f"transformer.{name}.lora_A.weight"], down)
        torch.testing.assert_close(sd[f"transformer.{name}.lora_B.weight"], up)
    with pytest.raises(SetseqError, match="rank weights must have 4 entries"):
        lora_pairs(cs, rank_weights=torch.ones(3))


def test_diffusers_format_keys_for_a_toy_concept(tmp_path):
    cs = random_concept(tiny_backbone())
    sd = load_file(export(cs, tmp_path / "toy.safetensors", "diffusers")[0])
    assert len(sd) == 2 * len(cs.modules())
    m = cs.modules()[0]
    assert sd[f"transformer.{m}.lora_A.weight"].shape == cs.tensors[f"{m}.identity"].shape
    assert sd[f"transformer.{m}.lora_B.weight"].shape == cs.tensors[f"{m}.basis"].shape


def test_export_refuses_what_it_cannot_write(tmp_path):
    cs = random_concept(tiny_backbone())
    with pytest.raises(SetseqError, match="ComfyUI format is for Wan, LTX-Video, LTX-2 and HunyuanVideo 1.5"):
        export(cs, tmp_path / "x.safetensors", "comfyui")
    with pytest.raises(SetseqError, match="no concept named"):
        export(cs, tmp_path / "x.safetensors", "diffusers", motion_scale={"c": 1.0})
    with pytest.raises(SetseqError, match=".safetensors"):
        export(cs, tmp_path / "x.pt", "diffusers")
    tokens_only = cio.ConceptSet({"token.[v]": torch.zeros(4)}, cs.meta)
    with pytest.raises(SetseqError, match="nothing to export"):
        export(tokens_only, tmp_path / "x.safetensors", "diffusers")
    assert not list(tmp_path.iterdir())


def test_cli_export(tmp_path, capsys):
    concept_file = cio.save(random_concept(tiny_backbone()), tmp_path / "c.safetensors")
    out = tmp_path / "c.lora.safetensors"
    assert (
        main(
            [
                "export",
                str(concept_file),
                "--format",
                "diffusers",
                "--part",
                "identity",
                "--identity-scale",
                "0.5",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    cs = cio.load(concept_file)
    m = cs.modules()[0]
    assert torch.allclose(load_file(out)[f"transformer.{m}.lora_A.weight"], 0.5 * cs.tensors[f"{m}.identity"])
    assert main(["export", str(concept_file), "--format", "comfyui", "--out", str(tmp_path / "d.safetensors")]) == 2
    assert "ComfyUI format" in capsys.readouterr().err


def test_wan_key_table():
    assert wan_original_name("blocks.12.attn1.to_out.0") == "blocks.12.self_attn.o"
    assert wan_original_name("blocks.0.attn2.to_k") == "blocks.0.cross_attn.k"
    assert wan_original_name("blocks.3.ffn.net.0.proj") == "blocks.3.ffn.0"
    assert wan_original_name("blocks.3.ffn.net.2") == "blocks.3.ffn.2"
    assert wan_original_name("condition_embedder.time_proj") is None


# --------------------------------------------------------------------------------------------
# Wan, LTX-Video, LTX-2, HunyuanVideo 1.5: diffusers' own loaders read the exports back
# --------------------------------------------------------------------------------------------


def _diffusers_setup(kind):
    """A tiny backbone with a random concept, and a pipeline over an identical copy of its base."""
    pytest.importorskip("diffusers")
    pytest.importorskip("peft")  # diffusers loads LoRAs through PEFT
    from tiny_pipelines import MODULES, pipeline

    bb = MODULES[kind].tiny(seed=0)
    return bb, random_concept(bb), pipeline(kind, seed=0)


def _transformer_output(transformer, kind, bb, seed=0):
    """The prediction of `transformer` on fixed random inputs: called directly for Wan and LTX-Video,
    through the backbone (its transformer swapped for this one) for LTX-2 and HunyuanVideo 1.5."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if kind == "wan":  # latents (B, C, F, h, w), text (B, T, D)
            return transformer(
                torch.randn(1, 16, 2, 4, 4, generator=g),
                torch.tensor([400.0]),
                torch.randn(1, 16, 32, generator=g),
                return_dict=False,
            )[0]
        if kind == "ltx":
            return transformer(
                torch.randn(1, 8, 8, generator=g),
                torch.randn(1, 16, 32, generator=g),
                torch.tensor([400.0]),
                torch.ones(1, 16),
                num_frames=2,
                height=2,
                width=2,
                return_dict=False,
            )[0]  # tokens (B, T, C)
        x = torch.randn(1, *bb.latent_shape(bb.geometry), generator=g)
        own, bb.transformer = bb.transformer, transformer
        try:
            return bb.velocity(x, torch.tensor([0.4]), bb.encode_text(["a red dog"]))
        finally:
            bb.transformer = own


def _load_lora(pipe, kind, path):
    """The pipeline's LoRA loader; HunyuanVideo15Pipeline has none, so its transformer's PEFT loader."""
    if kind == "hunyuan15":
        assert not hasattr(pipe, "load_lora_weights")
        pipe.transformer.load_lora_adapter(str(path), prefix="transformer")
    else:
        pipe.load_lora_weights(str(path))


@pytest.mark.parametrize("kind", ["wan", "ltx", "ltx2", "hunyuan15"])
@pytest.mark.parametrize("part", ["full", "identity"])
def test_diffusers_export_loads_into_the_pipeline(tmp_path, kind, part):
    bb, cs, pipe = _diffusers_setup(kind)
    base = _transformer_output(pipe.transformer, kind, bb)
    [path] = export(cs, tmp_path / "c.safetensors", "diffusers", part=part, **SCALES)
    _load_lora(pipe, kind, path)
    motion = SCALES["motion_scale"] if part == "full" else 0.0
    lora.set_scales(bb.transformer, identity=SCALES["identity_scale"], motion=motion)
    ours = _transformer_output(bb.transformer, kind, bb)
    theirs = _transformer_output(pipe.transformer, kind, bb)
    assert not torch.allclose(ours, base, atol=1e-3)  # the concept does change the model
    assert torch.allclose(theirs, ours, atol=1e-5)


@pytest.mark.parametrize("kind", ["wan", "ltx", "ltx2"])
def test_comfyui_export_converts_back_to_the_diffusers_export(tmp_path, kind):
    bb, cs, _ = _diffusers_setup(kind)
    from diffusers.loaders.lora_conversion_utils import (
        _convert_non_diffusers_ltx2_lora_to_diffusers,
        _convert_non_diffusers_ltxv_lora_to_diffusers,
        _convert_non_diffusers_wan_lora_to_diffusers,
    )

    convert = {
        "wan": _convert_non_diffusers_wan_lora_to_diffusers,
        "ltx": _convert_non_diffusers_ltxv_lora_to_diffusers,
        "ltx2": _convert_non_diffusers_ltx2_lora_to_diffusers,
    }[kind]
    comfy = load_file(export(cs, tmp_path / "comfy.safetensors", "comfyui", **SCALES)[0])
    assert all(k.startswith("diffusion_model.") for k in comfy)
    if kind == "wan":
        assert "diffusion_model.blocks.1.cross_attn.o.lora_B.weight" in comfy
        assert comfy["diffusion_model.blocks.0.ffn.2.alpha"].item() == 4
    reference = load_file(export(cs, tmp_path / "diffusers.safetensors", "diffusers", **SCALES)[0])
    converted = convert(comfy)
    assert sorted(converted) == sorted(reference)
    assert all(torch.allclose(converted[k], reference[k]) for k in reference)


def test_ltx2_comfyui_keys_are_the_native_video_stream_names(tmp_path):
    """ComfyUI's LTX-2 blocks (comfy/ldm/lightricks/av_model.py) name the video stream attn1, attn2 and
    ff, with to_q/to_k/to_v/to_out.0 and net.0.proj/net.2 (comfy/ldm/lightricks/model.py); the audio
    stream's layers (audio_attn1, ..., audio_ff, audio_to_video_attn) are not adapted."""
    bb, cs, _ = _diffusers_setup("ltx2")
    comfy = load_file(export(cs, tmp_path / "comfy.safetensors", "comfyui", **SCALES)[0])
    layers = ["attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v"]
    layers += ["attn2.to_out.0", "ff.net.0.proj", "ff.net.2"]
    expected = {
        f"diffusion_model.transformer_blocks.{i}.{layer}.lora_{ab}.weight"
        for i in range(2)
        for layer in layers
        for ab in "AB"
    }
    assert set(comfy) == expected


def test_hunyuan15_comfyui_keys_are_the_native_names_with_fused_qkv(tmp_path):
    """ComfyUI's HunyuanVideo double blocks (comfy/ldm/hunyuan_video/model.py, flux's DoubleStreamBlock)
    hold one fused img_attn.qkv, img_attn.proj and img_mlp.0 / img_mlp.2; the fused LoRA's delta is the
    q, k and v deltas stacked, at scale alpha / rank = 1."""
    bb, cs, _ = _diffusers_setup("hunyuan15")
    comfy = load_file(export(cs, tmp_path / "comfy.safetensors", "comfyui", **SCALES)[0])
    native = ["img_attn.qkv", "img_attn.proj", "img_mlp.0", "img_mlp.2"]
    expected = {
        f"diffusion_model.double_blocks.{i}.{layer}.{key}"
        for i in range(2)
        for layer in native
        for key in ("lora_A.weight", "lora_B.weight", "alpha")
    }
    assert set(comfy) == expected
    ref = load_file(export(cs, tmp_path / "diffusers.safetensors", "diffusers", **SCALES)[0])

    def delta(sd, name):
        return sd[f"{name}.lora_B.weight"] @ sd[f"{name}.lora_A.weight"]

    for i in range(2):
        c, d = f"diffusion_model.double_blocks.{i}", f"transformer.transformer_blocks.{i}"
        qkv = torch.cat([delta(ref, f"{d}.attn.to_{p}") for p in "qkv"])  # (3 out, in)
        torch.testing.assert_close(delta(comfy, f"{c}.img_attn.qkv"), qkv)
        assert comfy[f"{c}.img_attn.qkv.alpha"].item() == comfy[f"{c}.img_attn.qkv.lora_A.weight"].shape[0] == 12
        for ours, theirs in [
            ("img_attn.proj", "attn.to_out.0"),
            ("img_mlp.0", "ff.net.0.proj"),
            ("img_mlp.2", "ff.net.2"),
        ]:
            torch.testing.assert_close(delta(comfy, f"{c}.{ours}"), delta(ref, f"{d}.{theirs}"))
            assert comfy[f"{c}.{ours}.alpha"].item() == 4


def test_hunyuan15_key_table():
    from setseq.export import hunyuan15_native_name

    assert hunyuan15_native_name("transformer_blocks.7.attn.to_k") == ("double_blocks.7.img_attn.qkv", 1)
    assert hunyuan15_native_name("transformer_blocks.7.attn.add_v_proj") == ("double_blocks.7.txt_attn.qkv", 2)
    assert hunyuan15_native_name("transformer_blocks.0.ff_context.net.2") == ("double_blocks.0.txt_mlp.2", None)
    assert hunyuan15_native_name("transformer_blocks.0.attn1.to_q") is None  # LTX's, not HunyuanVideo's


def test_the_recorded_base_model_picks_the_comfyui_names(tmp_path):
    """An LTX concept of feed-forward layers only has module names that HunyuanVideo 1.5 also has: the
    base model the concept file records decides (LTX: the diffusers names); a file without it (older
    ones) is told by the names."""
    pytest.importorskip("diffusers")
    from setseq.backbones import ltx
    from setseq.export import base_family

    ff = ["transformer_blocks.0.ff.net.0.proj", "transformer_blocks.1.ff.net.2"]
    assert base_family(ff, "LTX-Video") == "ltx" == base_family(ff, "LTX-2")
    assert base_family(ff, "HunyuanVideo 1.5") == "hunyuan15" == base_family(ff)
    assert base_family(["transformer_blocks.0.attn1.to_q"], "HunyuanVideo 1.5") == "other"
    assert base_family(["blocks.0.attn1.to_q"], "Wan 2.2 TI2V-5B") == "wan"
    cs = random_concept(ltx.tiny(), targets=["transformer_blocks.*.ff.net.2"])
    assert cs.meta["base"]["model"] == "LTX-Video"
    comfy = load_file(export(cs, tmp_path / "ff.safetensors", "comfyui")[0])
    assert sorted(comfy) == [
        f"diffusion_model.transformer_blocks.{i}.ff.net.2.lora_{ab}.weight" for i in range(2) for ab in "AB"
    ]
