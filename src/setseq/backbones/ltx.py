"""LTX-Video (diffusers' LTXVideoTransformer3DModel, AutoencoderKLLTXVideo, T5) as a backbone.

video (B, F, C, H, W) --VAE--> latents (B, 128, (F-1)/8+1, H/32, W/32), normalised per channel
latents --pack--> tokens (B, F' h w, 128)         the transformer works on a flat token list
prompt --T5--> (B, 128, 4096) and a key mask       the encoder sees the padding, as in the pipeline
v = transformer(x_t, timestep = 1000 t, text, mask) (the model's own flow convention is setseq's)

Sampling: a folder's own scheduler (FlowMatchEulerDiscreteScheduler with dynamic shifting and a terminal
stretch, `scheduling`), its timesteps set as LTXPipeline sets them (`set_timesteps`), at LTXPipeline's
defaults; setseq's Euler sampler (--sampler euler) takes the same shift, exp(mu), without the stretch.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from setseq.backbones import scheduling
from setseq.backbones.base import Geometry, SamplingDefaults
from setseq.backbones.diffusers_common import (
    DiffusersBackbone,
    build_tiny,
    default_cache_dir,
    load_components,
    read_config,
    read_model_index,
    require_diffusers,
)
from setseq.errors import SetseqError

# A tiny random instance for tests; its VAE keeps the real 8x temporal and 32x spatial compression.
LTX_TINY = dict(
    in_channels=8,
    out_channels=8,
    patch_size=1,
    patch_size_t=1,
    num_attention_heads=2,
    attention_head_dim=8,
    cross_attention_dim=16,
    num_layers=2,
    caption_channels=32,
)
LTX_TINY_VAE = dict(
    latent_channels=8,
    block_out_channels=(8, 8, 8, 8),
    decoder_block_out_channels=(8, 8, 8, 8),
    layers_per_block=(1, 1, 1, 1, 1),
    decoder_layers_per_block=(1, 1, 1, 1, 1),
    spatio_temporal_scaling=(True, True, True, False),
    decoder_spatio_temporal_scaling=(True, True, True, False),
    decoder_inject_noise=(False,) * 5,
    upsample_residual=(False,) * 4,
    upsample_factor=(1,) * 4,
    patch_size=4,
    patch_size_t=1,
)
LTX_TINY_TEXT = dict(d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4, relative_attention_num_buckets=8)

GEOMETRY = Geometry(frames=161, height=512, width=704, fps=25.0)  # the diffusers pipeline's defaults
TEXT_LEN = 128
PIPELINE = "LTXPipeline"  # the pipeline class an LTX-Video folder's model_index.json names


# LTX-Video 0.9's scheduler, the config its folders hold (diffusers' conversion script writes it); the
# tiny instance samples with it.
SCHEDULER = dict(
    _class_name="FlowMatchEulerDiscreteScheduler",
    num_train_timesteps=1000,
    shift=1.0,
    use_dynamic_shifting=True,
    base_shift=0.95,
    max_shift=2.05,
    base_image_seq_len=1024,
    max_image_seq_len=4096,
    shift_terminal=0.1,
)
# The dynamic-shift settings LTXPipeline falls back on for a scheduler config without them.
SHIFT_DEFAULTS = dict(base_image_seq_len=256, max_image_seq_len=4096, base_shift=0.5, max_shift=1.15)


def shift_mu(tokens: int, scheduler: dict | None = None, defaults: dict = SHIFT_DEFAULTS) -> float:
    """mu, the log of the timestep shift LTX-Video (and LTX-2) samples with at `tokens` latent tokens:
    linear in the token count between the scheduler's (base_image_seq_len, base_shift) and
    (max_image_seq_len, max_shift), with the pipeline's `defaults` for settings the config lacks
    (diffusers' calculate_shift)."""
    from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift

    s = {**defaults, **(scheduler or {})}
    return calculate_shift(tokens, s["base_image_seq_len"], s["max_image_seq_len"], s["base_shift"], s["max_shift"])


def dynamic_shift(tokens: int, scheduler: dict | None = None, defaults: dict = SHIFT_DEFAULTS) -> float:
    """The Euler sampler's shift at `tokens` latent tokens: exp(mu) (`shift_mu`), the shift of
    `flow.shift_time`. The scheduler's terminal stretch is the folder's scheduler's alone."""
    return math.exp(shift_mu(tokens, scheduler, defaults))


def set_timesteps(
    scheduler, steps: int, latent_shape: tuple[int, ...], device: torch.device, defaults: dict = SHIFT_DEFAULTS
) -> None:
    """LTXPipeline's timesteps: sigmas evenly spaced from 1 to 1 / steps, given to the scheduler with mu
    of the latent token count F' h w (the scheduler shifts them by mu and stretches them to its
    terminal); `defaults`: the pipeline's fallbacks for shift settings the config lacks (`shift_mu`).

    Raises:
        SetseqError: for one step with a terminal stretch, which divides by zero in the scheduler
            (diffusers' `stretch_shift_to_terminal`) and would sample NaN.
    """
    if steps < 2 and scheduler.config.get("shift_terminal"):
        raise SetseqError(
            "this model's scheduler stretches its schedule to a terminal noise level and needs at least 2 "
            "steps; use --steps 2 or more, or --sampler euler."
        )
    sigmas = np.linspace(1.0, 1.0 / steps, steps)
    mu = shift_mu(math.prod(latent_shape[1:]), scheduler.config, defaults)
    scheduler.set_timesteps(sigmas=sigmas, device=device, mu=mu)


def check_layout(transformer: dict, model: str, where: str = "the model") -> None:
    """Refuse an LTX-Video or LTX-2 transformer (its config, read before any weight is loaded) whose
    patches are not 1 x 1 x 1, the only layout setseq packs latents for.

    Raises:
        SetseqError: naming the patch size found.
    """
    p, pt = transformer.get("patch_size", 1), transformer.get("patch_size_t", 1)
    if (p, pt) != (1, 1):
        raise SetseqError(
            f"{where} holds a {model} layout that setseq does not know (patches of {pt}x{p}x{p} latents); "
            f"setseq knows {model} transformers with patches of 1x1x1."
        )


class LTXBackbone(DiffusersBackbone):
    """LTX-Video text-to-video. Build with `load` (a local folder) or from components (tests)."""

    model = "LTX-Video"
    SAMPLING = (50, 3.0)  # the pipeline's default steps and guidance
    SHIFT_DEFAULTS = SHIFT_DEFAULTS
    lora_targets = [
        "transformer_blocks.*.attn[12].to_[qkv]",
        "transformer_blocks.*.attn[12].to_out.0",
        "transformer_blocks.*.ff.net.0.proj",
        "transformer_blocks.*.ff.net.2",
    ]

    def __init__(
        self,
        name,
        transformer,
        vae,
        text_encoder,
        tokenizer,
        geometry: Geometry = GEOMETRY,
        sampling: SamplingDefaults | None = None,
        text_len: int = TEXT_LEN,
        scheduler: dict | None = None,
        **options,
    ):
        check_layout(dict(transformer.config), self.model)
        self.latent_channels = vae.config.latent_channels
        self.vae_stride = vae.spatial_compression_ratio
        self.frame_step = vae.temporal_compression_ratio
        self.size_step = vae.spatial_compression_ratio
        if sampling is None:
            tokens = math.prod(self.latent_shape(geometry)[1:])
            steps, guidance = self.SAMPLING
            sampling = SamplingDefaults(steps, guidance, shift=dynamic_shift(tokens, scheduler, self.SHIFT_DEFAULTS))
        super().__init__(
            name, transformer, vae, text_encoder, tokenizer, geometry, sampling, text_len=text_len, **options
        )

    # the pipeline's normalisation: (z - mean) * scaling_factor / std per latent channel
    def _stats(self, z):
        mean = self.vae.latents_mean.view(-1, 1, 1, 1).to(z.device, z.dtype)  # (C, 1, 1, 1)
        std = self.vae.latents_std.view(-1, 1, 1, 1).to(z.device, z.dtype)
        return mean, std, self.vae.config.scaling_factor

    def _normalise(self, z):
        mean, std, k = self._stats(z)
        return (z - mean) * k / std

    def _denormalise(self, z):
        mean, std, k = self._stats(z)
        return z * std / k + mean

    def _vae_decode(self, z):
        # a timestep-conditioned decoder (LTX 0.9.1+) decodes at the pipeline's default timestep, 0
        temb = (
            torch.zeros(z.shape[0], device=z.device, dtype=z.dtype) if self.vae.config.timestep_conditioning else None
        )
        return self.vae.decode(z, temb, return_dict=False)[0]

    def _tokenizer_options(self):
        return {"padding": "max_length"}  # the encoder runs unmasked, so the padding length matters

    def _encode_ids(self, ids, mask):
        return self.text_encoder(ids).last_hidden_state  # (B, T, D); no mask, as the pipeline does

    def _forward(self, x, timestep, emb, mask):
        B, C, F, h, w = x.shape
        tokens = x.permute(0, 2, 3, 4, 1).reshape(B, F * h * w, C)  # (B, T, C), frame-major
        s, r = self.vae_stride, self.frame_step
        v = self.transformer(
            hidden_states=tokens,
            encoder_hidden_states=emb,
            timestep=timestep,
            encoder_attention_mask=mask.to(emb.dtype),
            num_frames=F,
            height=h,
            width=w,
            rope_interpolation_scale=(r / self.geometry.fps, s, s),
            return_dict=False,
        )[0]
        return v.reshape(B, F, h, w, C).permute(0, 4, 1, 2, 3)  # (B, C, F, h, w)


def load(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    device: str | None = None,
    cache_dir: str | Path | None = None,
    gradient_checkpointing: bool = False,
    fp8_base: bool = False,
    blocks_to_swap: int = 0,
    offload_activations: bool = False,
) -> LTXBackbone:
    """LTX-Video from a local Diffusers-format folder (e.g. LTX-Video 0.9.x); never downloads.

    Args:
        path: folder with model_index.json and transformer/, vae/, text_encoder/, tokenizer/.
        dtype: dtype of the transformer and text encoder (torch.bfloat16 halves memory); the VAE
            stays in float32.
        device: where to run (default: the CPU).
        cache_dir: where latents and text embeddings are cached (default: $SETSEQ_CACHE/encodings).
        gradient_checkpointing: recompute block activations in the backward pass.
        fp8_base: store the transformer blocks' linear weights in float8 x a per-tensor scale.
        blocks_to_swap: keep this many transformer blocks in CPU memory, copied to `device` as they run.
        offload_activations: keep each checkpointed block's input in CPU memory (`memory.offloaded_checkpoint`).

    Raises:
        SetseqError: for a part that is missing or cannot be read, or a scheduler diffusers does not have.
    """
    require_diffusers()
    from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel
    from transformers import T5EncoderModel

    root = Path(path).resolve()
    read_model_index(root)
    check_layout(read_config(root, "transformer"), LTXBackbone.model, repr(str(root)))
    sampler = scheduling.from_folder(root, PIPELINE, set_timesteps)
    root, parts = load_components(root, LTXVideoTransformer3DModel, AutoencoderKLLTXVideo, T5EncoderModel, dtype)
    return LTXBackbone(
        str(root),
        **parts,
        scheduler=sampler.config if sampler else None,
        pipeline_sampler=sampler,
        device=device,
        cache_dir=default_cache_dir() if cache_dir is None else cache_dir,
        gradient_checkpointing=gradient_checkpointing,
        fp8_base=fp8_base,
        blocks_to_swap=blocks_to_swap,
        offload_activations=offload_activations,
    )


def tiny_components(seed: int = 0, words: list[str] | None = None) -> dict:
    """Seeded random tiny LTX-Video components (transformer, vae, text_encoder, tokenizer)."""
    require_diffusers()
    from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    return build_tiny(
        seed,
        words,
        lambda: LTXVideoTransformer3DModel(**LTX_TINY),
        lambda: AutoencoderKLLTXVideo(**LTX_TINY_VAE),
        lambda vocab: T5EncoderModel(T5Config(vocab_size=vocab, **LTX_TINY_TEXT)),
    )


def tiny(seed: int = 0, **options) -> LTXBackbone:
    """A tiny random LTX-Video backbone: 9 frames at 64x64 (2 x 2 x 2 latents, 8 tokens), sampling with
    LTX-Video's scheduler (SCHEDULER) at 4 steps."""
    return LTXBackbone(
        "ltx-tiny",
        **tiny_components(seed),
        geometry=Geometry(9, 64, 64, 25.0),
        sampling=SamplingDefaults(steps=4, guidance=3.0, shift=1.0),
        text_len=16,
        pipeline_sampler=scheduling.PipelineSampler(PIPELINE, SCHEDULER, 4, 3.0, set_timesteps),
        **options,
    )
