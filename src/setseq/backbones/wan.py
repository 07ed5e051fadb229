"""Wan text-to-video (diffusers' WanTransformer3DModel, AutoencoderKLWan, UMT5) as a backbone: Wan 2.1
T2V, Wan 2.2 T2V-A14B and Wan 2.2 TI2V-5B, told apart by what their folder holds (`identify`).

    video (B, F, C, H, W) --VAE--> latents (B, C', (F-1)/4+1, H/s, W/s), normalised per channel
                                   C' = 16, s = 8 (Wan 2.1, T2V-A14B);  C' = 48, s = 16 (TI2V-5B)
    prompt --UMT5--> (B, T, 4096), zero past the prompt's tokens and padded with zeros to 512
    v = transformer(x_t, timestep = 1000 t, text)       (the model's own flow convention is setseq's)

Wan 2.2 T2V-A14B is two transformers of one architecture: the folder's `transformer`, the high-noise
expert, runs where timestep >= boundary_ratio * 1000 (0.875: t >= 0.875), `transformer_2`, the
low-noise expert, below. Here they are one module, `Experts`, with children `high_noise` and
`low_noise`: adapters, freezing, concept files and checkpoints see both, named by expert, and each
sample's timestep decides which expert runs on it, in training (so whose adapters learn from it) as
in sampling (which switches expert at the boundary). TI2V-5B takes one timestep per latent token
(its pipeline's `expand_timesteps`); in text-to-video they are all equal.

Sampling: a folder's own scheduler (UniPCMultistepScheduler with flow sigmas, `scheduling`), its timesteps
set as WanPipeline sets them (the scheduler's own spacing for the number of steps), at WanPipeline's
defaults; the layout's `SamplingDefaults` serve setseq's Euler sampler (--sampler euler).

Wan's cross-attention takes no mask: the pipeline zeroes every embedding past a prompt's tokens,
so a masked token (setseq's text-token masking) is zeroed the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from setseq.backbones import scheduling
from setseq.backbones.base import Geometry, SamplingDefaults
from setseq.backbones.diffusers_common import (
    DiffusersBackbone,
    build_tiny,
    default_cache_dir,
    load_components,
    load_part,
    read_config,
    read_model_index,
    require_diffusers,
)
from setseq.errors import SetseqError

# Wan2.1-T2V-1.3B's transformer (the diffusers config of Wan-AI/Wan2.1-T2V-1.3B-Diffusers).
WAN_1_3B = dict(
    patch_size=(1, 2, 2),
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
    rope_max_seq_len=1024,
)
# A tiny random instance for tests and smoke runs; its VAE keeps the real 4x temporal and 8x spatial
# compression, so the geometry rules are the real ones.
WAN_TINY = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=8,
    in_channels=16,
    out_channels=16,
    text_dim=32,
    freq_dim=32,
    ffn_dim=32,
    num_layers=2,
    rope_max_seq_len=32,
)
WAN_TINY_VAE = dict(
    base_dim=4, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
)
# TI2V-5B's kind of VAE, tiny: 48 channels, 2x2 patches and residual down/up-sampling, so 16x spatial
# and 4x temporal compression like the real one; its latent statistics are made up (but not 0 and 1).
WAN_TINY_VAE_48 = dict(
    base_dim=4,
    z_dim=48,
    dim_mult=[1, 1, 1, 1],
    num_res_blocks=1,
    temperal_downsample=[False, True, True],
    is_residual=True,
    in_channels=12,
    out_channels=12,
    patch_size=2,
    scale_factor_spatial=16,
    latents_mean=[(i % 5 - 2) / 10 for i in range(48)],
    latents_std=[1.0 + (i % 3) / 4 for i in range(48)],
)
WAN_TINY_TEXT = dict(d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4, relative_attention_num_buckets=8)

TEXT_LEN = 512
PIPELINE = "WanPipeline"  # the pipeline class a Wan folder's model_index.json names

# diffusers module names of the adapted layers in one transformer
TARGETS = [
    "blocks.*.attn[12].to_[qkv]",
    "blocks.*.attn[12].to_out.0",
    "blocks.*.ffn.net.0.proj",
    "blocks.*.ffn.net.2",
]


# --------------------------------------------------------------------------------------------
# Layouts: what a folder is, and the defaults that come with it
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """One kind of Wan folder and its defaults (clip geometry and sampling: the Wan repository's)."""

    name: str
    geometry: Geometry
    sampling: SamplingDefaults
    latent_channels: int  # the VAE's z_dim, which is also the transformer's in_channels
    vae_stride: int  # the VAE's spatial compression
    experts: bool  # two transformers switched at the pipeline's boundary_ratio
    expand_timesteps: bool  # one timestep per latent token


# Wan 2.1 T2V (1.3B, 14B): 480p clips at 16 fps, the diffusers pipeline's 480p settings.
WAN_2_1 = Layout("Wan 2.1 T2V", Geometry(81, 480, 832, 16.0), SamplingDefaults(50, 5.0, 3.0), 16, 8, False, False)
# Wan 2.2 T2V-A14B: 81 frames at 16 fps (480p here; 720p works too), 40 steps at shift 12 and guidance 4
# (the Wan repository's t2v-A14B settings; it guides the low-noise expert at 3, which setseq does not).
WAN_2_2_A14B = Layout(
    "Wan 2.2 T2V-A14B", Geometry(81, 480, 832, 16.0), SamplingDefaults(40, 4.0, 12.0), 16, 8, True, False
)
# Wan 2.2 TI2V-5B: 121 frames of 704x1280 at 24 fps, 50 steps at shift 5 and guidance 5.
WAN_2_2_TI2V_5B = Layout(
    "Wan 2.2 TI2V-5B", Geometry(121, 704, 1280, 24.0), SamplingDefaults(50, 5.0, 5.0), 48, 16, False, True
)
LAYOUTS = (WAN_2_1, WAN_2_2_A14B, WAN_2_2_TI2V_5B)
GEOMETRY, SAMPLING = WAN_2_1.geometry, WAN_2_1.sampling


def identify(index: dict, transformer: dict, vae: dict, where: str = "the model folder") -> Layout:
    """Which of LAYOUTS a WanPipeline folder holds, from its model_index.json and the configs of its
    transformer and VAE (read before any weight is loaded).

    Args:
        index: model_index.json (transformer_2, boundary_ratio, expand_timesteps).
        transformer, vae: transformer/config.json and vae/config.json.
        where: names the folder in the error.

    Raises:
        SetseqError: for any other combination, naming what the folder holds.
    """
    two = (index.get("transformer_2") or [None])[0] is not None
    boundary = index.get("boundary_ratio")
    switches = isinstance(boundary, (int, float)) and 0.0 < boundary < 1.0
    expand = bool(index.get("expand_timesteps", False))
    z, stride = vae.get("z_dim", 16), vae.get("scale_factor_spatial", 8)
    channels = transformer.get("in_channels")
    for layout in LAYOUTS:
        if (
            two == switches == layout.experts
            and expand == layout.expand_timesteps
            and z == channels == transformer.get("out_channels") == layout.latent_channels
            and stride == layout.vae_stride
            and transformer.get("image_dim") is None
        ):
            return layout
    raise SetseqError(
        f"{where} holds a Wan layout that setseq does not know ({'two transformers' if two else 'one transformer'}, "
        f"boundary_ratio {boundary}, expand_timesteps {expand}, a {z}-channel VAE of {stride}x spatial "
        f"compression, a transformer of {channels} input channels); setseq knows "
        f"{', '.join(layout.name for layout in LAYOUTS)}."
    )


# --------------------------------------------------------------------------------------------
# Wan 2.2 T2V-A14B's two experts as one module
# --------------------------------------------------------------------------------------------


class Experts(nn.Module):
    """Two transformers of one architecture: `high_noise` runs on the samples whose timestep is at
    least 1000 * boundary, `low_noise` on the rest, as in WanPipeline. Gradients reach only the
    expert that ran on a sample."""

    NAMES = ("high_noise", "low_noise")  # module-name prefixes; the folder's transformer, transformer_2

    def __init__(self, high_noise: nn.Module, low_noise: nn.Module, boundary: float):
        super().__init__()
        self.high_noise, self.low_noise, self.boundary = high_noise, low_noise, float(boundary)

    @property
    def dtype(self) -> torch.dtype:
        return self.high_noise.dtype

    @property
    def config(self):
        return self.high_noise.config  # the two share an architecture

    def enable_gradient_checkpointing(self) -> None:
        self.high_noise.enable_gradient_checkpointing()
        self.low_noise.enable_gradient_checkpointing()

    def disable_gradient_checkpointing(self) -> None:
        self.high_noise.disable_gradient_checkpointing()
        self.low_noise.disable_gradient_checkpointing()

    def describe(self) -> dict[str, dict]:
        """Which folder component each expert is and the times t in [0, 1] it serves (for concept files)."""
        b = self.boundary
        return {
            "high_noise": {"component": "transformer", "t": [b, 1.0]},
            "low_noise": {"component": "transformer_2", "t": [0.0, b]},
        }

    def forward(self, hidden_states, timestep, encoder_hidden_states, return_dict=False):
        """WanTransformer3DModel's call: latents (B, C, F', h, w), timesteps (B,) in [0, 1000], text
        (B, T, D) -> a 1-tuple of the prediction (B, C, F', h, w), each sample's from its own expert."""
        t = timestep.reshape(len(timestep), -1)[:, 0]  # (B,); per-token timesteps would all be equal
        high = t >= 1000.0 * self.boundary  # (B,)
        # Which expert runs is decided on the host, one sync per call: running both experts on every
        # sample and keeping one answer would double the compute.
        n_high = int(high.sum())
        if n_high in (0, len(high)):
            expert = self.high_noise if n_high else self.low_noise
            return expert(hidden_states, timestep, encoder_hidden_states, return_dict=False)
        out = torch.empty_like(hidden_states)  # (B, C, F', h, w): Wan predicts as many channels as it reads
        for expert, rows in ((self.high_noise, high), (self.low_noise, ~high)):
            out[rows] = expert(hidden_states[rows], timestep[rows], encoder_hidden_states[rows], return_dict=False)[0]
        return (out,)


# --------------------------------------------------------------------------------------------
# The backbone
# --------------------------------------------------------------------------------------------


class WanBackbone(DiffusersBackbone):
    """Wan text-to-video of any of LAYOUTS. Build with `load` (a local folder) or from components
    (tests). `experts` describes Wan 2.2 T2V-A14B's two experts (None for the others)."""

    frame_step = 4
    lora_targets = TARGETS

    def __init__(
        self,
        name,
        transformer,
        vae,
        text_encoder,
        tokenizer,
        geometry: Geometry | None = None,
        sampling: SamplingDefaults | None = None,
        text_len: int = TEXT_LEN,
        *,
        layout: Layout = WAN_2_1,
        transformer_2: nn.Module | None = None,
        boundary: float | None = None,
        **options,
    ):
        """
        Args:
            name, transformer, vae, text_encoder, tokenizer, text_len, options: as `DiffusersBackbone`.
            geometry, sampling: default clip geometry and Euler sampling settings (default: the layout's).
            options: also `pipeline_sampler`, the folder's scheduler (`scheduling.PipelineSampler`).
            layout: which Wan this is (one of LAYOUTS).
            transformer_2, boundary: T2V-A14B's low-noise expert and the pipeline's boundary_ratio.

        Raises:
            SetseqError: when transformer_2 and boundary are given for a one-transformer layout, or not
                for a two-expert one.
        """
        if (transformer_2 is not None and boundary is not None) != layout.experts:
            raise SetseqError(f"{layout.name} needs {'a' if layout.experts else 'no'} transformer_2 and boundary.")
        self.layout, self.model, self.experts = layout, layout.name, None
        # The most elongated clip shape: the layout's own (Wan 2.1 480p: 832 x 480), also for a tiny
        # instance with a square default geometry; a wider clip is cropped to it.
        lg = layout.geometry
        self.max_aspect = max(lg.width / lg.height, lg.height / lg.width)
        if layout.experts:
            transformer = Experts(transformer, transformer_2, boundary)
            self.lora_targets = [f"{e}.{p}" for e in Experts.NAMES for p in TARGETS]
            self.experts = transformer.describe()
        cfg = vae.config
        self.latent_channels = cfg.z_dim
        self.vae_stride = cfg.scale_factor_spatial
        self.frame_step = cfg.scale_factor_temporal
        self.size_step = cfg.scale_factor_spatial * transformer.config.patch_size[1]
        super().__init__(
            name,
            transformer,
            vae,
            text_encoder,
            tokenizer,
            geometry or layout.geometry,
            sampling or layout.sampling,
            text_len=text_len,
            **options,
        )
        self._mean = torch.tensor(cfg.latents_mean).view(-1, 1, 1, 1)  # (C, 1, 1, 1)
        self._std = torch.tensor(cfg.latents_std).view(-1, 1, 1, 1)

    # the pipeline's normalisation: (z - mean) / std per latent channel
    def _normalise(self, z):
        return (z - self._mean.to(z.device)) / self._std.to(z.device)

    def _denormalise(self, z):
        return z * self._std.to(z.device) + self._mean.to(z.device)

    def _vae_decode(self, z):
        return self.vae.decode(z, return_dict=False)[0]

    def _tokenizer_options(self):
        return {"padding": "longest"}  # the encoder is masked, so padding further changes nothing

    def _encode_ids(self, ids, mask):
        emb = self.text_encoder(ids, attention_mask=mask).last_hidden_state  # (B, T, D)
        return emb * mask[..., None]  # zero past each prompt's tokens, as the pipeline does

    def _forward(self, x, timestep, emb, mask):
        emb = emb * mask[..., None].to(emb.dtype)  # masked tokens count as padding: zero
        emb = torch.nn.functional.pad(emb, (0, 0, 0, max(0, self.text_len - emb.shape[1])))  # (B, 512, D)
        if self.layout.expand_timesteps:  # TI2V-5B: one timestep per latent token, as its pipeline passes
            B, _, F, h, w = x.shape
            _, ph, pw = self.transformer.config.patch_size
            timestep = timestep[:, None].expand(B, F * (h // ph) * (w // pw))  # (B, T)
        return self.transformer(hidden_states=x, timestep=timestep, encoder_hidden_states=emb, return_dict=False)[0]


def load(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    device: str | None = None,
    cache_dir: str | Path | None = None,
    gradient_checkpointing: bool = False,
    fp8_base: bool = False,
    blocks_to_swap: int = 0,
) -> WanBackbone:
    """Wan from a local Diffusers-format folder (Wan2.1-T2V-1.3B-Diffusers, Wan2.2-T2V-A14B-Diffusers,
    Wan2.2-TI2V-5B-Diffusers, ...); never downloads. Its defaults are those of the layout it holds.

    Args:
        path: folder with model_index.json and transformer/, vae/, text_encoder/, tokenizer/ (and
            transformer_2/ for T2V-A14B).
        dtype: dtype of the transformer(s) and text encoder (torch.bfloat16 halves memory); the VAE
            stays in float32, and diffusers keeps Wan's norms and embeddings in float32.
        device: where to run (default: the CPU).
        cache_dir: where latents and text embeddings are cached (default: $SETSEQ_CACHE/encodings).
        gradient_checkpointing: recompute block activations in the backward pass.
        fp8_base: store the transformer blocks' linear weights in float8 x a per-tensor scale.
        blocks_to_swap: keep this many transformer blocks in CPU memory, copied to `device` as they run.

    Raises:
        SetseqError: for a layout setseq does not know (`identify`), a part that is missing or
            cannot be read, or a scheduler diffusers does not have.
    """
    require_diffusers()
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5EncoderModel

    root = Path(path).resolve()
    index = read_model_index(root)
    layout = identify(index, read_config(root, "transformer"), read_config(root, "vae"), repr(str(root)))
    sampler = scheduling.from_folder(root, PIPELINE)  # WanPipeline: set_timesteps(steps), its own spacing
    root, parts = load_components(root, WanTransformer3DModel, AutoencoderKLWan, UMT5EncoderModel, dtype)
    if layout.experts:
        parts["transformer_2"] = load_part(
            WanTransformer3DModel.from_pretrained, root, "transformer_2", torch_dtype=dtype
        )
    return WanBackbone(
        str(root),
        **parts,
        layout=layout,
        boundary=index.get("boundary_ratio"),
        pipeline_sampler=sampler,
        device=device,
        cache_dir=default_cache_dir() if cache_dir is None else cache_dir,
        gradient_checkpointing=gradient_checkpointing,
        fp8_base=fp8_base,
        blocks_to_swap=blocks_to_swap,
    )


# --------------------------------------------------------------------------------------------
# Tiny random instances, for tests and smoke runs
# --------------------------------------------------------------------------------------------

TINY_BOUNDARY = 0.875
# name, geometry, sampling of each layout's tiny instance (clips of 2 latent frames of 4x4)
TINY = {
    WAN_2_1.name: ("wan-tiny", Geometry(5, 32, 32, 16.0), SamplingDefaults(steps=4, guidance=5.0, shift=3.0)),
    WAN_2_2_A14B.name: ("wan2.2-a14b-tiny", Geometry(5, 32, 32, 16.0), SamplingDefaults(4, 4.0, 12.0)),
    WAN_2_2_TI2V_5B.name: ("wan2.2-ti2v-5b-tiny", Geometry(5, 64, 64, 24.0), SamplingDefaults(4, 5.0, 5.0)),
}


def tiny_scheduler(layout: Layout = WAN_2_1) -> dict:
    """The scheduler config of a layout's tiny instance: Wan's UniPC with flow sigmas (the kind a Wan
    folder's scheduler/ holds) at the layout's shift, so the tiny T2V-A14B switches expert within 4 steps."""
    return dict(
        _class_name="UniPCMultistepScheduler",
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        num_train_timesteps=1000,
        flow_shift=layout.sampling.shift,
    )


def tiny_components(seed: int = 0, words: list[str] | None = None, layout: Layout = WAN_2_1) -> dict:
    """Seeded random tiny components of a layout: transformer, vae, text_encoder, tokenizer, and
    transformer_2 (the low-noise expert, its own random draw) for T2V-A14B; WanPipeline's names."""
    require_diffusers()
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    c = layout.latent_channels
    transformer = dict(WAN_TINY, in_channels=c, out_channels=c)
    vae = WAN_TINY_VAE_48 if c == 48 else WAN_TINY_VAE
    parts = build_tiny(
        seed,
        words,
        lambda: WanTransformer3DModel(**transformer),
        lambda: AutoencoderKLWan(**vae),
        lambda vocab: UMT5EncoderModel(UMT5Config(vocab_size=vocab, **WAN_TINY_TEXT)),
    )
    if layout.experts:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1_000_003)  # not the high-noise expert's draw
            parts["transformer_2"] = WanTransformer3DModel(**transformer)
    return parts


def tiny(seed: int = 0, layout: Layout = WAN_2_1, **options) -> WanBackbone:
    """A tiny random Wan backbone of a layout: 5 frames at 32x32 (TI2V-5B: 64x64), 2 x 4 x 4 latents
    of 16 (48) channels, 8 tokens; T2V-A14B's experts switch at t = 0.875. It samples with
    `tiny_scheduler(layout)` at its own few steps."""
    name, geometry, sampling = TINY[layout.name]
    sampler = scheduling.PipelineSampler(PIPELINE, tiny_scheduler(layout), sampling.steps, sampling.guidance)
    return WanBackbone(
        name,
        **tiny_components(seed, layout=layout),
        geometry=geometry,
        sampling=sampling,
        text_len=16,
        layout=layout,
        boundary=TINY_BOUNDARY if layout.experts else None,
        pipeline_sampler=sampler,
        **options,
    )
