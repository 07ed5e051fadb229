"""HunyuanVideo 1.5 (diffusers' HunyuanVideo15Transformer3DModel, AutoencoderKLHunyuanVideo15,
Qwen2.5-VL) as a text-to-video backbone.

video (B, F, C, H, W) --VAE--> latents (B, 32, (F-1)/4+1, H/16, W/16), times the VAE's scaling factor
prompt --chat template--> Qwen2.5-VL --> the third-last layer's hidden states, the template's first
       108 tokens cropped: (B, 1000, 3584) and a key mask
v = transformer([x_t, 0, 0], timestep = 1000 t, text)  (the model's own flow convention is setseq's)

In text-to-video the pipeline feeds the transformer three conditions that setseq feeds the same way:
the image-to-video channels (a zero conditioning latent and a zero mask, concatenated to x_t: 2C + 1
input channels), zero SigLIP image tokens (which the transformer masks out) and the ByT5 glyph
stream, which is zeros and masked out for every prompt without quoted text. setseq does not run the
ByT5 encoder: a prompt with quoted text (the pipeline's cue to render that text) is refused.

Sampling: the folder's own scheduler (`scheduling`; the 480p folder's is flow-match Euler at shift 5),
its timesteps set as HunyuanVideo15Pipeline sets them (`set_timesteps`), at the pipeline's 50 steps and
the guidance its folder's guider/ config holds (the pipeline takes no guidance argument).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import torch

from setseq.backbones import scheduling
from setseq.backbones.base import Geometry, SamplingDefaults, Text
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

# A tiny random instance for tests; its VAE keeps the real 4x temporal and 16x spatial compression.
HY15_TINY = dict(
    in_channels=2 * 8 + 1,  # x_t, the conditioning latent and its mask
    out_channels=8,
    num_attention_heads=2,
    attention_head_dim=8,
    num_layers=2,
    num_refiner_layers=1,
    mlp_ratio=2.0,
    text_embed_dim=16,
    text_embed_2_dim=8,
    image_embed_dim=8,
    rope_axes_dim=(2, 2, 4),
)
HY15_TINY_VAE = dict(latent_channels=8, block_out_channels=(16, 16, 16, 16, 16), layers_per_block=1)
HY15_TINY_TEXT = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=3,  # the pipeline reads the third-last hidden state
    num_attention_heads=2,
    num_key_value_heads=1,
    rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]},
    bos_token_id=None,
    eos_token_id=1,  # the word tokenizer's </s>
)
# The tiny tokenizer's chat template: each message's text after its role, as Qwen's template does.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}assistant{% endif %}"
)
TINY_SYSTEM = "describe the video ."

GEOMETRY = Geometry(frames=121, height=480, width=848, fps=24.0)  # the 480p pipeline's 16:9 default
TEXT_LEN = 1000  # the pipeline's tokenizer_max_length (after the template's crop)
CROP_START = 108  # the pipeline's prompt_template_encode_start_idx: the system message's tokens
IMAGE_TOKENS = 729  # the pipeline's vision_num_semantic_tokens: zero SigLIP tokens in text-to-video
BYT5_LEN = 256  # the pipeline's tokenizer_2_max_length
PIPELINE = "HunyuanVideo15Pipeline"  # the pipeline class a HunyuanVideo 1.5 folder's model_index.json names
# The scheduler the tiny instance samples with: flow-match Euler at the 480p folder's shift, 5.
SCHEDULER = dict(_class_name="FlowMatchEulerDiscreteScheduler", num_train_timesteps=1000, shift=5.0)

# diffusers module names of the adapted layers: the video stream of each double-stream block (the
# text stream's are attn.add_[qkv]_proj, attn.to_add_out, ff_context)
TARGETS = [
    "transformer_blocks.*.attn.to_[qkv]",
    "transformer_blocks.*.attn.to_out.0",
    "transformer_blocks.*.ff.net.0.proj",
    "transformer_blocks.*.ff.net.2",
]


def check_layout(transformer: dict, vae: dict, where: str = "the model") -> None:
    """Refuse a transformer that is not HunyuanVideo 1.5's text-to-video layout, from its config and
    the VAE's (read before any weight is loaded): x_t, the conditioning latent and its mask in,
    2C + 1 channels for a C-channel VAE, and C out.

    Raises:
        SetseqError: naming the channel counts found.
    """
    c = vae.get("latent_channels", 32)
    found = (transformer.get("in_channels"), transformer.get("out_channels"))
    if found != (2 * c + 1, c):
        raise SetseqError(
            f"{where} holds a HunyuanVideo 1.5 layout that setseq does not know (a transformer of {found[0]} input "
            f"and {found[1]} output channels, a VAE of {c} latent channels); setseq knows the text-to-video transformer of "
            f"2C + 1 = {2 * c + 1} input and C = {c} output channels."
        )


def set_timesteps(scheduler, steps: int, latent_shape: tuple[int, ...], device: torch.device) -> None:
    """HunyuanVideo15Pipeline's timesteps: sigmas evenly spaced from 1 to 1 / steps (the last of steps + 1
    points down to 0 dropped), which the scheduler shifts by its own shift."""
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1], device=device)


class HunyuanVideo15Backbone(DiffusersBackbone):
    """HunyuanVideo 1.5 text-to-video. Build with `load` (a local folder) or from components (tests)."""

    model = "HunyuanVideo 1.5"
    lora_targets = TARGETS

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
        *,
        system_message: str | None = None,
        crop_start: int = CROP_START,
        **options,
    ):
        """
        Args:
            name, transformer, vae, text_encoder, tokenizer, text_len, options: as `DiffusersBackbone`.
            geometry, sampling: default clip geometry and sampling settings (default: the 480p
                pipeline's 121 frames of 480 x 848, 50 steps at guidance 6 and shift 5).
            system_message, crop_start: the chat template's system message and its token count,
                cropped from the embeddings (default: the pipeline's).
        """
        from diffusers import HunyuanVideo15Pipeline

        cfg = transformer.config
        check_layout(dict(cfg), dict(vae.config))
        self.latent_channels = vae.config.latent_channels
        self.vae_stride = vae.config.spatial_compression_ratio
        self.frame_step = vae.config.temporal_compression_ratio
        self.size_step = self.vae_stride * cfg.patch_size
        # the pipeline's own system message, the default of its prompt-encoding function
        default = inspect.signature(HunyuanVideo15Pipeline._get_mllm_prompt_embeds).parameters["system_message"].default
        self.system_message = system_message or default
        self.crop_start = crop_start
        super().__init__(
            name,
            transformer,
            vae,
            text_encoder,
            tokenizer,
            geometry,
            sampling or SamplingDefaults(steps=50, guidance=6.0, shift=5.0),
            text_len=text_len,
            **options,
        )

    # the pipeline's normalisation: the latents times the VAE's scaling factor
    def _normalise(self, z):
        return z * self.vae.config.scaling_factor

    def _denormalise(self, z):
        return z / self.vae.config.scaling_factor

    def _vae_decode(self, z):
        return self.vae.decode(z, return_dict=False)[0]

    def _encode_prompts(self, prompts: list[str]) -> Text:
        """The pipeline's own prompt encoding (its `_get_mllm_prompt_embeds`): the chat template with
        the system message, the third-last hidden state, the template's first tokens cropped."""
        from diffusers.pipelines.hunyuan_video1_5.pipeline_hunyuan_video1_5 import (
            HunyuanVideo15Pipeline,
            extract_glyph_texts,
        )

        quoted = [p for p in prompts if extract_glyph_texts(p) is not None]
        if quoted:
            raise SetseqError(
                f"the prompt {quoted[0]!r} holds quoted text, which HunyuanVideo 1.5 renders through its ByT5 "
                f"glyph encoder; setseq does not run that encoder, so write the prompt without quotation marks."
            )
        emb, mask = HunyuanVideo15Pipeline._get_mllm_prompt_embeds(
            self.text_encoder,
            self.tokenizer,
            prompts,
            self.device,
            tokenizer_max_length=self.text_len,
            system_message=self.system_message,
            crop_start=self.crop_start,
        )
        return Text(emb.float(), mask.bool())

    def _forward(self, x, timestep, emb, mask):
        B, C, F, h, w = x.shape
        cfg = self.transformer.config
        condition = x.new_zeros(B, C + 1, F, h, w)  # text-to-video: no image latent, a zero mask
        return self.transformer(
            hidden_states=torch.cat([x, condition], dim=1),  # (B, 2C + 1, F, h, w)
            timestep=timestep,
            encoder_hidden_states=emb,
            encoder_attention_mask=mask,
            encoder_hidden_states_2=emb.new_zeros(B, BYT5_LEN, cfg.text_embed_2_dim),  # no glyph text
            encoder_attention_mask_2=mask.new_zeros(B, BYT5_LEN),
            image_embeds=emb.new_zeros(B, IMAGE_TOKENS, cfg.image_embed_dim),  # no image
            return_dict=False,
        )[0]


def load(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    device: str | None = None,
    cache_dir: str | Path | None = None,
    gradient_checkpointing: bool = False,
    fp8_base: bool = False,
    blocks_to_swap: int = 0,
    offload_activations: bool = False,
) -> HunyuanVideo15Backbone:
    """HunyuanVideo 1.5 from a local Diffusers-format text-to-video folder (e.g.
    HunyuanVideo-1.5-Diffusers-480p_t2v); never downloads. The ByT5 glyph encoder (text_encoder_2) is
    not loaded. Sampling: the folder's scheduler at the guidance of its guider/ config and 50 steps
    (the pipeline's); the Euler sampler takes the scheduler's shift and the same guidance and steps.

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
        SetseqError: naming a part that is missing or cannot be read, a transformer that is not
            HunyuanVideo 1.5's, a guider config that cannot be read, or a scheduler diffusers does not have.
    """
    require_diffusers()
    from diffusers import AutoencoderKLHunyuanVideo15, ClassifierFreeGuidance, HunyuanVideo15Transformer3DModel
    from transformers import Qwen2_5_VLTextModel

    root = Path(path).resolve()
    read_model_index(root)
    check_layout(read_config(root, "transformer"), read_config(root, "vae"), repr(str(root)))
    # the guider the pipeline guides with, as diffusers saves it (guider/guider_config.json)
    guidance = _read_json(root / "guider" / ClassifierFreeGuidance.config_name).get("guidance_scale", 6.0)
    sampler = scheduling.from_folder(root, PIPELINE, set_timesteps, guidance=guidance)
    root, parts = load_components(
        path, HunyuanVideo15Transformer3DModel, AutoencoderKLHunyuanVideo15, Qwen2_5_VLTextModel, dtype
    )
    shift = sampler.config.get("shift", 5.0) if sampler else 5.0
    # the pipeline's default size: the 16:9 shape nearest its transformer's target size (480p: 480 x 848)
    from diffusers.pipelines.hunyuan_video1_5.image_processor import HunyuanVideo15ImageProcessor

    processor = HunyuanVideo15ImageProcessor(vae_scale_factor=parts["vae"].config.spatial_compression_ratio)
    height, width = processor.calculate_default_height_width(9, 16, parts["transformer"].config.target_size)
    return HunyuanVideo15Backbone(
        str(root),
        **parts,
        geometry=Geometry(GEOMETRY.frames, int(height), int(width), GEOMETRY.fps),
        sampling=SamplingDefaults(steps=50, guidance=float(guidance), shift=float(shift)),
        pipeline_sampler=sampler,
        device=device,
        cache_dir=default_cache_dir() if cache_dir is None else cache_dir,
        gradient_checkpointing=gradient_checkpointing,
        fp8_base=fp8_base,
        blocks_to_swap=blocks_to_swap,
        offload_activations=offload_activations,
    )


def _read_json(path: Path) -> dict:
    """A config file's content, {} where there is none; one sentence for one that cannot be read."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SetseqError(f"{str(path)!r} cannot be read ({e}).") from None


def tiny_components(seed: int = 0, words: list[str] | None = None) -> dict:
    """Seeded random tiny HunyuanVideo 1.5 components (transformer, vae, text_encoder, tokenizer),
    HunyuanVideo15Pipeline's names; the tokenizer carries a small chat template."""
    require_diffusers()
    from diffusers import AutoencoderKLHunyuanVideo15, HunyuanVideo15Transformer3DModel
    from transformers import Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel

    from setseq.backbones.diffusers_common import TINY_WORDS

    vocab = [*(words or TINY_WORDS), "system", "user", "assistant", *TINY_SYSTEM.split()]
    parts = build_tiny(
        seed,
        vocab,
        lambda: HunyuanVideo15Transformer3DModel(**HY15_TINY),
        lambda: AutoencoderKLHunyuanVideo15(**HY15_TINY_VAE),
        lambda n: Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig(vocab_size=n, **HY15_TINY_TEXT)),
    )
    parts["tokenizer"].chat_template = TINY_CHAT_TEMPLATE
    return parts


def tiny_crop_start(tokenizer) -> int:
    """The tiny template's token count before the user's prompt (the tiny `crop_start`)."""
    return len(tokenizer(f"system {TINY_SYSTEM} user", add_special_tokens=False).input_ids)


def tiny(seed: int = 0, **options) -> HunyuanVideo15Backbone:
    """A tiny random HunyuanVideo 1.5 backbone: 5 frames at 32x32 (2 x 2 x 2 latents of 8 channels),
    sampling with SCHEDULER at 4 steps and guidance 6."""
    parts = tiny_components(seed)
    return HunyuanVideo15Backbone(
        "hunyuan15-tiny",
        **parts,
        geometry=Geometry(5, 32, 32, 24.0),
        sampling=SamplingDefaults(steps=4, guidance=6.0, shift=5.0),
        text_len=16,
        system_message=TINY_SYSTEM,
        crop_start=tiny_crop_start(parts["tokenizer"]),
        pipeline_sampler=scheduling.PipelineSampler(PIPELINE, SCHEDULER, 4, 6.0, set_timesteps),
        **options,
    )
