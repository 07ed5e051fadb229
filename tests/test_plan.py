"""`setseq train --dry-run`: the plan of a run from a Wan folder's configuration files alone."""

import json

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from setseq import plan  # noqa: E402
from setseq.backbones.base import Geometry  # noqa: E402
from setseq.cli import main  # noqa: E402

# The diffusers configurations of Wan-AI's Diffusers folders (the keys that decide sizes).
WAN_21_13B = dict(
    patch_size=[1, 2, 2],
    num_attention_heads=12,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=8960,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    image_dim=None,
    added_kv_proj_dim=None,
    rope_max_seq_len=1024,
)
WAN_14B = dict(WAN_21_13B, num_attention_heads=40, ffn_dim=13824, num_layers=40)
WAN_5B = dict(WAN_21_13B, num_attention_heads=24, ffn_dim=14336, in_channels=48, out_channels=48)
UMT5_XXL = dict(
    d_model=4096,
    d_ff=10240,
    d_kv=64,
    num_heads=64,
    num_layers=24,
    vocab_size=256384,
    feed_forward_proj="gated-gelu",
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    architectures=["UMT5EncoderModel"],
)
VAE_21 = dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, temperal_downsample=[False, True, True])
VAE_22 = dict(
    base_dim=160,
    decoder_base_dim=256,
    z_dim=48,
    dim_mult=[1, 2, 4, 4],
    num_res_blocks=2,
    temperal_downsample=[False, True, True],
    is_residual=True,
    in_channels=12,
    out_channels=12,
    patch_size=2,
    scale_factor_spatial=16,
    latents_mean=[0.0] * 48,
    latents_std=[1.0] * 48,
)
FOLDERS = {
    "wan2.1-1.3b": ({}, WAN_21_13B, VAE_21),
    "wan2.2-a14b": ({"boundary_ratio": 0.875}, WAN_14B, VAE_21),
    "wan2.2-ti2v-5b": ({"expand_timesteps": True}, WAN_5B, VAE_22),
}


def write_folder(folder, name):
    """A Wan Diffusers folder of configuration files only: not one weight."""
    index, transformer, vae = FOLDERS[name]
    parts = {"transformer": transformer, "text_encoder": UMT5_XXL, "vae": vae}
    if "boundary_ratio" in index:
        parts["transformer_2"] = transformer
    for part, config in parts.items():
        (folder / part).mkdir(parents=True)
        (folder / part / "config.json").write_text(json.dumps(config))
    two = ["diffusers", "WanTransformer3DModel"] if "transformer_2" in parts else [None, None]
    model_index = {"_class_name": "WanPipeline", "transformer": ["diffusers", "WanTransformer3DModel"]}
    (folder / "model_index.json").write_text(json.dumps({**model_index, "transformer_2": two, **index}))
    return folder


@pytest.mark.parametrize(
    "name,tokens,billions,experts",
    [("wan2.1-1.3b", 32_760, 1.42, 1), ("wan2.2-a14b", 32_760, 14.29, 2), ("wan2.2-ti2v-5b", 27_280, 5.0, 1)],
)
def test_dry_run_prints_the_plan_from_configs_alone(tmp_path, capsys, name, tokens, billions, experts):
    folder = write_folder(tmp_path / name, name)
    args = ["train", "--base", str(folder), "--dry-run", "--dtype", "bf16", "--rank", "32", "--vram", "24"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "an estimate by arithmetic, not a measurement" in out
    assert f"{tokens:,} tokens" in out and "fits 24 GiB" in out
    model = plan.read_model(folder)
    per_expert = (model.other + model.blocks * (model.block_linear + model.block_other)) / 1e9
    assert model.experts == experts and abs(per_expert - billions) < 0.03
    assert abs(model.text_encoder / 1e9 - 5.68) < 0.01  # UMT5-XXL
    assert len(model.adapted) == experts * model.blocks * 10  # q, k, v, out of both attentions, 2 FFN layers


def test_wan_2_2_a14b_fits_24_gib_by_the_arithmetic_with_the_flags_the_plan_names(tmp_path):
    model = plan.read_model(write_folder(tmp_path / "a14b", "wan2.2-a14b"))
    g = Geometry(81, 480, 832, 16.0)
    s = plan.Settings(rank=32)
    plain = plan.estimate(model, g, s)
    assert plain.total / plan.GIB > 80  # two bf16 experts of 26.6 GiB on the GPU
    fitting = plan.fit(model, g, s, 24)
    assert fitting is not None and fitting.fp8_base and fitting.offload_activations
    e = plan.estimate(model, g, fitting)
    assert e.total <= plan.HEADROOM * 24 * plan.GIB and e.encoders == 0
    # the flags that fit are the least: one swapped block fewer does not fit
    fewer = plan.estimate(
        model,
        g,
        plan.Settings(rank=32, fp8_base=True, offload_activations=True, blocks_to_swap=fitting.blocks_to_swap - 1),
    )
    assert fitting.blocks_to_swap == 0 or fewer.total > plan.HEADROOM * 24 * plan.GIB
    # without the offload, even every block swapped leaves the checkpointed inputs (12.5 GiB) on the GPU
    swapped = plan.Settings(rank=32, fp8_base=True, blocks_to_swap=80)
    assert plan.estimate(model, g, swapped).total > plan.HEADROOM * 24 * plan.GIB
    kept = plan.estimate(model, g, plan.Settings(rank=32, keep_encoders=True))
    assert abs(kept.encoders / plan.GIB - (10.58 + 0.47)) < 0.05  # UMT5-XXL in bf16 and the float32 VAE


def test_dry_run_refuses_what_it_cannot_plan(tmp_path, capsys):
    assert main(["train", "--base", "toy", "--dry-run"]) == 2
    assert "--dry-run plans a run on a local Wan folder" in capsys.readouterr().err
    assert main(["train", "x.mp4", "--vram", "24"]) == 2
    assert "--vram goes with --dry-run" in capsys.readouterr().err
