"""`setseq toy`: tools for the embedded toy world and base model (pretrain, eval, examples)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import TYPE_CHECKING

from setseq.cli.options import PATCH_SHIFT_HELP, PIXELS, interval
from setseq.errors import SetseqError

if TYPE_CHECKING:
    from setseq.toylab.pretrain import PretrainConfig


def add_parser(sub) -> None:
    """The `toy` command and its tools."""
    p = sub.add_parser(
        "toy",
        help="the embedded toy world and base model: pretrain, evaluate, examples",
        description="Tools for the embedded default base model.",
    )
    tsub = p.add_subparsers(dest="toy_command", required=True, metavar="TOOL")
    _pretrain_parser(tsub)
    _eval_parser(tsub)
    ex = tsub.add_parser("examples", help="render the example concept videos, their prompt files and masks")
    ex.add_argument("--out", help="folder (default: the package's examples folder)")
    ex.set_defaults(func=cmd_toy_examples)


def _pretrain_parser(tsub) -> None:
    """`toy pretrain`: where it writes, which preset and recipe, the optimiser, how the run goes."""
    pre = tsub.add_parser("pretrain", help="pretrain the toy DiT from scratch on the toy world (resumable)")
    pre.add_argument("--out", required=True, help="folder for the checkpoint, log and MODEL.safetensors")
    pre.add_argument("--model", default="toy", help="architecture preset: toy, toy-v2 or toy-tiny (default: toy)")
    from setseq.toylab.plans import PLANS
    from setseq.toylab.pretrain import RECIPES, PretrainConfig

    d = PretrainConfig()  # the help states the defaults the run will use
    pre.add_argument(
        "--recipe",
        choices=list(RECIPES),
        default="defaults",
        help="a named run of the shipped weights' curriculum, in order: defaults (from scratch), continuation, "
        "motion-focus, consolidation, camera-focus, camera-consolidation, each with --init the previous run's "
        "weights; the flags below override it (docs/toy-model.md)",
    )
    pre.add_argument("--steps", type=int, help=f"optimiser steps (default {d.steps})")
    pre.add_argument("--batch-size", type=int, help=f"clips per step (default {d.batch_size})")
    pre.add_argument("--lr", type=float, help=f"peak learning rate (default {d.lr:g}, cosine decay)")
    pre.add_argument("--seed", type=int, help=f"random seed (default {d.seed})")
    _pretrain_model_args(pre, d)
    pre.add_argument(
        "--init", help="start from this weights file (e.g. the shipped toy.safetensors) instead of from scratch"
    )
    pre.add_argument("--resume", action="store_true", help="continue from OUT/ckpt.pt")
    pre.add_argument(
        "--plan",
        choices=list(PLANS),
        help="run a whole curriculum (every recipe phase in OUT/<i>-<phase>/), resuming where it stopped; "
        "v2: the 11.7 M-parameter base (docs/toy-model.md)",
    )
    pre.add_argument("--device", help="where to train: cpu, cuda, cuda:1, ... (default: a GPU when there is one)")
    pre.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes rendering clips beside the training (default 0; on a GPU use several, "
        "the rendering sets the pace). The result does not depend on it",
    )
    pre.add_argument(
        "--compile",
        action="store_true",
        help="run the transformer through torch.compile: about 1.3 x faster steps on a CPU with bf16 units "
        "after a few minutes of compiling (needs a C++ compiler)",
    )
    pre.set_defaults(func=cmd_toy_pretrain)


def _pretrain_model_args(pre: argparse.ArgumentParser, d: PretrainConfig) -> None:
    """What `toy pretrain` learns and how: the architecture, the loss and its weighting, the clips and timesteps."""
    pre.add_argument(
        "--prediction",
        choices=["velocity", "x0"],
        help="what the output layer predicts (default: the preset's; toy: x0)",
    )
    pre.add_argument("--patch", type=int, help="spatial patch size (default: the preset's; toy: 4)")
    pre.add_argument("--dim", type=int, help="transformer width (default: the preset's; toy: 128)")
    pre.add_argument("--depth", type=int, help="transformer blocks (default: the preset's; toy: 6)")
    pre.add_argument("--heads", type=int, help="attention heads (default: the preset's; toy: 4)")
    pre.add_argument(
        "--loss",
        choices=["velocity", "x0"],
        help="loss on the velocity or on the implied clean clip (default: on what the model predicts)",
    )
    pre.add_argument("--warmup", type=int, help=f"learning-rate warm-up steps (default {d.warmup})")
    pre.add_argument("--frame-prob", type=float, help=f"share of steps on single frames (default {d.frame_prob})")
    pre.add_argument(
        "--frame-batch-size", type=int, help=f"frames per single-frame step (default {d.frame_batch_size})"
    )
    pre.add_argument(
        "--timestep-shift",
        type=float,
        help="shift training timesteps towards noise, t -> s t / (1 + (s - 1) t), where words alone decide "
        f"a path (default {d.timestep_shift:g}: none)",
    )
    pre.add_argument(
        "--frozen-words",
        action="store_true",
        default=None,
        help="a fixed, never-trained word table in the text encoder, as real models read prompts through a "
        "frozen encoder (default: the preset's; the shipped weights have none)",
    )
    pre.add_argument(
        "--refine",
        type=int,
        help="hidden channels of a 3 x 3 convolutional head on the output, which smooths the patch seams "
        "(default: none); continuing weights without one adds it",
    )
    pre.add_argument(
        "--foreground-weight", type=float, help="extra loss weight on the object's pixels: 1 + W (default 0)"
    )


def _eval_parser(tsub) -> None:
    ev = tsub.add_parser("eval", help="attribute accuracy of a base model on held-out captions")
    ev.add_argument("--base", default="toy", help="base model (default: toy)")
    ev.add_argument("--weights", help="a weights file from `setseq toy pretrain` instead of the shipped one")
    ev.add_argument("-n", type=int, help="number of held-out captions (default 100; 32 clips with --motion-words)")
    ev.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    ev.add_argument("--guidance", type=float, help="guidance (default: the model's)")
    ev.add_argument(
        "--guidance-interval",
        type=interval,
        metavar="LO,HI",
        help="guide only at noise levels in (LO, HI], 1 = pure noise (default 0,1: every step)",
    )
    ev.add_argument("--patch-shift", type=PIXELS, metavar="PIXELS", help=PATCH_SHIFT_HELP)
    ev.add_argument("--json", help="also write the results to this JSON file")
    ev.add_argument(
        "--frames",
        metavar="PNG",
        help="also write a frame strip of the first four held-out captions, each sample under its rendered truth",
    )
    ev.add_argument(
        "--motion-words",
        action="store_true",
        help="instead: whether the model reads motion words; moving sprites noised to --start are denoised "
        "under their caption, the opposite direction's, and no motion words (-n clips, default 32)",
    )
    ev.add_argument("--start", type=float, default=0.7, help="noise level for --motion-words, in (0, 1] (default 0.7)")
    ev.add_argument(
        "--probe",
        action="store_true",
        help="instead: the one-step direction and camera probes logged while pretraining; the clean estimate "
        "of sprites moving (or filmed by a moving camera) noised to t = 0.99, 0.9, 0.7 under their caption and "
        "the opposite one (-n clips, default 16)",
    )
    ev.set_defaults(func=cmd_toy_eval)


def cmd_toy_pretrain(a: argparse.Namespace) -> int:
    """Pretrain the toy DiT with the flags over PretrainConfig, or run a whole plan."""
    from setseq.toylab.plans import pretrain_plan
    from setseq.toylab.pretrain import RECIPES, PretrainConfig, pretrain

    if a.plan:
        given = [f for f in ("steps", "batch_size", "lr", "init", "dim", "depth", "heads") if getattr(a, f) is not None]
        if given or a.recipe != "defaults":
            raise SetseqError(
                f"--plan sets every phase's settings; leave out --recipe and {', '.join(given) or 'the rest'}."
            )
        print(f"wrote {pretrain_plan(a.plan, a.out, a.model, device=a.device, workers=a.workers, compile=a.compile)}")
        return 0

    cfg = PretrainConfig(model=a.model, **RECIPES[a.recipe])
    for name in (
        "steps",
        "batch_size",
        "lr",
        "seed",
        "prediction",
        "loss",
        "warmup",
        "frame_prob",
        "frame_batch_size",
        "foreground_weight",
        "init",
        "patch",
        "dim",
        "depth",
        "heads",
        "timestep_shift",
        "frozen_words",
        "refine",
    ):
        if getattr(a, name) is not None:
            setattr(cfg, name, getattr(a, name))
    from setseq.backbones.toy import PRESETS

    if a.model not in PRESETS:
        raise SetseqError(f"unknown model preset {a.model!r}; use one of {', '.join(PRESETS)}.")
    if a.recipe != "defaults" and cfg.init is None and not a.resume:
        raise SetseqError(f"the {a.recipe} recipe continues earlier weights; give them with --init.")
    print(f"wrote {pretrain(a.out, cfg, resume=a.resume, device=a.device, workers=a.workers, compile=a.compile)}")
    return 0


def cmd_toy_eval(a: argparse.Namespace) -> int:
    """Score a toy base: attribute accuracy, or with --motion-words / --probe its reading of motion words."""
    from setseq.backbones import load_backbone
    from setseq.toylab.evaluate import (
        GRID_TOLERANCE,
        attribute_accuracy,
        camera_probe,
        direction_probe,
        motion_words,
        sample_strip,
    )

    n = a.n if a.n is not None else (32 if a.motion_words else 16 if a.probe else 100)
    if a.probe and n % 4:
        raise SetseqError(f"-n for --probe is a multiple of 4 (one sprite per direction), got {n}.")
    if n < 1:
        raise SetseqError(f"-n must be at least 1, got {n}.")
    if a.motion_words and not 0.0 < a.start <= 1.0:
        raise SetseqError(f"--start is a noise level in (0, 1], got {a.start:g}.")
    if a.weights:
        from setseq.backbones.toy import load_file_weights

        bb = load_file_weights(a.weights)
    else:
        bb = load_backbone(a.base)
    if a.patch_shift is not None:
        bb.sampling = dataclasses.replace(bb.sampling, patch_shift=a.patch_shift)
    if a.probe:
        ts = (0.99, 0.9, 0.7)
        r = {"probes": [direction_probe(bb, n=n, t=t) for t in ts], "camera": [camera_probe(bb, n=n, t=t) for t in ts]}
        print(f"{n} moving sprites; speed of the clean estimate along the captioned way, pixels a frame:")
        print(f"{'noise t':<8} {'truth':>6} {'own':>6} {'opposite':>9} {'follows':>8}")
        for p in r["probes"]:
            print(f"{p['t']:<8g} {p['truth']:>6.2f} {p['own']:>6.2f} {p['opposite']:>9.2f} {p['follows']:>8.2f}")
        print(f"{n} sprites under pans and zooms; the camera move of the clean estimate the captioned way")
        print("(pans: frame widths; zooms: log ratio):")
        print(f"{'noise t':<8} {'move':<5} {'truth':>6} {'own':>6} {'opposite':>9} {'follows':>8}")
        for c in r["camera"]:
            for kind in ("pan", "zoom"):
                p = c[kind]
                print(
                    f"{c['t']:<8g} {kind:<5} {p['truth']:>6.2f} {p['own']:>6.2f} {p['opposite']:>9.2f} "
                    f"{p['follows']:>8.2f}"
                )
    elif a.motion_words:
        r = motion_words(bb, n=n, start=a.start, steps=a.steps, guidance=a.guidance)
        print(f"{n} moving sprites noised to t = {a.start:g}, read back after denoising under each caption:")
        print(f"{'caption':<16} {'true way':>9} {'caption says':>13} {'still':>6}")
        for name, row in r["rows"].items():
            said = "-" if row["captioned"] is None else f"{row['captioned']:.0%}"
            print(f"{name:<16} {row['true']:>9.0%} {said:>13} {row['still']:>6.0%}")
    else:
        r = attribute_accuracy(bb, n=n, steps=a.steps, guidance=a.guidance, guidance_interval=a.guidance_interval)
        for k, v in r["accuracy"].items():
            print(f"{k:<12} {v:.1%}")
        print(f"{'mean':<12} {r['mean']:.1%}  over {n} held-out captions")
        print("camera by move  " + ", ".join(f"{k} {v:.0%}" for k, v in r["by_camera"].items()))
        gr = r["grid"]
        print(
            f"patch grid   median {gr['median']:.2f} (rendered truth {gr['truth_median']:.2f}); "
            f"sharp (within {GRID_TOLERANCE:g} x the truth's) {gr['sharp']:.0%}"
        )
        for attr, rows in r["confusion"].items():
            print(f"{attr} in the caption -> read from the clip:")
            for truth, found in sorted(rows.items()):
                counts = ", ".join(f"{k} {v}" for k, v in sorted(found.items(), key=lambda kv: -kv[1]))
                print(f"  {truth:<10} -> {counts}")
    if a.frames:
        sample_strip(bb, a.frames, steps=a.steps, guidance=a.guidance, guidance_interval=a.guidance_interval)
        print(f"wrote {a.frames}")
    if a.json:
        from setseq.fileio import atomic_path

        with atomic_path(a.json) as tmp:
            tmp.write_text(json.dumps(r, indent=1))
    return 0


def cmd_toy_examples(a: argparse.Namespace) -> int:
    """Render the example concepts."""
    from setseq.toylab.examples import EXAMPLES_DIR, write_examples

    for p in write_examples(a.out or EXAMPLES_DIR):
        print(f"wrote {p}, {p.with_suffix('.txt').name} and {p.stem}.mask{p.suffix}")
    return 0
