"""Sampling with a model folder's own scheduler: setseq's samples are its diffusers pipeline's.

Each case is a tiny model saved as a diffusers folder with the kind of scheduler its real folders hold.
setseq loads the folder (`load_backbone`) and diffusers loads the same folder (`DiffusionPipeline`);
for the same initial latents, prompt embeddings, steps and guidance, the final latents agree, with and
without a concept (setseq's own adapters on one side, its export through `load_lora_weights` on the
other; HunyuanVideo 1.5, which has no pipeline loader: `transformer.load_lora_adapter`). A new backbone
is one more entry of CASES and, for a new pipeline class, of PIPELINE_CALLS.
"""

import json

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("peft")  # diffusers loads LoRAs through PEFT

from conftest import random_concept  # noqa: E402
from setseq import lora  # noqa: E402
from setseq.backbones import hunyuan15, load_backbone, wan  # noqa: E402
from setseq.backbones.scheduling import make_scheduler  # noqa: E402
from setseq.cli import main  # noqa: E402
from setseq.errors import SetseqError  # noqa: E402
from setseq.export import export  # noqa: E402
from setseq.generate import initial_noise, sample  # noqa: E402
from tiny_pipelines import MODULES, pipeline  # noqa: E402

PROMPT = "a red square on a blue background. it moves slowly left."
STEPS, GUIDANCE, GUIDANCE_2 = 3, 4.0, 2.5
IDENTITY, MOTION = 0.7, {"a": 0.5, "b": 2.0}


def _save_wan(layout):
    def save(folder):
        from diffusers import WanPipeline

        options = {"boundary_ratio": wan.TINY_BOUNDARY} if layout.experts else {}
        if layout.expand_timesteps:
            options["expand_timesteps"] = True
        scheduler = make_scheduler(wan.tiny_scheduler(layout))
        WanPipeline(scheduler=scheduler, **wan.tiny_components(0, layout=layout), **options).save_pretrained(folder)
        return wan.TINY[layout.name][1]  # the tiny geometry

    return save


def _save(kind):
    def save(folder):
        pipeline(kind).save_pretrained(folder)  # the tiny components with the tiny instance's scheduler
        return MODULES[kind].tiny().geometry

    return save


# name -> save(folder) -> the geometry to sample at: a tiny model and its scheduler as a diffusers folder
CASES = {
    "wan2.1": _save_wan(wan.WAN_2_1),
    "wan2.2-a14b": _save_wan(wan.WAN_2_2_A14B),
    "wan2.2-ti2v-5b": _save_wan(wan.WAN_2_2_TI2V_5B),
    "ltx-video-0.9": _save("ltx"),
    "ltx-2": _save("ltx2"),
    "hunyuanvideo-1.5": _save("hunyuan15"),
}
# The guidance each case samples at. LTX-2: 1, the one setting at which LTX2Pipeline's sample is setseq's.
# The pipeline samples audio with the video; guided, its video prediction attends to the audio stream
# and adds STG, modality guidance and a rescale, none of which a video-only model has. At video and audio
# guidance 1, STG 0, modality scale 0 and no rescale, it steps the video with the transformer's video
# output alone, which setseq's isolated-modality velocity is (tests/test_ltx2_hunyuan15.py).
CASE_GUIDANCE = {"ltx-2": 1.0}
# Cases whose scheduler is flow-match Euler at a fixed shift on evenly spaced sigmas, the integrator
# setseq's Euler sampler is: there the two samplers agree (elsewhere they must differ).
EULER_IS_THE_SCHEDULER = {"hunyuanvideo-1.5"}


# --------------------------------------------------------------------------------------------
# The pipelines' own calls, from setseq's inputs
# --------------------------------------------------------------------------------------------


def _call_wan(pipe, bb, noise, cond, uncond, g, guidance):
    """WanPipeline: embeddings zero past each prompt and padded to the text length, as its encoder makes them."""

    def embeds(text):
        emb = text.emb * text.mask[..., None]  # (B, T, D)
        return torch.nn.functional.pad(emb, (0, 0, 0, bb.text_len - emb.shape[1]))

    extra = {"guidance_scale_2": GUIDANCE_2} if pipe.config.boundary_ratio is not None else {}
    return pipe(
        prompt_embeds=embeds(cond),
        negative_prompt_embeds=embeds(uncond),
        latents=noise,
        height=g.height,
        width=g.width,
        num_frames=g.frames,
        num_inference_steps=STEPS,
        guidance_scale=guidance,
        output_type="latent",
        **extra,
    ).frames


def _call_ltx(pipe, bb, noise, cond, uncond, g, guidance):
    """LTXPipeline: embeddings with their masks; latents packed into a token list and back."""
    B, C, F, h, w = noise.shape
    out = pipe(
        prompt_embeds=cond.emb,
        prompt_attention_mask=cond.mask.float(),
        negative_prompt_embeds=uncond.emb,
        negative_prompt_attention_mask=uncond.mask.float(),
        latents=pipe._pack_latents(noise),  # (B, F h w, C)
        height=g.height,
        width=g.width,
        num_frames=g.frames,
        frame_rate=g.fps,
        num_inference_steps=STEPS,
        guidance_scale=guidance,
        output_type="latent",
    ).frames
    return pipe._unpack_latents(out, F, h, w)  # (B, C, F, h, w)


def _call_ltx2(pipe, bb, noise, cond, uncond, g, guidance):
    """LTX2Pipeline at guidance 1 only (CASE_GUIDANCE): it takes the text encoder's stacked hidden states,
    not the connectors' output that setseq's embeddings are, so the prompt is encoded by the pipeline's
    own encoder (its connectors then give setseq's embeddings, tests/test_ltx2_hunyuan15.py); latents
    packed, taken as already normalised, and returned denormalised."""
    assert guidance == 1.0, "LTX2Pipeline's sample is setseq's at guidance 1 only"
    B, C, F, h, w = noise.shape
    emb, mask, _, _ = pipe.encode_prompt(PROMPT, do_classifier_free_guidance=False, max_sequence_length=bb.text_len)
    out = pipe(
        prompt_embeds=emb,
        prompt_attention_mask=mask,
        latents=pipe._pack_latents(noise),  # (B, F h w, C)
        height=g.height,
        width=g.width,
        num_frames=g.frames,
        frame_rate=g.fps,
        num_inference_steps=STEPS,
        guidance_scale=1.0,
        audio_guidance_scale=1.0,  # else the pipeline guides both with a negative prompt
        stg_scale=0.0,
        modality_scale=0.0,
        guidance_rescale=0.0,
        output_type="latent",
    ).frames  # (B, C, F, h, w), denormalised
    vae = pipe.vae
    return pipe._normalize_latents(out, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)


def _call_hunyuan15(pipe, bb, noise, cond, uncond, g, guidance):
    """HunyuanVideo15Pipeline: embeddings with their masks, the ByT5 glyph stream of a prompt without
    quoted text (zeros, masked out); its guidance is its guider's, so a guider at `guidance`."""
    from diffusers import ClassifierFreeGuidance

    pipe.guider = ClassifierFreeGuidance(guidance_scale=guidance)
    B = noise.shape[0]
    glyphs = torch.zeros(B, hunyuan15.BYT5_LEN, pipe.transformer.config.text_embed_2_dim)
    no_glyphs = torch.zeros(B, hunyuan15.BYT5_LEN, dtype=cond.mask.dtype)
    return pipe(
        prompt_embeds=cond.emb,
        prompt_embeds_mask=cond.mask,
        negative_prompt_embeds=uncond.emb,
        negative_prompt_embeds_mask=uncond.mask,
        prompt_embeds_2=glyphs,
        prompt_embeds_mask_2=no_glyphs,
        negative_prompt_embeds_2=glyphs,
        negative_prompt_embeds_mask_2=no_glyphs,
        latents=noise,
        height=g.height,
        width=g.width,
        num_frames=g.frames,
        num_inference_steps=STEPS,
        output_type="latent",
    ).frames


PIPELINE_CALLS = {
    "WanPipeline": _call_wan,
    "LTXPipeline": _call_ltx,
    "LTX2Pipeline": _call_ltx2,
    "HunyuanVideo15Pipeline": _call_hunyuan15,
}


@pytest.fixture(scope="module", params=sorted(CASES))
def folder(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param) / request.param
    geometry = CASES[request.param](path)
    return path, geometry


def _pipeline(path):
    """The folder's diffusers pipeline; the tiny LTX-2 folder has no vocoder (the pipeline runs to latents)."""
    from diffusers import DiffusionPipeline

    no_vocoder = json.loads((path / "model_index.json").read_text())["_class_name"] == "LTX2Pipeline"
    return DiffusionPipeline.from_pretrained(
        str(path), local_files_only=True, **({"vocoder": None} if no_vocoder else {})
    )


def _load_concept(bb, pipe, out):
    """A random concept on setseq's side, its diffusers export loaded with the pipeline's own loader."""
    cs = random_concept(bb)
    for path in export(cs, out / "concept.safetensors", "diffusers", identity_scale=IDENTITY, motion_scale=MOTION):
        if not hasattr(pipe, "load_lora_weights"):  # HunyuanVideo 1.5: PEFT's names, the model-level loader
            pipe.transformer.load_lora_adapter(str(path), prefix="transformer")
        else:
            pipe.load_lora_weights(str(path), load_into_transformer_2=path.stem.endswith("_low_noise"))


# --------------------------------------------------------------------------------------------
# Parity
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("concept", [False, True], ids=["base", "concept"])
def test_setseq_samples_what_the_pipeline_samples(folder, concept, tmp_path):
    path, g = folder
    bb, pipe = load_backbone(str(path)), _pipeline(path)
    assert type(pipe).__name__ == bb.pipeline_sampler.pipeline
    if concept:
        _load_concept(bb, pipe, tmp_path)
    noise = initial_noise(bb, 1, g, seed=5)
    guidance = CASE_GUIDANCE.get(path.name, GUIDANCE)
    options = dict(geometry=g, steps=STEPS, guidance=guidance, seed=5)
    if getattr(bb, "experts", None):  # Wan 2.2 T2V-A14B: its low-noise steps' own guidance, as guidance_scale_2
        options["guidance_2"] = GUIDANCE_2
    with lora.scales(bb.transformer, identity=IDENTITY, motion=MOTION):
        ours = sample(bb, [PROMPT], **options)
        euler = sample(bb, [PROMPT], **options, sampler="euler")
        with torch.no_grad():
            cond, uncond = bb.encode_text([PROMPT]), bb.encode_text([""])
    call = PIPELINE_CALLS[type(pipe).__name__]
    theirs = call(pipe, bb, noise, cond, uncond, g, guidance)
    gap, scale = (ours - theirs).abs().max().item(), theirs.abs().max().item()
    print(f"{path.name} {'concept' if concept else 'base'}: |setseq - pipeline| {gap:.1e} of {scale:.1f}")
    assert ours.shape == theirs.shape and gap <= 1e-5 * max(1.0, scale)
    euler_gap = (euler - theirs).abs().max().item()
    if path.name in EULER_IS_THE_SCHEDULER:  # the same integrator: the Euler sampler lands there too
        assert euler_gap <= 1e-5 * max(1.0, scale)
    else:  # another integrator: it lands elsewhere, so the match is not vacuous
        assert euler_gap > 1e-3
    if getattr(bb, "experts", None):  # both experts and both guidance scales took part
        timesteps = bb.pipeline_sampler.scheduler(STEPS, bb.latent_shape(g)).timesteps
        assert timesteps.min() < 1000 * wan.TINY_BOUNDARY <= timesteps.max()
    if concept:  # and the concept is in both: the base pipeline samples something else
        base = call(_pipeline(path), bb, noise, cond, uncond, g, guidance)
        assert (base - theirs).abs().max() > 1e-3


def test_a_folder_samples_with_its_scheduler_at_the_pipelines_defaults(folder):
    path, _ = folder
    bb = load_backbone(str(path))
    saved = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    assert bb.pipeline_sampler.config == saved
    # each pipeline's __call__ defaults; HunyuanVideo15Pipeline's guidance is its guider's (the tiny folder's: 6)
    pipe_defaults = {
        "WanPipeline": (50, 5.0),
        "LTXPipeline": (50, 3.0),
        "LTX2Pipeline": (30, 3.0),
        "HunyuanVideo15Pipeline": (50, 6.0),
    }
    assert (bb.pipeline_sampler.steps, bb.pipeline_sampler.guidance) == pipe_defaults[bb.pipeline_sampler.pipeline]
    scheduler = bb.pipeline_sampler.scheduler(4, bb.latent_shape(bb.geometry))
    assert type(scheduler).__name__ == saved["_class_name"] and len(scheduler.timesteps) == 4


def test_guidance_2_is_for_two_experts_only():
    a14b = wan.tiny(layout=wan.WAN_2_2_A14B)
    same = sample(a14b, [PROMPT], steps=3, guidance=4.0, guidance_2=4.0)
    assert torch.equal(same, sample(a14b, [PROMPT], steps=3, guidance=4.0))  # default: the one guidance
    assert not torch.equal(same, sample(a14b, [PROMPT], steps=3, guidance=4.0, guidance_2=2.5))
    with pytest.raises(SetseqError, match="has one transformer"):
        sample(wan.tiny(), [PROMPT], steps=3, guidance_2=2.5)


def test_a_folder_without_a_scheduler_samples_with_euler_and_an_unknown_one_is_refused(tmp_path):
    from setseq.backbones import scheduling

    assert scheduling.from_folder(tmp_path, "WanPipeline") is None
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text('{"_class_name": "NoSuchScheduler"}')
    with pytest.raises(SetseqError, match="scheduler is a 'NoSuchScheduler', which diffusers .* does not have"):
        scheduling.from_folder(tmp_path, "WanPipeline")


# --------------------------------------------------------------------------------------------
# Guidance and the choice of sampler
# --------------------------------------------------------------------------------------------


def test_the_guidance_interval_still_selects_the_guided_steps():
    bb = wan.tiny()
    guided = sample(bb, [PROMPT], steps=3, guidance=4.0)
    unguided = sample(bb, [PROMPT], steps=3, guidance=1.0)
    assert (guided - unguided).abs().max() > 1e-3
    # the scheduler's 3 timesteps are 999, 900 and 750 (flow shift 3): none lies in (0, 0.5]
    assert torch.equal(sample(bb, [PROMPT], steps=3, guidance=4.0, guidance_interval=(0.0, 0.5)), unguided)
    partly = sample(bb, [PROMPT], steps=3, guidance=4.0, guidance_interval=(0.0, 0.95))
    assert not torch.equal(partly, unguided) and not torch.equal(partly, guided)


def test_the_toy_keeps_its_euler_sampler_and_refuses_a_scheduler(tmp_path, capsys):
    from conftest import tiny_backbone

    bb = tiny_backbone()
    assert bb.pipeline_sampler is None
    assert torch.equal(sample(bb, ["a red square."], steps=2), sample(bb, ["a red square."], steps=2, sampler="euler"))
    with pytest.raises(SetseqError, match="has no scheduler of its own"):
        sample(bb, ["a red square."], steps=2, sampler="scheduler")
    args = ["generate", "--base", "toy-tiny", "--prompt", "a red square.", "--steps", "2"]
    assert main([*args, "--sampler", "scheduler", "--out", str(tmp_path / "a.gif")]) == 2
    assert "--sampler euler" in capsys.readouterr().err
    assert main([*args, "--sampler", "euler", "--out", str(tmp_path / "b.gif")]) == 0


def test_sdedit_needs_the_euler_sampler():
    bb = wan.tiny()
    g = bb.geometry
    init = torch.zeros(1, g.frames, 3, g.height, g.width)
    with pytest.raises(SetseqError, match="Euler sampler only"):
        sample(bb, [PROMPT], steps=2, init=init, start=0.5)
    assert sample(bb, [PROMPT], steps=2, init=init, start=0.5, sampler="euler").shape == (1, *bb.latent_shape(g))
