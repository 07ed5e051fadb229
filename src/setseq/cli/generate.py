"""`setseq generate`: a video from a prompt, with a concept file applied (or the base alone)."""

from __future__ import annotations

import argparse
from pathlib import Path

from setseq.cli.options import (
    COUNT,
    GUIDANCE,
    PATCH_SHIFT_HELP,
    PIXELS,
    SCALE,
    SEED,
    device_args,
    device_options,
    interval,
    parse_numbers,
    parse_scales,
)
from setseq.errors import SetseqError
from setseq.fileio import check_writable
from setseq.log import warn

SAMPLERS = ("scheduler", "euler")  # setseq.generate.SAMPLERS, named here so that --help needs no torch


def add_parser(sub) -> None:
    """The `generate` command and its flags."""
    p = sub.add_parser(
        "generate",
        help="generate a video with a trained concept",
        description="Generate a video from a prompt, with a concept file applied (or the base alone).",
    )
    p.add_argument("concept", nargs="?", help="concept file from `setseq train` (omit for the base model alone)")
    p.add_argument(
        "--prompt",
        required=True,
        help="text prompt; use the concept's tokens, e.g. 'a [v] on a red background. it moves in [u] motion.'",
    )
    p.add_argument("--out", required=True, help="output video: .mp4, .webm or .gif")
    p.add_argument("--base", help="base model (default: the one the concept was trained on)")
    device_args(p)
    p.add_argument("--identity-scale", type=SCALE, default=1.0, help="scale of the identity coefficients (default 1)")
    p.add_argument(
        "--motion-scale", type=SCALE, default=1.0, help="scale of every concept's motion residual (default 1)"
    )
    p.add_argument(
        "--scale",
        help="per-concept motion scales by motion token or concept name, e.g. 'u1=1.0,u2=0.5' "
        "(a v/v1 key sets the identity scale, which all concepts of a set share)",
    )
    p.add_argument("--rank-weights", help="R comma-separated weights on the identity basis components (restyling)")
    p.add_argument("--seed", type=SEED, default=0, help="noise seed (default 0)")
    p.add_argument("--steps", type=COUNT, help="sampling steps (default: the base model's)")
    p.add_argument("--guidance", type=GUIDANCE, help="classifier-free guidance (paper: 8; default: the base model's)")
    p.add_argument(
        "--guidance-2",
        type=GUIDANCE,
        help="guidance of the low-noise expert's steps (Wan 2.2 T2V-A14B; diffusers' guidance_scale_2; default: --guidance)",
    )
    p.add_argument(
        "--sampler",
        choices=SAMPLERS,
        help="scheduler: the scheduler the model folder names, stepped as its diffusers pipeline does, with "
        "the pipeline's default steps and guidance; euler: setseq's Euler integrator (default: scheduler for a "
        "model folder, euler for the toy)",
    )
    p.add_argument(
        "--guidance-interval",
        type=interval,
        metavar="LO,HI",
        help="LO,HI: guide only at noise levels in (LO, HI], 1 = pure noise (default: the base model's; toy: 0,1, every step)",
    )
    p.add_argument("--patch-shift", type=PIXELS, metavar="PIXELS", help=PATCH_SHIFT_HELP)
    p.add_argument("--negative", default="", help="negative prompt for guidance (default empty)")
    p.add_argument("--frames", type=COUNT, help="frames to generate (default: the concept's)")
    p.add_argument("--upscale", type=COUNT, help="integer upscaling of the written video (default: to at least 256 px)")
    p.add_argument("--preview", action="store_true", help="also write a GIF preview beside the video")
    p.set_defaults(func=cmd_generate)


def cmd_generate(a: argparse.Namespace) -> int:
    """Generate one video with the concept (or the base alone) at the scales the flags give, and write it."""
    from dataclasses import replace

    from setseq import concept as concept_io
    from setseq import lora
    from setseq.backbones import load_backbone
    from setseq.generate import generate
    from setseq.video import write_video

    out = Path(a.out)
    check_writable(out, *([out.with_suffix(".gif")] if a.preview else []), create=True)  # before any sampling
    if out.suffix.lower() not in (".mp4", ".webm", ".gif"):
        raise SetseqError(f"the output must end in .mp4, .webm or .gif, got {str(out)!r}.")
    if a.steps is not None and a.steps < 1:
        raise SetseqError(f"--steps must be at least 1, got {a.steps}.")
    cs = concept_io.load(a.concept) if a.concept else None
    backbone = load_backbone(a.base or (cs.meta["base"]["name"] if cs else "toy"), **device_options(a))
    g = backbone.geometry
    identity, motion, rank_weights = None, {}, None
    if cs is not None:
        concept_io.apply(cs, backbone, source=repr(a.concept))
        g = replace(g, **cs.meta.get("geometry", {}))
        identity, motion = concept_io.resolve_scales(cs, parse_scales(a.scale))
        if a.rank_weights:
            rank_weights = concept_io.rank_weights(cs, parse_numbers(a.rank_weights, "--rank-weights"))
        tokens = sorted(backbone.token_embeddings())
        if tokens and not any(t in a.prompt for t in tokens):
            warn(
                f"the prompt names none of the concept's tokens ({', '.join(tokens)}): its adapters still "
                "apply, but the text does not call up the concept; e.g. 'a [v] ... it moves in [u] motion.'"
            )
    if a.frames is not None:
        g = replace(g, frames=a.frames)
    backbone.check_geometry(g)  # a concept file's geometry, or --frames, this base cannot sample
    # --identity-scale and --motion-scale for all, then --scale's per-concept motion over them
    with (
        lora.scales(
            backbone.transformer,
            identity=a.identity_scale if identity is None else identity,
            motion=a.motion_scale,
            rank_weights=rank_weights,
        ),
        lora.scales(backbone.transformer, motion=motion),
    ):
        video = generate(
            backbone,
            [a.prompt],
            geometry=g,
            steps=a.steps,
            guidance=a.guidance,
            guidance_2=a.guidance_2,
            guidance_interval=a.guidance_interval,
            patch_shift=a.patch_shift,
            sampler=a.sampler,
            seed=a.seed,
            negative=a.negative,
            progress=True,
        )[0]
    up = a.upscale or max(1, 256 // min(g.height, g.width))
    write_video(out, video, g.fps, scale=up)
    if a.preview and out.suffix.lower() != ".gif":
        write_video(out.with_suffix(".gif"), video, g.fps, scale=up)
    print(f"wrote {out}")
    return 0
