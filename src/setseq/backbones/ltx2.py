"""LTX-2 (diffusers' LTX2VideoTransformer3DModel, AutoencoderKLLTX2Video, Gemma 3 + LTX2TextConnectors)
as a text-to-video backbone.

video (B, F, C, H, W) --VAE--> latents (B, 128, (F-1)/8+1, H/32, W/32), normalised per channel
latents --pack--> tokens (B, F' h w, 128)            the transformer works on a flat token list
prompt --Gemma 3--> every layer's hidden states, left-padded to 1024 tokens, (B, T, D (L+1))
       --connectors--> video text embeddings (B, T, D) and a key mask (padding becomes registers)
v = transformer(x_t, timestep = 1000 t, text, fps)  (the model's own flow convention is setseq's)

LTX-2 is an audio-video model: every block holds a video stream, an audio stream and cross-attention
between them. setseq models video alone. The transformer runs with its modalities isolated
(diffusers' `isolate_modalities`: no audio-to-video or video-to-audio attention), so the video
prediction does not read the audio stream at all; the audio stream is fed one silent token and its
output is dropped. Only the video stream's linears are adapted; the audio stream keeps the base's
weights. LTX2Pipeline samples audio and video jointly, so setseq's samples equal the pipeline's only
where the pipeline's guidance reduces to the isolated video prediction (video and audio
guidance 1, STG 0, modality scale 0, no rescale).

Sampling: the folder's own scheduler (`scheduling`), its timesteps set as LTX2Pipeline sets them
(LTXPipeline's sigmas and token-count shift, with LTX2Pipeline's fallbacks: `set_timesteps`), at
LTX2Pipeline's 30 steps and guidance 3; the guidance is classifier-free guidance of the isolated video
prediction alone (the pipeline's spatio-temporal, modality and audio guidance and its rescale have no
counterpart in a video-only model).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from setseq.backbones import ltx, scheduling
from setseq.backbones.base import Geometry, SamplingDefaults, Text
from setseq.backbones.diffusers_common import (
    build_tiny,
    default_cache_dir,
    load_components,
    load_part,
    read_config,
    read_model_index,
    require_diffusers,
)

# A tiny random instance for tests; its VAE keeps the real 8x temporal and 32x spatial compression.
LTX2_TINY = dict(
    in_channels=8,
    out_channels=8,
    num_attention_heads=2,
    attention_head_dim=8,
    cross_attention_dim=16,
    audio_in_channels=4,
    audio_out_channels=4,
    audio_num_attention_heads=2,
    audio_attention_head_dim=4,
    audio_cross_attention_dim=8,
    num_layers=2,
    caption_channels=16,
)
LTX2_TINY_VAE = dict(
    latent_channels=8,
    block_out_channels=(8, 8, 8, 8),
    decoder_block_out_channels=(8, 8, 8),
    layers_per_block=(1, 1, 1, 1, 1),
    decoder_layers_per_block=(1, 1, 1, 1),
    upsample_residual=(False, False, False),
    upsample_factor=(1, 1, 1),
    scaling_factor=0.8,  # made up, like the statistics below, so that a test sees the normalisation
    spatial_compression_ratio=32,  # as the real config states them (the class's guess from the blocks differs)
    temporal_compression_ratio=8,
)
LTX2_TINY_TEXT_LAYERS = 2
LTX2_TINY_CONNECTORS = dict(
    caption_channels=16,
    text_proj_in_factor=LTX2_TINY_TEXT_LAYERS + 1,  # the embedding layer's output and each layer's
    video_connector_num_attention_heads=2,
    video_connector_attention_head_dim=8,
    video_connector_num_layers=1,
    video_connector_num_learnable_registers=8,
    audio_connector_num_attention_heads=2,
    audio_connector_attention_head_dim=8,
    audio_connector_num_layers=1,
    audio_connector_num_learnable_registers=8,
    connector_rope_base_seq_len=32,
)

GEOMETRY = Geometry(frames=121, height=512, width=768, fps=24.0)  # LTX2Pipeline's defaults
TEXT_LEN = 1024  # the pipeline's max_sequence_length
PIPELINE = "LTX2Pipeline"  # the pipeline class an LTX-2 folder's model_index.json names

# LTX-2's scheduler as the tiny instance samples with it: flow-match Euler with a shift that grows with
# the token count from (1024, 0.95) to (4096, 2.05) and sigmas stretched to end at 0.1 (LTX-2's own
# scheduler settings, the same numbers as LTX-Video 0.9's; a real LTX-2 folder's scheduler_config.json
# could not be read here).
SCHEDULER = dict(ltx.SCHEDULER)
# LTX2Pipeline's dynamic-shift fallbacks for a scheduler config without them (its calculate_shift arguments)
SHIFT_DEFAULTS = dict(base_image_seq_len=1024, max_image_seq_len=4096, base_shift=0.95, max_shift=2.05)

# diffusers module names of the adapted layers: the video stream's self- and cross-attention and MLP
# (the audio stream's are audio_attn1, audio_attn2, audio_ff, audio_to_video_attn, video_to_audio_attn)
TARGETS = [
    "transformer_blocks.*.attn[12].to_[qkv]",
    "transformer_blocks.*.attn[12].to_out.0",
    "transformer_blocks.*.ff.net.0.proj",
    "transformer_blocks.*.ff.net.2",
]


def set_timesteps(scheduler, steps: int, latent_shape: tuple[int, ...], device: torch.device) -> None:
    """LTX2Pipeline's timesteps: LTXPipeline's (`ltx.set_timesteps`) with LTX2Pipeline's shift fallbacks."""
    ltx.set_timesteps(scheduler, steps, latent_shape, device, SHIFT_DEFAULTS)


class LTX2Backbone(ltx.LTXBackbone):
    """LTX-2 text-to-video, the video stream alone. Build with `load` (a local folder) or from
    components (tests); `connectors` is the pipeline's LTX2TextConnectors."""

    model = "LTX-2"
    lora_targets = TARGETS
    SAMPLING = (30, 3.0)  # LTX2Pipeline's default steps and guidance
    SHIFT_DEFAULTS = SHIFT_DEFAULTS

    def __init__(
        self,
        name,
        transformer,
        vae,
        text_encoder,
        tokenizer,
        connectors: nn.Module,
        geometry: Geometry = GEOMETRY,
        sampling: SamplingDefaults | None = None,
        text_len: int = TEXT_LEN,
        scheduler: dict | None = None,
        **options,
    ):
        self.connectors = connectors
        tokenizer.padding_side = "left"  # Gemma's, as the pipeline sets it; the connectors read it
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        super().__init__(
            name,
            transformer,
            vae,
            text_encoder,
            tokenizer,
            geometry,
            sampling,
            text_len,
            scheduler,
            extras={"connectors": connectors},
            **options,
        )

    def _encode_prompts(self, prompts: list[str]) -> Text:
        """The pipeline's prompt encoding: Gemma's hidden states of every layer, stacked per token
        and flattened (B, T, D (L+1)), through the connectors -> video text embeddings (B, T, D')."""
        batch = self.tokenizer(
            prompts,
            padding="max_length",  # the connectors replace padding by registers: its length matters
            max_length=self.text_len,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        )
        ids, mask = batch.input_ids.to(self.device), batch.attention_mask.to(self.device)
        out = self.text_encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        layers = torch.stack(out.hidden_states, dim=-1)  # (B, T, D, L + 1)
        emb, _, emb_mask = self.connectors(layers.flatten(2, 3), mask, padding_side=self.tokenizer.padding_side)
        return Text(emb.float(), emb_mask.bool())

    def _forward(self, x, timestep, emb, mask):
        B, C, F, h, w = x.shape
        tokens = x.permute(0, 2, 3, 4, 1).reshape(B, F * h * w, C)  # (B, T, C), frame-major
        cfg = self.transformer.config
        # one silent audio token: with the modalities isolated the video prediction never reads it
        audio = tokens.new_zeros(B, 1, cfg.audio_in_channels)  # (B, 1, C_audio)
        audio_text = emb.new_zeros(
            B, 1, cfg.caption_channels if cfg.use_prompt_embeddings else cfg.audio_cross_attention_dim
        )
        v, _ = self.transformer(
            hidden_states=tokens,
            audio_hidden_states=audio,
            encoder_hidden_states=emb,
            audio_encoder_hidden_states=audio_text,
            timestep=timestep,
            sigma=timestep,  # as the pipeline passes it (read by LTX-2.3's prompt modulation)
            encoder_attention_mask=mask.to(emb.dtype),
            num_frames=F,
            height=h,
            width=w,
            fps=self.geometry.fps,
            audio_num_frames=1,
            isolate_modalities=True,
            use_cross_timestep=True,
            return_dict=False,
        )
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
) -> LTX2Backbone:
    """LTX-2 from a local Diffusers-format folder (e.g. LTX-2's diffusers export); never downloads.
    The audio VAE and vocoder are not loaded: setseq models video alone.

    Args:
        path: folder with model_index.json and transformer/, vae/, text_encoder/, tokenizer/,
            connectors/.
        dtype: dtype of the transformer, text encoder and connectors (torch.bfloat16 halves memory);
            the VAE stays in float32.
        device: where to run (default: the CPU).
        cache_dir: where latents and text embeddings are cached (default: $SETSEQ_CACHE/encodings).
        gradient_checkpointing: recompute block activations in the backward pass.
        fp8_base: store the transformer blocks' linear weights in float8 x a per-tensor scale.
        blocks_to_swap: keep this many transformer blocks in CPU memory, copied to `device` as they run.
        offload_activations: keep each checkpointed block's input in CPU memory (`memory.offloaded_checkpoint`).

    Raises:
        SetseqError: for a transformer layout setseq does not know (`ltx.check_layout`), naming a
            part that is missing or cannot be read, or for a scheduler diffusers does not have.
    """
    require_diffusers()
    from diffusers import AutoencoderKLLTX2Video, LTX2VideoTransformer3DModel
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from transformers import Gemma3ForConditionalGeneration

    root = Path(path).resolve()
    read_model_index(root)
    ltx.check_layout(read_config(root, "transformer"), LTX2Backbone.model, repr(str(root)))
    sampler = scheduling.from_folder(root, PIPELINE, set_timesteps)
    root, parts = load_components(
        root, LTX2VideoTransformer3DModel, AutoencoderKLLTX2Video, Gemma3ForConditionalGeneration, dtype
    )
    parts["connectors"] = load_part(LTX2TextConnectors.from_pretrained, root, "connectors", torch_dtype=dtype)
    return LTX2Backbone(
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


def _tiny_gemma(vocab: int) -> nn.Module:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    text = Gemma3TextConfig(
        vocab_size=vocab,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=LTX2_TINY_TEXT_LAYERS,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        sliding_window=8,
    )
    vision = SiglipVisionConfig(
        hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14
    )
    return Gemma3ForConditionalGeneration(Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4))


def tiny_components(seed: int = 0, words: list[str] | None = None) -> dict:
    """Seeded random tiny LTX-2 components (transformer, vae, text_encoder, tokenizer, connectors),
    LTX2Pipeline's names."""
    require_diffusers()
    from diffusers import AutoencoderKLLTX2Video, LTX2VideoTransformer3DModel
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    parts = build_tiny(
        seed,
        words,
        lambda: LTX2VideoTransformer3DModel(**LTX2_TINY),
        lambda: AutoencoderKLLTX2Video(**LTX2_TINY_VAE),
        _tiny_gemma,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        parts["connectors"] = LTX2TextConnectors(**LTX2_TINY_CONNECTORS)
    c = parts["vae"].config.latent_channels
    parts["vae"].latents_mean.copy_(torch.tensor([(i % 5 - 2) / 10 for i in range(c)]))  # made-up statistics
    parts["vae"].latents_std.copy_(torch.tensor([1.0 + (i % 3) / 4 for i in range(c)]))
    return parts


def tiny(seed: int = 0, **options) -> LTX2Backbone:
    """A tiny random LTX-2 backbone: 9 frames at 64x64 (2 x 2 x 2 latents, 8 tokens), sampling with
    LTX-2's scheduler (SCHEDULER) at 4 steps."""
    return LTX2Backbone(
        "ltx2-tiny",
        **tiny_components(seed),
        geometry=Geometry(9, 64, 64, 24.0),
        sampling=SamplingDefaults(steps=4, guidance=3.0, shift=1.0),
        text_len=16,
        pipeline_sampler=scheduling.PipelineSampler(PIPELINE, SCHEDULER, 4, 3.0, set_timesteps),
        **options,
    )
