"""The diffusers pipelines of setseq's tiny backbones, over the same seeded components (for tests that
compare setseq with the pipeline's own code, and for pipeline folders saved to disk)."""

import torch

from setseq.backbones import hunyuan15, ltx, ltx2, wan

MODULES = {"wan": wan, "ltx": ltx, "ltx2": ltx2, "hunyuan15": hunyuan15}


def scheduler_config(kind: str) -> dict:
    """The scheduler config the tiny backbone of `kind` samples with (the kind its real folders hold)."""
    return {
        "wan": wan.tiny_scheduler(),
        "ltx": ltx.SCHEDULER,
        "ltx2": ltx2.SCHEDULER,
        "hunyuan15": hunyuan15.SCHEDULER,
    }[kind]


def pipeline(kind: str, seed: int = 0):
    """The diffusers pipeline of `MODULES[kind].tiny(seed)`'s components and scheduler; LTX-2's with a
    tiny random audio VAE and no vocoder (it runs to latents), HunyuanVideo 1.5's with a tiny random
    ByT5 encoder, the tiny prompt template and a guider at the tiny instance's guidance."""
    from diffusers import (
        ClassifierFreeGuidance,
        HunyuanVideo15Pipeline,
        LTX2Pipeline,
        LTXPipeline,
        WanPipeline,
    )

    from setseq.backbones.scheduling import make_scheduler

    parts = MODULES[kind].tiny_components(seed)
    scheduler = make_scheduler(scheduler_config(kind))
    if kind == "ltx2":
        from diffusers import AutoencoderKLLTX2Audio

        parts["tokenizer"].padding_side = "left"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 2)
            # 2 latent channels x 8 / 4 mel bins: the tiny transformer's 4 audio features per token
            audio_vae = AutoencoderKLLTX2Audio(base_channels=4, num_res_blocks=1, latent_channels=2, mel_bins=8)
        return LTX2Pipeline(scheduler=scheduler, audio_vae=audio_vae, vocoder=None, **parts)
    if kind == "hunyuan15":
        from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 2)
            byt5 = T5EncoderModel(T5Config(vocab_size=384, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2))
        pipe = HunyuanVideo15Pipeline(
            scheduler=scheduler,
            text_encoder_2=byt5,
            tokenizer_2=ByT5Tokenizer(),
            guider=ClassifierFreeGuidance(guidance_scale=6.0),
            **parts,
        )
        pipe.system_message = hunyuan15.TINY_SYSTEM
        pipe.prompt_template_encode_start_idx = hunyuan15.tiny_crop_start(parts["tokenizer"])
        pipe.tokenizer_max_length = 16  # the tiny backbone's text_len
        pipe.tokenizer_2_max_length = hunyuan15.BYT5_LEN
        return pipe
    return {"wan": WanPipeline, "ltx": LTXPipeline}[kind](scheduler=scheduler, **parts)
