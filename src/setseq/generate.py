"""Text-to-video sampling with a backbone (and whatever concept set is applied to it)."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from setseq import flow
from setseq.backbones.base import TOKEN, Backbone, Geometry, Text
from setseq.errors import SetseqError
from setseq.patch_shift import shifting


def check_prompt_tokens(prompt: str, known: list[str]) -> None:
    """A bracketed token the model does not know is almost always a typo: say so."""
    unknown = sorted(set(TOKEN.findall(prompt)) - set(known))
    if unknown:
        have = ", ".join(known) if known else "none (no concept loaded)"
        raise SetseqError(f"the prompt uses {', '.join(unknown)}, but the loaded concept tokens are: {have}.")


SAMPLERS = ("scheduler", "euler")  # a folder's own scheduler (diffusers), setseq's Euler integrator


def default_sampler(backbone: Backbone) -> str:
    """The folder's own scheduler where the backbone has one (a diffusers folder), else Euler (the toy)."""
    return "scheduler" if getattr(backbone, "pipeline_sampler", None) is not None else "euler"


def initial_noise(backbone: Backbone, n: int, geometry: Geometry, seed: int) -> torch.Tensor:
    """The starting noise of `n` samples (n, *latent_shape) on the CPU, drawn from `seed`: what `sample`
    starts from, and what a pipeline is given as `latents=` to sample the same video."""
    return torch.randn((n, *backbone.latent_shape(geometry)), generator=torch.Generator().manual_seed(seed))


def _boundary(backbone: Backbone) -> float | None:
    """The time t below which a two-expert model's low-noise expert runs (Wan 2.2 T2V-A14B), else None."""
    experts = getattr(backbone, "experts", None)
    return experts["low_noise"]["t"][1] if experts else None


@torch.no_grad()
def sample(
    backbone: Backbone,
    prompts: list[str],
    *,
    geometry: Geometry | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    guidance_2: float | None = None,
    guidance_interval: tuple[float, float] | None = None,
    seed: int = 0,
    negative: str = "",
    self_condition: bool | None = None,
    progress: bool = False,
    init: torch.Tensor | None = None,
    start: float = 1.0,
    sampler: str | None = None,
    patch_shift: int | None = None,
) -> torch.Tensor:
    """Sample the latents of one clip per prompt.

    Args:
        backbone: the model, with any concept already applied.
        prompts: text prompts; concept tokens must be known to the backbone.
        geometry: clip geometry (default: the backbone's).
        steps, guidance: sampling steps and classifier-free guidance (default: the sampler's: the
            pipeline's own for the folder's scheduler, the backbone's for Euler).
        guidance_2: the guidance of the steps a two-expert model's low-noise expert takes (Wan 2.2
            T2V-A14B; the pipeline's guidance_scale_2); default: `guidance`.
        guidance_interval: (lo, hi), the noise levels t in (lo, hi] at which guidance applies;
            the other steps take the conditional velocity alone, one forward pass instead of two
            (Kynkaanniemi et al. 2024: guidance at low noise adds little but artefacts). Default:
            the backbone's; (0, 1) guides every step.
        seed: seeds the starting noise (`initial_noise`), so the same call gives the same video.
        negative: the unconditional prompt for guidance.
        self_condition: feed x_0 estimates back (default: when the backbone supports it; Euler only).
        progress: show a progress bar.
        init: optional videos (B, F, C, H, W) in [-1, 1], one per prompt, noised to time `start` and
            denoised from there (SDEdit, Meng et al. 2022): what survives at `start` is kept. With
            init=None sampling starts from pure noise. Euler only.
        start: the noise level sampling starts from, in (0, 1]; it must be 1 without init.
        sampler: "scheduler", the scheduler class and config the model folder names, stepped as its
            diffusers pipeline steps it (the same video as the pipeline for the same noise, prompt
            embeddings, steps and guidance); or "euler", setseq's Euler integrator of
            `flow.schedule` at the backbone's shift. Default: the scheduler where the backbone has one.
        patch_shift: move the model's patch grid by a random offset in [0, patch_shift) pixels on
            each axis at every step, so that a pixel-space DiT's patch seams do not add up
            (`setseq.patch_shift`); offsets are seeded by `seed`. Default: the backbone's (the toy
            base's patch, 4; 0, off, for latent models).

    Returns:
        Latents (B, *backbone.latent_shape(geometry)), float32, on the backbone's device.

    Raises:
        SetseqError: for unknown concept tokens, a geometry the backbone refuses, init videos that
            do not match the prompts, a start level outside (0, 1], a guidance interval that is
            not 0 <= lo < hi <= 1, an unknown sampler, the scheduler sampler on a backbone without
            one, init videos or self-conditioning with the scheduler sampler, guidance_2 for a
            model of one transformer, a negative patch_shift, or one for a model that cannot move
            its patch grid.
    """
    g = geometry or backbone.geometry
    backbone.check_geometry(g)
    known = list(backbone.token_embeddings())
    for p in prompts:
        check_prompt_tokens(p, known)
    sampler = sampler or default_sampler(backbone)
    if sampler not in SAMPLERS:
        raise SetseqError(f"the sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}.")
    own = getattr(backbone, "pipeline_sampler", None) if sampler == "scheduler" else None  # the folder's
    if sampler == "scheduler" and own is None:
        raise SetseqError(
            f"{backbone.name!r} has no scheduler of its own (only a diffusers model folder's scheduler/ "
            f"gives one); sample it with --sampler euler."
        )
    steps = steps or (own.steps if own else backbone.sampling.steps)
    scale = (own.guidance if own else backbone.sampling.guidance) if guidance is None else guidance
    scale_2 = scale if guidance_2 is None else guidance_2
    boundary = _boundary(backbone)
    if guidance_2 is not None and boundary is None:
        raise SetseqError(
            f"--guidance-2 sets the guidance of a low-noise expert (Wan 2.2 T2V-A14B); {backbone.name!r} has one "
            f"transformer, so leave it out and use --guidance."
        )
    lo, hi = backbone.sampling.guidance_interval if guidance_interval is None else guidance_interval
    if not 0.0 <= lo < hi <= 1.0:
        raise SetseqError(f"the guidance interval must satisfy 0 <= lo < hi <= 1, got ({lo}, {hi}).")
    sc = backbone.supports_self_conditioning if self_condition is None else self_condition
    if own is not None and (init is not None or start != 1.0 or sc):
        raise SetseqError(
            "init videos (SDEdit) and self-conditioning run with the Euler sampler only; pass --sampler euler."
        )
    backbone.transformer.eval()
    device = next(iter(backbone.transformer.parameters())).device
    noise = initial_noise(backbone, len(prompts), g, seed).to(device)
    if init is not None:
        if len(init) != len(prompts):
            raise SetseqError(f"{len(init)} init videos for {len(prompts)} prompts; give one per prompt.")
        if not 0.0 < start <= 1.0:
            raise SetseqError(f"the start noise level must lie in (0, 1], got {start}.")
        noise = flow.interpolate(
            backbone.encode_video(init.to(device)), noise, torch.full((len(init),), start, device=device)
        )
    elif start != 1.0:
        raise SetseqError("a start noise level below 1 needs init videos to noise.")
    guided = scale != 1.0 or (boundary is not None and scale_2 != 1.0)
    cond = backbone.encode_text(prompts)
    both = Text.cat([cond, backbone.encode_text([negative] * len(prompts))]) if guided else cond

    every_step = (lo, hi) == (0.0, 1.0)  # then no step needs its t read back from the device
    patch_shift = backbone.sampling.patch_shift if patch_shift is None else patch_shift
    if patch_shift < 0:
        raise SetseqError(f"the patch shift is a number of pixels, 0 or more, got {patch_shift}.")
    if patch_shift > 1 and not getattr(backbone, "supports_patch_shift", False):
        raise SetseqError(
            f"{backbone.name!r} cannot move its patch grid (a pixel-space model such as the toy can; a latent "
            f"model's VAE hides its grid); leave --patch-shift out."
        )
    if patch_shift > 1:  # one offset a step, shared by the guided halves; the Euler schedule's last step averages
        final_t = float(flow.schedule(steps, backbone.sampling.shift, "cpu", start)[-2]) if own is None else 0.0
        model = shifting(backbone.velocity, patch_shift, seed, final_t)
    else:
        model = backbone.velocity

    def velocity(x, t, self_cond):
        # a step's samples share one t; a two-expert model guides its low-noise steps by guidance_2
        w = scale if boundary is None or float(t[0]) >= boundary else scale_2
        if w == 1.0 or not (every_step or lo < float(t[0]) <= hi):
            return model(x, t, cond, self_cond)
        sc2 = None if self_cond is None else torch.cat([self_cond, self_cond])
        v_c, v_u = model(torch.cat([x, x]), torch.cat([t, t]), both, sc2).chunk(2)
        return flow.guide(v_c, v_u, w)

    bar = tqdm(total=steps, desc="sampling", leave=False, disable=not progress)
    if own is not None:
        scheduler = own.scheduler(steps, backbone.latent_shape(g), device)
        bar.total = len(scheduler.timesteps)
        latents = flow.scheduler_sample(velocity, noise, scheduler, callback=lambda i: bar.update())
    else:
        latents = flow.euler_sample(
            velocity, noise, steps, backbone.sampling.shift, sc, callback=lambda i: bar.update(), start=start
        )
    bar.close()
    return latents


def generate(backbone: Backbone, prompts: list[str], **options) -> torch.Tensor:
    """Sample one clip per prompt and decode it.

    Args:
        backbone, prompts, options: as `sample` (geometry, steps, guidance, guidance_2,
            guidance_interval, seed, negative, self_condition, progress, init, start, sampler).

    Returns:
        (B, F, C, H, W) videos in [-1, 1].

    Raises:
        SetseqError: as `sample`.
    """
    return backbone.decode_latents(sample(backbone, prompts, **options))


def write_sample(
    backbone: Backbone, prompt: str, path: str | Path, *, geometry: Geometry, seed: int, write: bool = True
) -> None:
    """Sample one clip of `prompt` and write it to `path` (.mp4, .webm, .gif), e.g. a validation
    sample during training. Leaves the transformer in eval mode.

    Args:
        write: False samples without writing: in a sharded run every process takes part in the
            sampling and only the main one writes.
    """
    from setseq.video import write_video

    video = generate(backbone, [prompt], geometry=geometry, seed=seed)[0]  # (F, C, H, W)
    if write:
        write_video(path, video, geometry.fps)
