"""LTX-2 and HunyuanVideo 1.5 against their diffusers pipelines' own conventions, on tiny seeded models:
prompt encoding, the transformer call (setseq's velocity), latent normalisation and VAE decoding."""

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from setseq.backbones import hunyuan15, ltx2  # noqa: E402
from setseq.backbones.hunyuan15 import HunyuanVideo15Backbone  # noqa: E402
from setseq.errors import SetseqError  # noqa: E402
from tiny_pipelines import pipeline  # noqa: E402

PROMPT = "a red square on a blue background . it moves slowly left"


def _video(bb, seed=0):
    g, geometry = torch.Generator().manual_seed(seed), bb.geometry
    return torch.rand(1, geometry.frames, 3, geometry.height, geometry.width, generator=g) * 2 - 1  # (B, F, C, H, W)


def _latents(bb, seed=1):
    return torch.randn(1, *bb.latent_shape(bb.geometry), generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------
# LTX-2
# --------------------------------------------------------------------------------------------


def test_ltx2_text_is_the_pipelines_encoding_through_its_connectors():
    bb, pipe = ltx2.tiny(), pipeline("ltx2")
    with torch.no_grad():
        emb, mask, _, _ = pipe.encode_prompt(PROMPT, do_classifier_free_guidance=False, max_sequence_length=16)
        video_emb, _, video_mask = pipe.connectors(emb, mask, padding_side="left")
        ours = bb.encode_text([PROMPT])
    torch.testing.assert_close(ours.emb, video_emb)
    assert torch.equal(ours.mask, video_mask.bool())


def test_ltx2_velocity_is_the_video_stream_with_the_audio_stream_cut_off():
    """setseq's velocity is the transformer's video output on the pipeline's packed latents at timestep
    1000 t, whatever the audio stream holds: with the modalities isolated the video never reads it
    (without isolation it would, so the test sees the difference)."""
    bb, pipe = ltx2.tiny(), pipeline("ltx2")
    x, t = _latents(bb), torch.tensor([0.7])
    with torch.no_grad():
        text = bb.encode_text([PROMPT])
        v = bb.velocity(x, t, text)
        tokens = pipe._pack_latents(x)  # (B, F h w, C)
        _, F, h, w = bb.latent_shape(bb.geometry)
        audio_frames = 9  # the pipeline's audio length for 9 frames at 24 fps
        g = torch.Generator().manual_seed(2)
        audio = torch.randn(1, audio_frames, bb.transformer.config.audio_in_channels, generator=g)
        audio_text = torch.randn(1, 16, bb.transformer.config.caption_channels, generator=g)

        def video(isolate, audio=audio):
            out, _ = pipe.transformer(
                hidden_states=tokens,
                audio_hidden_states=audio,
                encoder_hidden_states=text.emb,
                audio_encoder_hidden_states=audio_text,
                timestep=1000 * t,
                sigma=1000 * t,
                encoder_attention_mask=text.mask.float(),
                audio_encoder_attention_mask=text.mask.float(),
                num_frames=F,
                height=h,
                width=w,
                fps=24.0,
                audio_num_frames=audio_frames,
                isolate_modalities=isolate,
                use_cross_timestep=True,
                return_dict=False,
            )
            return pipe._unpack_latents(out, F, h, w)  # (B, C, F, h, w)

        torch.testing.assert_close(v, video(True), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(video(False), video(False, audio=-audio), atol=1e-4)


def test_ltx2_latents_are_normalised_and_decoded_as_the_pipeline_does():
    bb, pipe = ltx2.tiny(), pipeline("ltx2")
    vae = pipe.vae
    video = _video(bb)
    with torch.no_grad():
        z = bb.encode_video(video)
        raw = vae.encode(video.permute(0, 2, 1, 3, 4)).latent_dist.mode()  # (B, C, F', h, w)
        stats = (vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
        torch.testing.assert_close(z, pipe._normalize_latents(raw, *stats))
        assert not torch.allclose(z, raw, atol=1e-3)  # the made-up statistics do act
        decoded = vae.decode(pipe._denormalize_latents(z, *stats), None, return_dict=False)[0]  # (B, C, F, H, W)
        torch.testing.assert_close(bb.decode_latents(z), decoded.clamp(-1, 1).permute(0, 2, 1, 3, 4))


def test_ltx2_adapts_the_video_stream_only():
    from setseq import lora

    bb = ltx2.tiny()
    layers = lora.inject(bb.transformer, bb.lora_targets, rank=2)
    assert len(layers) == 2 * 10  # two blocks: attn1, attn2 (q, k, v, out) and the MLP's two linears
    assert not any("audio" in name for name in layers)


# --------------------------------------------------------------------------------------------
# HunyuanVideo 1.5
# --------------------------------------------------------------------------------------------


def test_hunyuan15_text_is_the_pipelines_encoding():
    bb, pipe = hunyuan15.tiny(), pipeline("hunyuan15")
    with torch.no_grad():
        emb, mask, _, _ = pipe.encode_prompt(PROMPT, device="cpu", dtype=torch.float32)
        ours = bb.encode_text([PROMPT])
    torch.testing.assert_close(ours.emb, emb)
    assert torch.equal(ours.mask, mask.bool()) and not mask.all()  # the padding is masked


def test_hunyuan15_velocity_is_the_pipelines_transformer_call():
    """The pipeline's text-to-video call: x_t with a zero conditioning latent and mask, zero image
    tokens, the ByT5 stream of a prompt without quoted text, timestep 1000 t."""
    bb, pipe = hunyuan15.tiny(), pipeline("hunyuan15")
    x, t = _latents(bb), torch.tensor([0.3])
    with torch.no_grad():
        emb, mask, emb_2, mask_2 = pipe.encode_prompt(PROMPT, device="cpu", dtype=torch.float32)
        condition, condition_mask = pipe.prepare_cond_latents_and_mask(x, torch.float32, "cpu")
        cfg = pipe.transformer.config
        theirs = pipe.transformer(
            hidden_states=torch.cat([x, condition, condition_mask], dim=1),
            image_embeds=torch.zeros(1, pipe.vision_num_semantic_tokens, cfg.image_embed_dim),
            timestep=1000 * t,
            encoder_hidden_states=emb,
            encoder_attention_mask=mask,
            encoder_hidden_states_2=emb_2,
            encoder_attention_mask_2=mask_2,
            return_dict=False,
        )[0]
        ours = bb.velocity(x, t, bb.encode_text([PROMPT]))
        other = bb.velocity(x, torch.tensor([0.8]), bb.encode_text([PROMPT]))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ours, other, atol=1e-4)


def test_hunyuan15_generate_is_the_pipelines_own_call():
    """`generate` (its scheduler at shift 5, guidance 6, the empty negative prompt) is
    HunyuanVideo15Pipeline's call on the same starting noise with the pipeline encoding both prompts
    itself, decoded video included (tests/test_sampling.py compares the latents from shared embeddings)."""
    from setseq.generate import generate

    bb, pipe = hunyuan15.tiny(), pipeline("hunyuan15")
    assert pipe.guider.guidance_scale == bb.pipeline_sampler.guidance == bb.sampling.guidance
    g = bb.geometry
    noise = torch.randn(1, *bb.latent_shape(g), generator=torch.Generator().manual_seed(5))  # generate's draw
    with torch.no_grad():
        theirs = pipe(
            prompt=PROMPT,
            latents=noise,
            height=g.height,
            width=g.width,
            num_frames=g.frames,
            num_inference_steps=3,
            output_type="pt",
            return_dict=False,
        )[0]  # (B, F, C, H, W) in [0, 1]
    ours = generate(bb, [PROMPT], steps=3, seed=5)  # (B, F, C, H, W) in [-1, 1]
    torch.testing.assert_close((ours + 1) / 2, theirs, atol=1e-5, rtol=1e-5)


def test_hunyuan15_latents_are_scaled_and_decoded_as_the_pipeline_does():
    bb, pipe = hunyuan15.tiny(), pipeline("hunyuan15")
    vae, k = pipe.vae, pipe.vae.config.scaling_factor
    video = _video(bb)
    with torch.no_grad():
        z = bb.encode_video(video)
        torch.testing.assert_close(z, vae.encode(video.permute(0, 2, 1, 3, 4)).latent_dist.mode() * k)
        decoded = vae.decode(z / k, return_dict=False)[0]  # the pipeline's decode: (B, C, F, H, W)
        torch.testing.assert_close(bb.decode_latents(z), decoded.clamp(-1, 1).permute(0, 2, 1, 3, 4))
    assert k != 1.0


def test_hunyuan15_refuses_quoted_text_it_cannot_render():
    bb = hunyuan15.tiny()
    with pytest.raises(SetseqError, match="quoted text"):
        bb.encode_text(['a sign that says "open"'])


# --------------------------------------------------------------------------------------------
# End to end through the CLI, from a saved pipeline folder
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ltx2", "hunyuan15"])
def test_train_generate_and_export_from_a_pipeline_folder(tmp_path, kind):
    """`setseq train` (both stages), `generate` and `export` in both formats on a tiny model saved as
    its pipeline's folder, loaded by `--base` with the folder's own defaults."""
    import av
    import numpy as np
    from safetensors.torch import load_file

    from setseq import concept as cio
    from setseq.cli import main
    from test_inputs import encode

    folder = tmp_path / "model"
    pipeline(kind).save_pretrained(folder)
    images = np.zeros((12, 64, 64, 3), np.uint8)
    for k in range(12):  # a red bar moving right on blue
        images[..., 2] = 200
        images[k, :, 4 * k : 4 * k + 8] = (255, 0, 0)
    clip = encode(tmp_path / "clip.mp4", images, rate=24)
    size = (
        ["--frames", "9", "--height", "64", "--width", "64"]
        if kind == "ltx2"
        else ["--frames", "5", "--height", "32", "--width", "32"]
    )
    out = tmp_path / "c.safetensors"
    args = [
        "train",
        str(clip),
        "--base",
        str(folder),
        "--prompt",
        "a [v] red square.",
        "--motion-prompt",
        "it moves in [u] motion.",
    ]
    args += [
        "--stage1-steps",
        "1",
        "--stage2-steps",
        "1",
        "--batch-size",
        "1",
        "--no-prior",
        "--quiet",
        "--out",
        str(out),
    ]
    assert main(args + size) == 0
    cs = cio.load(out)
    assert cs.meta["stage"] == "final" and cs.meta["base"]["name"] == str(folder.resolve())
    assert (tmp_path / "c.stage1.safetensors").is_file()
    video = tmp_path / "gen.mp4"
    prompt = "a [v] red square. it moves in [u] motion."
    gen = ["generate", str(out), "--prompt", prompt, "--out", str(video), "--upscale", "1"]
    if kind == "ltx2":  # one step divides by zero in the scheduler's terminal stretch: refused
        assert main([*gen, "--steps", "1"]) == 2 and not video.exists()
    assert main([*gen, "--steps", "2"]) == 0
    with av.open(str(video)) as c:
        assert c.streams.video[0].frames == int(size[1])
    for fmt in ("diffusers", "comfyui"):
        path = tmp_path / f"{fmt}.safetensors"
        assert main(["export", str(out), "--format", fmt, "--out", str(path)]) == 0
        assert len(load_file(path)) > 0


def test_hunyuan15_defaults_are_the_pipelines_own():
    """The system message a real folder is encoded with is the one HunyuanVideo15Pipeline sets itself,
    and so are the prompt length and the template's crop."""
    import inspect

    from diffusers import HunyuanVideo15Pipeline

    import tiny_pipelines

    signature = inspect.signature(HunyuanVideo15Backbone.__init__).parameters
    assert (
        signature["crop_start"].default == hunyuan15.CROP_START and signature["text_len"].default == hunyuan15.TEXT_LEN
    )
    pipe = tiny_pipelines.pipeline("hunyuan15")
    fresh = HunyuanVideo15Pipeline(**{k: getattr(pipe, k) for k in pipe.components})
    bb = HunyuanVideo15Backbone("x", pipe.transformer, pipe.vae, pipe.text_encoder, pipe.tokenizer)
    assert bb.system_message == fresh.system_message
    assert (bb.crop_start, bb.text_len) == (fresh.prompt_template_encode_start_idx, fresh.tokenizer_max_length)
    assert bb.geometry == hunyuan15.GEOMETRY and (
        bb.geometry.height,
        bb.geometry.width,
    ) == fresh.video_processor.calculate_default_height_width(9, 16, 640)


def test_hunyuan15_samples_at_its_folders_guider_and_scheduler(tmp_path):
    """A folder's guidance is its guider's (guider/guider_config.json, as diffusers saves it) and its
    shift its scheduler's, for both samplers; here both differ from the 480p defaults (6 and 5)."""
    from diffusers import ClassifierFreeGuidance, FlowMatchEulerDiscreteScheduler

    from setseq.backbones import load_backbone

    pipe = pipeline("hunyuan15")
    pipe.guider = ClassifierFreeGuidance(guidance_scale=4.5)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=7.0)
    pipe.save_pretrained(tmp_path / "model")
    bb = load_backbone(str(tmp_path / "model"))
    assert bb.pipeline_sampler.guidance == bb.sampling.guidance == 4.5
    assert bb.pipeline_sampler.config["shift"] == bb.sampling.shift == 7.0
    assert bb.pipeline_sampler.steps == bb.sampling.steps == 50
