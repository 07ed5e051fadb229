"""Wan 2.1 text-to-video (diffusers' WanTransformer3DModel, AutoencoderKLWan, UMT5) as a backbone.

    video (B, F, C, H, W) --VAE--> latents (B, 16, (F-1)/4+1, H/8, W/8), normalised per channel
    prompt --UMT5--> (B, T, 4096), zero past the prompt's tokens and padded with zeros to 512
    v = transformer(x_t, timestep = 1000 t, text)       (the model's own flow convention is setseq's)

Wan's cross-attention takes no mask: the pipeline zeroes every embedding past a prompt's tokens,
so a masked token (setseq's text-token masking) is zeroed the same way.
"""

from __future__ import annotations

from pathlib import Path

import torch

from setseq.backbones.base import Geometry, SamplingDefaults
from setseq.backbones.diffusers_common import (
    DiffusersBackbone,
    build_tiny,
    default_cache_dir,
    load_components,
    require_diffusers,
)

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
WAN_TINY_TEXT = dict(d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4, relative_attention_num_buckets=8)

GEOMETRY = Geometry(frames=81, height=480, width=832, fps=16.0)  # Wan 2.1's 480p clips
SAMPLING = SamplingDefaults(steps=50, guidance=5.0, shift=3.0)  # the diffusers pipeline's 480p settings
TEXT_LEN = 512
PIPELINE = "WanPipeline"  # the pipeline class a Wan folder's model_index.json names


class WanBackbone(DiffusersBackbone):
    """Wan 2.1 text-to-video. Build with `load` (a local folder) or from components (tests)."""

    model = "Wan"
    frame_step = 4
    max_aspect = 832 / 480  # Wan 2.1's 480p shapes, 832x480 and 480x832: a wider clip is cropped to them
    lora_targets = [
        "blocks.*.attn[12].to_[qkv]",
        "blocks.*.attn[12].to_out.0",
        "blocks.*.ffn.net.0.proj",
        "blocks.*.ffn.net.2",
    ]

    def __init__(
        self,
        name,
        transformer,
        vae,
        text_encoder,
        tokenizer,
        geometry: Geometry = GEOMETRY,
        sampling: SamplingDefaults = SAMPLING,
        text_len: int = TEXT_LEN,
        **options,
    ):
        cfg = vae.config
        self.latent_channels = cfg.z_dim
        self.vae_stride = cfg.scale_factor_spatial
        self.frame_step = cfg.scale_factor_temporal
        self.size_step = cfg.scale_factor_spatial * transformer.config.patch_size[1]
        super().__init__(
            name, transformer, vae, text_encoder, tokenizer, geometry, sampling, text_len=text_len, **options
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
        return self.transformer(hidden_states=x, timestep=timestep, encoder_hidden_states=emb, return_dict=False)[0]


def load(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    device: str | None = None,
    cache_dir: str | Path | None = None,
    gradient_checkpointing: bool = False,
) -> WanBackbone:
    """Wan from a local Diffusers-format folder (e.g. Wan2.1-T2V-1.3B-Diffusers); never downloads.

    Args:
        path: folder with model_index.json and transformer/, vae/, text_encoder/, tokenizer/.
        dtype: dtype of the transformer and text encoder (torch.bfloat16 halves memory); the VAE
            stays in float32, and diffusers keeps Wan's norms and embeddings in float32.
        device: where to run (default: the CPU).
        cache_dir: where latents and text embeddings are cached (default: $SETSEQ_CACHE/encodings).
        gradient_checkpointing: recompute block activations in the backward pass.
    """
    require_diffusers()
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5EncoderModel

    root, parts = load_components(path, WanTransformer3DModel, AutoencoderKLWan, UMT5EncoderModel, dtype)
    return WanBackbone(
        str(root),
        **parts,
        device=device,
        cache_dir=default_cache_dir() if cache_dir is None else cache_dir,
        gradient_checkpointing=gradient_checkpointing,
    )


def tiny_components(seed: int = 0, words: list[str] | None = None) -> dict:
    """Seeded random tiny Wan components (transformer, vae, text_encoder, tokenizer)."""
    require_diffusers()
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    return build_tiny(
        seed,
        words,
        lambda: WanTransformer3DModel(**WAN_TINY),
        lambda: AutoencoderKLWan(**WAN_TINY_VAE),
        lambda vocab: UMT5EncoderModel(UMT5Config(vocab_size=vocab, **WAN_TINY_TEXT)),
    )


def tiny(seed: int = 0, **options) -> WanBackbone:
    """A tiny random Wan backbone: 5 frames at 32x32 (2 x 4 x 4 latents, 8 tokens)."""
    return WanBackbone(
        "wan-tiny",
        **tiny_components(seed),
        geometry=Geometry(5, 32, 32, 16.0),
        sampling=SamplingDefaults(steps=4, guidance=5.0, shift=3.0),
        text_len=16,
        **options,
    )
