"""Text-to-video sampling with a backbone (and whatever concept set is applied to it)."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from setseq import flow
from setseq.backbones.base import TOKEN, Backbone, Geometry, Text
from setseq.errors import SetseqError


def check_prompt_tokens(prompt: str, known: list[str]) -> None:
    """A bracketed token the model does not know is almost always a typo: say so."""
    unknown = sorted(set(TOKEN.findall(prompt)) - set(known))
    if unknown:
        have = ", ".join(known) if known else "none (no concept loaded)"
        raise SetseqError(f"the prompt uses {', '.join(unknown)}, but the loaded concept tokens are: {have}.")


@torch.no_grad()
def generate(
    backbone: Backbone,
    prompts: list[str],
    *,
    geometry: Geometry | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    guidance_interval: tuple[float, float] | None = None,
    seed: int = 0,
    negative: str = "",
    self_condition: bool | None = None,
    progress: bool = False,
    init: torch.Tensor | None = None,
    start: float = 1.0,
) -> torch.Tensor:
    """Sample one clip per prompt.

    Args:
        backbone: the model, with any concept already applied.
        prompts: text prompts; concept tokens must be known to the backbone.
        geometry: clip geometry (default: the backbone's).
        steps, guidance: Euler steps and classifier-free guidance (default: the backbone's).
        guidance_interval: (lo, hi), the noise levels t in (lo, hi] at which guidance applies;
            the other steps take the conditional velocity alone, one forward pass instead of two
            (Kynkaanniemi et al. 2024: guidance at low noise adds little but artefacts). Default:
            the backbone's; (0, 1) guides every step.
        seed: seeds the starting noise, so the same call gives the same video.
        negative: the unconditional prompt for guidance.
        self_condition: feed x_0 estimates back (default: when the backbone supports it).
        progress: show a progress bar.
        init: optional videos (B, F, C, H, W) in [-1, 1], one per prompt, noised to time `start` and
            denoised from there (SDEdit, Meng et al. 2022): what survives at `start` is kept. With
            init=None sampling starts from pure noise.
        start: the noise level sampling starts from, in (0, 1]; it must be 1 without init.

    Returns:
        (B, F, C, H, W) videos in [-1, 1].

    Raises:
        SetseqError: for unknown concept tokens, a geometry the backbone refuses, init videos that
            do not match the prompts, a start level outside (0, 1] or a guidance interval that is
            not 0 <= lo < hi <= 1.
    """
    g = geometry or backbone.geometry
    backbone.check_geometry(g)
    known = list(backbone.token_embeddings())
    for p in prompts:
        check_prompt_tokens(p, known)
    steps = steps or backbone.sampling.steps
    scale = backbone.sampling.guidance if guidance is None else guidance
    lo, hi = backbone.sampling.guidance_interval if guidance_interval is None else guidance_interval
    if not 0.0 <= lo < hi <= 1.0:
        raise SetseqError(f"the guidance interval must satisfy 0 <= lo < hi <= 1, got ({lo}, {hi}).")
    sc = backbone.supports_self_conditioning if self_condition is None else self_condition
    backbone.transformer.eval()
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((len(prompts), *backbone.latent_shape(g)), generator=gen)
    device = next(iter(backbone.transformer.parameters())).device
    noise = noise.to(device)
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
    cond = backbone.encode_text(prompts)
    both = Text.cat([cond, backbone.encode_text([negative] * len(prompts))]) if scale != 1.0 else cond

    every_step = (lo, hi) == (0.0, 1.0)  # then no step needs its t read back from the device

    def velocity(x, t, self_cond):
        if scale == 1.0 or not (every_step or lo < float(t[0]) <= hi):  # a step's samples share one t
            return backbone.velocity(x, t, cond, self_cond)
        sc2 = None if self_cond is None else torch.cat([self_cond, self_cond])
        v_c, v_u = backbone.velocity(torch.cat([x, x]), torch.cat([t, t]), both, sc2).chunk(2)
        return flow.guide(v_c, v_u, scale)

    bar = tqdm(total=steps, desc="sampling", leave=False, disable=not progress)
    latents = flow.euler_sample(
        velocity, noise, steps, backbone.sampling.shift, sc, callback=lambda i: bar.update(), start=start
    )
    bar.close()
    return backbone.decode_latents(latents)


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
