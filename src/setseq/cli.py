"""The `setseq` command line. Bad input: one sentence on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from setseq.errors import SetseqError

EXIT_USAGE = 2


# ============================================================================================
# train
# ============================================================================================

def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="learn a dynamic concept from a video (stage 1 then stage 2)",
                       description="Learn one or more dynamic concepts from videos into LoRA weights.")
    p.add_argument("videos", nargs="+", metavar="VIDEO",
                   help="video file (mp4, webm, mov, gif, ...) or a folder of frames; several for a joint concept set")
    p.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                   help="static prompt with the identity token, e.g. 'a [v] dancer on a bridge.' "
                        "(one per video, in order; tokens [v1], [v2], ... when there are several videos); "
                        "default: read from VIDEO's .txt")
    p.add_argument("--motion-prompt", action="append", default=[], metavar="TEXT",
                   help="dynamic prompt with the motion token, e.g. 'he performs [u] dancing motion.' "
                        "(one per video; [u1], [u2], ... for several)")
    p.add_argument("--base", default="toy", help="base model: 'toy' (embedded default), 'toy-tiny', or a local path (default: toy)")
    p.add_argument("--out", help="output concept file NAME.safetensors (default: VIDEO's name)")
    p.add_argument("--method", default=None, help="setseq (default), lora, two-stage, dreammix, textual-inversion")
    p.add_argument("--config", help="TOML file overriding any training setting (see README)")
    p.add_argument("--rank", type=int, help="LoRA rank R (default 8)")
    p.add_argument("--alpha", type=float, help="LoRA alpha; scale = alpha / rank (default: scale 1)")
    p.add_argument("--stage1-steps", type=int, help="steps of the first stage (paper: 600)")
    p.add_argument("--stage2-steps", type=int, help="steps of the second stage (paper: 900)")
    p.add_argument("--batch-size", type=int, help="samples per optimiser step (paper: 8)")
    p.add_argument("--micro-batch", type=int, help="samples per forward pass; gradients accumulate (memory)")
    p.add_argument("--lr", type=float, help="learning rate (paper: 1e-4, constant)")
    p.add_argument("--token-lr", type=float, help="also train the concept-token embeddings at this rate (paper: 1e-5)")
    p.add_argument("--no-prior", action="store_true", help="turn prior preservation off")
    p.add_argument("--prior-videos", type=int, help="number of prior-preservation videos (default 8)")
    p.add_argument("--frames", type=int, help="frames per clip (default: the base model's)")
    p.add_argument("--height", type=int, help="clip height (default: the base model's)")
    p.add_argument("--width", type=int, help="clip width (default: the base model's)")
    p.add_argument("--fps", type=float, help="frame rate the video is resampled to (default: the base model's)")
    p.add_argument("--seed", type=int, help="random seed; the same seed repeats a CPU run exactly (default 0)")
    p.add_argument("--resume", action="store_true", help="continue from NAME.ckpt, the last checkpoint")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 50)")
    p.add_argument("--validate-every", type=int, help="write a sample video to NAME.samples/ every N steps")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def _config_from_args(a):
    from setseq.config import load_config

    cfg = load_config(a.config, a.method)
    if a.rank is not None:
        cfg.lora.rank = a.rank
    if a.alpha is not None:
        cfg.lora.alpha = a.alpha
    for i, steps in enumerate((a.stage1_steps, a.stage2_steps)):
        if steps is not None:
            if i >= len(cfg.stages):
                raise SetseqError(f"method {cfg.method!r} has one stage; use --stage1-steps only.")
            cfg.stages[i].steps = steps
    for name in ("batch_size", "micro_batch", "lr", "token_lr"):
        if getattr(a, name) is not None:
            setattr(cfg.optim, name, getattr(a, name))
    if a.no_prior:
        cfg.reg.prior_preservation = False
    if a.prior_videos is not None:
        cfg.reg.prior_videos = a.prior_videos
    for name in ("seed", "checkpoint_every", "validate_every"):
        if getattr(a, name) is not None:
            setattr(cfg, name, getattr(a, name))
    cfg.validate()
    return cfg


def _concept_name(path: Path, taken: set[str]) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem) or "concept"
    base, i = name, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def cmd_train(a) -> int:
    from dataclasses import replace

    from setseq import data
    from setseq.backbones import load_backbone
    from setseq.train import ConceptSpec, Trainer

    videos = [Path(v) for v in a.videos]
    for v in videos:
        if not v.exists():
            raise SetseqError(f"video {str(v)!r} does not exist.")
    n = len(videos)
    for flag, given in (("--prompt", a.prompt), ("--motion-prompt", a.motion_prompt)):
        if given and len(given) != n:
            raise SetseqError(f"{flag} was given {len(given)} times for {n} video(s); give it once per video, in order.")
    out = Path(a.out) if a.out else videos[0].with_suffix(".safetensors")
    if out.suffix != ".safetensors":
        raise SetseqError(f"the output must be a .safetensors file, got {str(out)!r}.")
    if out.parent and not out.parent.exists():
        raise SetseqError(f"the output folder {str(out.parent)!r} does not exist.")
    cfg = _config_from_args(a)
    backbone = load_backbone(a.base)
    g = backbone.geometry
    g = replace(g, frames=a.frames or g.frames, height=a.height or g.height, width=a.width or g.width, fps=a.fps or g.fps)
    backbone.check_geometry(g)
    needs_clip = any(s.data != "frames" for s in cfg.stages)
    taken: set[str] = set()
    specs = []
    for i, v in enumerate(videos):
        txt_static, txt_motion = data.read_prompt_file(v)
        static = a.prompt[i] if a.prompt else txt_static
        motion = a.motion_prompt[i] if a.motion_prompt else txt_motion
        if not static:
            raise SetseqError(f"no prompt for {str(v)!r}: pass --prompt 'a [v] ...' or write {v.with_suffix('.txt').name} beside it.")
        video = data.load_video(v, fps=g.fps, size=(g.height, g.width), min_frames=g.frames if needs_clip else 1)
        suffix = "" if n == 1 else str(i + 1)
        specs.append(ConceptSpec(_concept_name(v, taken), video.frames, static, motion,
                                 identity_token=f"[v{suffix}]", motion_token=f"[u{suffix}]", source=str(v)))
    trainer = Trainer(backbone, specs, cfg, out, geometry=g, progress=not a.quiet)
    trainer.run(resume=a.resume)
    print(f"wrote {out}" + (f" and {trainer.stage1_path}" if len(cfg.stages) > 1 else ""))
    return 0


# ============================================================================================
# generate
# ============================================================================================

def _parse_scales(text: str | None) -> dict[str, float]:
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise SetseqError(f"--scale takes name=number pairs separated by commas, got {item!r}.") from None
        if not sep:
            raise SetseqError(f"--scale takes name=number pairs separated by commas, got {item!r}.")
    return out


def _generate_parser(sub) -> None:
    p = sub.add_parser("generate", help="generate a video with a trained concept",
                       description="Generate a video from a prompt, with a concept file applied (or the base alone).")
    p.add_argument("concept", nargs="?", help="concept file from `setseq train` (omit for the base model alone)")
    p.add_argument("--prompt", required=True, help="text prompt; use the concept's tokens, e.g. 'a [v] on a red background. it moves in [u] motion.'")
    p.add_argument("--out", required=True, help="output video: .mp4, .webm or .gif")
    p.add_argument("--base", help="base model (default: the one the concept was trained on)")
    p.add_argument("--identity-scale", type=float, default=1.0, help="scale of the identity coefficients (default 1)")
    p.add_argument("--motion-scale", type=float, default=1.0, help="scale of every concept's motion residual (default 1)")
    p.add_argument("--scale", help="per-concept motion scales, e.g. 'dancer=1.0,waves=0.5' (names from `setseq info`)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the base model's)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance (paper: 8; default: the base model's)")
    p.add_argument("--negative", default="", help="negative prompt for guidance (default empty)")
    p.add_argument("--frames", type=int, help="frames to generate (default: the concept's)")
    p.add_argument("--upscale", type=int, help="integer upscaling of the written video (default: to at least 256 px)")
    p.add_argument("--preview", action="store_true", help="also write a GIF preview beside the video")
    p.set_defaults(func=cmd_generate)


def cmd_generate(a) -> int:
    from dataclasses import replace

    from setseq import concept as concept_io
    from setseq import data, lora
    from setseq.backbones import load_backbone
    from setseq.generate import generate

    out = Path(a.out)
    if out.suffix.lower() not in (".mp4", ".webm", ".gif"):
        raise SetseqError(f"the output must end in .mp4, .webm or .gif, got {str(out)!r}.")
    if a.steps is not None and a.steps < 1:
        raise SetseqError(f"--steps must be at least 1, got {a.steps}.")
    cs = concept_io.load(a.concept) if a.concept else None
    backbone = load_backbone(a.base or (cs.meta["base"]["name"] if cs else "toy"))
    g = backbone.geometry
    if cs is not None:
        concept_io.apply(cs, backbone, source=repr(a.concept))
        g = replace(g, **cs.meta.get("geometry", {}))
        lora.set_scales(backbone.transformer, identity=a.identity_scale, motion=a.motion_scale)
        if a.scale:
            lora.set_scales(backbone.transformer, motion=_parse_scales(a.scale))
    if a.frames:
        g = replace(g, frames=a.frames)
    video = generate(backbone, [a.prompt], geometry=g, steps=a.steps, guidance=a.guidance, seed=a.seed,
                     negative=a.negative, progress=True)[0]
    up = a.upscale or max(1, 256 // min(g.height, g.width))
    data.write_video(out, video, g.fps, scale=up)
    if a.preview and out.suffix.lower() != ".gif":
        data.write_video(out.with_suffix(".gif"), video, g.fps, scale=up)
    print(f"wrote {out}")
    return 0


# ============================================================================================
# info
# ============================================================================================

def _info_parser(sub) -> None:
    p = sub.add_parser("info", help="describe a concept file", description="Print what a concept file holds.")
    p.add_argument("concept", help="concept file (.safetensors)")
    p.add_argument("--json", action="store_true", help="print the metadata as JSON")
    p.set_defaults(func=cmd_info)


def cmd_info(a) -> int:
    from setseq import concept as concept_io

    cs = concept_io.load(a.concept)
    m = cs.meta
    if a.json:
        print(json.dumps({k: v for k, v in m.items() if k != "losses"}, indent=2))
        return 0
    print(f"concept set  {a.concept}")
    print(f"method       {m.get('method')} (stage: {m.get('stage')})")
    print(f"base         {m['base']['name']} (weights {m['base']['fingerprint']})")
    print(f"rank         {m.get('rank')}, {len(cs.modules())} adapted modules")
    g = m.get("geometry", {})
    if g:
        print(f"geometry     {g.get('frames')} frames, {g.get('height')}x{g.get('width')} at {g.get('fps')} fps")
    for c in cs.concepts:
        print(f"concept      {c['name']}: {c['identity_token']} {c['motion_token']}  (from {c.get('video') or '?'})")
        print(f"  prompt         {c['prompt']}")
        if c.get("motion_prompt"):
            print(f"  motion prompt  {c['motion_prompt']}")
    for stage, losses in m.get("losses", {}).items():
        if losses:
            print(f"loss         {stage}: {losses[0]:.4f} -> {losses[-1]:.4f} over {len(losses)} steps")
    return 0


# ============================================================================================
# demo and toy
# ============================================================================================

def _demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="run the whole method on the embedded base and write a report",
                       description="Learn a shipped example concept on the embedded toy base, generate its "
                                   "reconstruction, edits and a restyle next to the base model, and write "
                                   "report.html, metrics.json, the concept file and the videos into --out.")
    p.add_argument("--out", default="demo-out", help="output folder (default: demo-out)")
    p.add_argument("--concept", default="sprite", help="example concept: sprite, waves or flicker (default: sprite)")
    p.add_argument("--quick", action="store_true", help="a short run (tests use it): a few minutes on 2 CPU cores")
    p.add_argument("--base", default="toy", help="base model (default: toy)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(a) -> int:
    from setseq.demo import run_demo

    m = run_demo(a.out, concept=a.concept, quick=a.quick, base=a.base, seed=a.seed)
    s = m["summary"]
    print(f"identity kept: concept {s['concept']['identity_kept']:.0%}, base {s['base']['identity_kept']:.0%}; "
          f"edits followed: concept {s['concept']['edit_followed']:.0%}, base {s['base']['edit_followed']:.0%}")
    print(f"open {Path(a.out) / 'report.html'}")
    return 0


def _toy_parser(sub) -> None:
    p = sub.add_parser("toy", help="the embedded toy world and base model: pretrain, evaluate, examples",
                       description="Tools for the embedded default base model.")
    tsub = p.add_subparsers(dest="toy_command", required=True, metavar="TOOL")
    pre = tsub.add_parser("pretrain", help="pretrain the toy DiT from scratch on the toy world (resumable)")
    pre.add_argument("--out", required=True, help="folder for the checkpoint, log and MODEL.safetensors")
    pre.add_argument("--model", default="toy", help="architecture preset: toy or toy-tiny (default: toy)")
    pre.add_argument("--steps", type=int, help="optimiser steps (default 2400)")
    pre.add_argument("--batch-size", type=int, help="clips per step (default 32)")
    pre.add_argument("--lr", type=float, help="peak learning rate (default 8e-4, cosine decay)")
    pre.add_argument("--seed", type=int, help="random seed (default 0)")
    pre.add_argument("--resume", action="store_true", help="continue from OUT/ckpt.pt")
    pre.set_defaults(func=cmd_toy_pretrain)
    ev = tsub.add_parser("eval", help="attribute accuracy of a base model on held-out captions")
    ev.add_argument("--base", default="toy", help="base model (default: toy)")
    ev.add_argument("--weights", help="a weights file from `setseq toy pretrain` instead of the shipped one")
    ev.add_argument("-n", type=int, default=100, help="number of held-out captions (default 100)")
    ev.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    ev.add_argument("--guidance", type=float, help="guidance (default: the model's)")
    ev.add_argument("--json", help="also write the results to this JSON file")
    ev.set_defaults(func=cmd_toy_eval)
    ex = tsub.add_parser("examples", help="render the example concept videos and their prompt files")
    ex.add_argument("--out", help="folder (default: the package's examples folder)")
    ex.set_defaults(func=cmd_toy_examples)


def cmd_toy_pretrain(a) -> int:
    from setseq.toy.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(model=a.model)
    for name in ("steps", "batch_size", "lr", "seed"):
        if getattr(a, name) is not None:
            setattr(cfg, name, getattr(a, name))
    if a.model not in ("toy", "toy-tiny"):
        raise SetseqError(f"unknown model preset {a.model!r}; use toy or toy-tiny.")
    print(f"wrote {pretrain(a.out, cfg, resume=a.resume)}")
    return 0


def cmd_toy_eval(a) -> int:
    from setseq.backbones import load_backbone
    from setseq.toy.evaluate import attribute_accuracy

    if a.weights:
        from setseq.backbones.toy import load_file_weights

        bb = load_file_weights(a.weights)
    else:
        bb = load_backbone(a.base)
    r = attribute_accuracy(bb, n=a.n, steps=a.steps, guidance=a.guidance)
    for k, v in r["accuracy"].items():
        print(f"{k:<12} {v:.1%}")
    print(f"{'mean':<12} {r['mean']:.1%}  over {a.n} held-out captions")
    if a.json:
        from setseq.fileio import atomic_path

        with atomic_path(a.json) as tmp:
            tmp.write_text(json.dumps(r, indent=1))
    return 0


def cmd_toy_examples(a) -> int:
    from setseq.toy.examples import EXAMPLES_DIR, write_examples

    for p in write_examples(a.out or EXAMPLES_DIR):
        print(f"wrote {p} and {p.with_suffix('.txt').name}")
    return 0


# ============================================================================================
# main
# ============================================================================================

def build_parser() -> argparse.ArgumentParser:
    from setseq import __version__

    parser = argparse.ArgumentParser(
        prog="setseq",
        description="Set-and-Sequence: personalise a text-to-video diffusion transformer with a dynamic "
                    "concept (appearance and motion) learned from a single video.")
    parser.add_argument("--version", action="version", version=f"setseq {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _train_parser(sub)
    _generate_parser(sub)
    _info_parser(sub)
    _demo_parser(sub)
    _toy_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except SetseqError as e:
        print(f"setseq: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("setseq: interrupted; `setseq train ... --resume` continues from the last checkpoint.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
