"""`setseq export`: a concept file as a standard LoRA for diffusers or ComfyUI."""

from __future__ import annotations

import argparse

from setseq.cli.options import SCALE, parse_numbers


def add_parser(sub) -> None:
    """The `export` command and its flags."""
    p = sub.add_parser(
        "export",
        help="write a concept as a standard LoRA for diffusers or ComfyUI",
        description="Fold a concept file's identity basis, identity and motion coefficients and "
        "scales into a standard rank-R LoRA (up = s A, down = s_id B_id + w B_mo).",
    )
    p.add_argument("concept", metavar="CONCEPT", help="concept file from `setseq train`")
    p.add_argument(
        "--format",
        required=True,
        choices=["comfyui", "diffusers"],
        help="comfyui (ComfyUI's native key names: Wan, LTX-Video, LTX-2, HunyuanVideo 1.5) or diffusers "
        "(PEFT key names, for load_lora_weights; any base)",
    )
    p.add_argument(
        "--part",
        default="full",
        choices=["full", "identity"],
        help="full (appearance and motion, default) or identity (the stage-1 appearance only)",
    )
    p.add_argument("--identity-scale", type=SCALE, default=1.0, help="scale of the identity coefficients (default 1)")
    p.add_argument("--motion-scale", type=SCALE, default=1.0, help="scale of every concept's motion (default 1)")
    p.add_argument("--rank-weights", help="R comma-separated weights on the identity basis components, as in generate")
    p.add_argument(
        "--out",
        required=True,
        help="output LoRA file, NAME.safetensors (a Wan 2.2 T2V-A14B concept: NAME_high_noise.safetensors "
        "and NAME_low_noise.safetensors, one per expert)",
    )
    p.set_defaults(func=cmd_export)


def cmd_export(a: argparse.Namespace) -> int:
    """Write the concept file as a standard LoRA in the format asked for."""
    from setseq import concept as concept_io
    from setseq.export import export

    cs = concept_io.load(a.concept)
    weights = concept_io.rank_weights(cs, parse_numbers(a.rank_weights, "--rank-weights")) if a.rank_weights else None
    paths = export(
        cs,
        a.out,
        a.format,
        part=a.part,
        identity_scale=a.identity_scale,
        motion_scale=a.motion_scale,
        rank_weights=weights,
    )
    for path in paths:
        print(f"wrote {path}")
    return 0
