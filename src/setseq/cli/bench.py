"""`setseq bench`: the paper's ablation and the leakage benchmark on the toy world."""

from __future__ import annotations

import argparse
from pathlib import Path

from setseq.cli.options import COUNT, POSITIVE, parse_seeds
from setseq.errors import SetseqError


def _scale_args(p: argparse.ArgumentParser) -> None:
    """--scale and --step-scale, shared by both benchmarks (read back by `_scales`)."""
    p.add_argument(
        "--scale",
        choices=["paper", "toy"],
        help="train each method with the paper's preset, or moved to the toy base's scale "
        "(rank x 8, lr x 10, prompt dropout x 2, 200 + 550 or 750 steps; config.toy_scale). Default: toy with --base toy, else paper",
    )
    p.add_argument(
        "--step-scale",
        type=POSITIVE,
        help="training steps as a share of the method's at --scale (default 1 at toy scale, 0.25 at the paper's)",
    )


def add_parser(sub) -> None:
    """The `bench` command and its two benchmarks."""
    p = sub.add_parser(
        "bench",
        help="benchmarks: the paper's ablation on the toy world",
        description="Benchmarks that reproduce the paper's tables on the embedded toy world.",
    )
    bsub = p.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    ab = bsub.add_parser(
        "ablation",
        help="train and score LoRA-1, LoRA-8, Two-Stage, Set-and-Sequence, "
        "Textual Inversion and DreamMix on the example concepts",
    )
    ab.add_argument("--out", default="ablation-out", help="output folder (default: ablation-out)")
    ab.add_argument("--base", default="toy", help="base model (default: toy)")
    ab.add_argument("--concepts", default="sprite,waves,flicker", help="example concepts (default: all three)")
    ab.add_argument("--seeds", default="0,1", help="seeds (default: 0,1)")
    _scale_args(ab)
    ab.add_argument("--batch-size", type=COUNT, default=4, help="training batch (default 4)")
    ab.add_argument("--sample-steps", type=COUNT, default=20, help="sampler steps (default 20)")
    ab.add_argument("--quick", action="store_true", help="a smoke run: one concept, one seed, two edits, a few steps")
    ab.set_defaults(func=cmd_bench_ablation)
    lk = bsub.add_parser(
        "leakage",
        help="identity leakage between two composed concepts: without stitched training, "
        "with it, and with it on one shared background",
    )
    lk.add_argument("--out", default="leakage-out", help="output folder (default: leakage-out)")
    lk.add_argument("--base", default="toy", help="base model (default: toy)")
    lk.add_argument("--seeds", default="0", help="seeds (default: 0)")
    _scale_args(lk)
    lk.add_argument("--quick", action="store_true", help="a smoke run with a few steps")
    lk.set_defaults(func=cmd_bench_leakage)


def _scales(a: argparse.Namespace) -> tuple[str, float]:
    """(scale, step_scale) from the options: the toy scale by default on the toy base."""
    from setseq.backbones import PRETRAINED_TOYS

    scale = a.scale or ("toy" if a.base in PRETRAINED_TOYS else "paper")
    return scale, a.step_scale or (1.0 if scale == "toy" else 0.25)


def cmd_bench_ablation(a: argparse.Namespace) -> int:
    """Run the ablation and print its table."""
    from setseq.bench import markdown_table, run_ablation
    from setseq.toy import world

    concepts = [c.strip() for c in a.concepts.split(",") if c.strip()]
    unknown = set(concepts) - set(world.CONCEPTS)
    if unknown:
        raise SetseqError(f"unknown example concept(s) {sorted(unknown)}; choose from {', '.join(world.CONCEPTS)}.")
    seeds = parse_seeds(a.seeds)
    scale, step_scale = _scales(a)
    if a.quick:
        r = run_ablation(
            a.out, concepts[:1], seeds[:1], a.base, step_scale=0.005, batch_size=2, sample_steps=2, edits=2, scale=scale
        )
    else:
        r = run_ablation(a.out, concepts, seeds, a.base, step_scale, a.batch_size, a.sample_steps, scale=scale)
    print(markdown_table(r["summary"]))
    print(f"wrote {Path(a.out) / 'table.md'}, table.csv, scatter.svg and index.html")
    return 0


def cmd_bench_leakage(a: argparse.Namespace) -> int:
    """Run the leakage benchmark and print its table."""
    from setseq.bench import run_leakage

    seeds = parse_seeds(a.seeds)
    scale, step_scale = _scales(a)
    step_scale, steps = (0.003, 2) if a.quick else (step_scale, 20)
    r = run_leakage(a.out, seeds=seeds, base=a.base, step_scale=step_scale, sample_steps=steps, scale=scale)
    print(
        "| training | stitch_prob | own identity | leaked identity | identity when composed | own motion |\n"
        "|---|---|---|---|---|---|"
    )
    for s in r["summary"]:
        print(
            f"| {s['arm']} | {s['stitch_prob']:g} | {s['own_identity']:.3f} | {s['leaked_identity']:.3f} | "
            f"{s['composed_identity']:.3f} | {s['own_motion']:.3f} |"
        )
    print(f"wrote {Path(a.out) / 'leakage.json'}")
    return 0
