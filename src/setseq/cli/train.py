"""`setseq train`: learn one or more dynamic concepts from videos into a concept file."""

from __future__ import annotations

import argparse
from pathlib import Path

from setseq.cli.options import COUNT, DURATION, POSITIVE, SECONDS, SEED, STEPS, device_args, device_options, dropouts
from setseq.config import TrainConfig
from setseq.errors import SetseqError
from setseq.fileio import check_writable


def add_parser(sub) -> None:
    """The `train` command and its flags, in three groups: what to learn, how, and how the run goes."""
    p = sub.add_parser(
        "train",
        help="learn a dynamic concept from a video (stage 1 then stage 2)",
        description="Learn one or more dynamic concepts from videos into LoRA weights.",
    )
    _data_args(p)
    p.add_argument(
        "--base",
        default="toy",
        help="base model: 'toy' (embedded default), 'toy-v2', 'toy-tiny', or a local path (default: toy)",
    )
    p.add_argument("--out", help="output concept file NAME.safetensors (default: VIDEO's name)")
    device_args(p)
    _method_args(p)
    _clip_args(p)
    _run_args(p)
    p.set_defaults(func=cmd_train)


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "videos",
        nargs="*",
        metavar="VIDEO",
        help="video file (mp4, webm, mov, gif, ...) or a folder of frames; several for a joint concept set",
    )
    p.add_argument(
        "--concepts",
        metavar="FILE",
        help="TOML file listing the concepts instead of VIDEO arguments: [[concept]] tables with "
        "video, prompt, motion_prompt and optional name and mask (paths relative to the file)",
    )
    p.add_argument(
        "--prompt",
        action="append",
        default=[],
        metavar="TEXT",
        help="static prompt with the identity token, e.g. 'a [v] dancer on a bridge.' "
        "(one per video, in order; tokens [v1], [v2], ... when there are several videos); "
        "default: read from VIDEO's .txt",
    )
    p.add_argument(
        "--motion-prompt",
        action="append",
        default=[],
        metavar="TEXT",
        help="dynamic prompt with the motion token, e.g. 'he performs [u] dancing motion.' "
        "(one per video; [u1], [u2], ... for several)",
    )
    p.add_argument(
        "--mask",
        action="append",
        default=[],
        metavar="FILE",
        help="foreground mask video (white = subject) or folder of frames, one per video, in order; "
        "default: NAME.mask.mp4 (.webm, .gif, NAME.mask/) beside VIDEO when there is one",
    )


def _method_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--method",
        default=None,
        help="setseq (the paper; default for real models), toy (default with --base toy), "
        "lora, two-stage, dreammix, textual-inversion",
    )
    p.add_argument("--config", help="TOML file overriding any training setting (docs: the method, config files)")
    p.add_argument("--rank", type=COUNT, help="LoRA rank R (default 8)")
    p.add_argument("--alpha", type=POSITIVE, help="LoRA alpha; scale = alpha / rank (default: scale 1)")
    p.add_argument("--stage1-steps", type=STEPS, help="steps of the first stage (paper: 600)")
    p.add_argument("--stage2-steps", type=STEPS, help="steps of the second stage (paper: 900)")
    p.add_argument(
        "--dropout",
        type=dropouts,
        metavar="S1,S2",
        help="coefficient dropout of each stage, one probability in [0, 1) per stage (paper: 0.8,0.5)",
    )
    p.add_argument("--batch-size", type=COUNT, help="samples per optimiser step (paper: 8)")
    p.add_argument("--micro-batch", type=COUNT, help="samples per forward pass; gradients accumulate (memory)")
    p.add_argument("--lr", type=POSITIVE, help="learning rate (paper: 1e-4, constant)")
    p.add_argument(
        "--timestep-shift",
        type=POSITIVE,
        help="shift the training timesteps towards noise, t' = s t / (1 + (s - 1) t) (default 1: no shift)",
    )
    p.add_argument(
        "--experts",
        metavar="MODE",
        help="a base of experts by timestep (Wan 2.2 T2V-A14B): balanced (default: the experts take the "
        "samples in turn, each at a time of its own range), shared (every time from one distribution), "
        "or one expert's name (high_noise, low_noise) to train it alone",
    )
    p.add_argument(
        "--token-lr", type=POSITIVE, help="also train the concept-token embeddings at this rate (paper: 1e-5)"
    )
    p.add_argument(
        "--train-basis",
        action="store_true",
        help="stage 2 also trains the identity basis A (not the "
        "paper's method, which freezes it; see docs/method.md, outside the paper)",
    )
    p.add_argument("--no-prior", action="store_true", help="turn prior preservation off")
    p.add_argument("--prior-videos", type=COUNT, help="number of prior-preservation videos (default 8)")


def _clip_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=COUNT, help="frames per clip (default: the base model's)")
    p.add_argument("--height", type=COUNT, help="clip height (default: the base model's)")
    p.add_argument("--width", type=COUNT, help="clip width (default: the base model's)")
    p.add_argument("--fps", type=POSITIVE, help="frame rate the video is resampled to (default: the base model's)")
    p.add_argument(
        "--start",
        type=SECONDS,
        help="seconds into each video where its excerpt begins (default 0); "
        "also 'start:' in VIDEO's .txt or the [[concept]] table",
    )
    p.add_argument("--duration", type=DURATION, help="seconds of each video to use (default: to its end)")
    p.add_argument(
        "--select",
        choices=["all", "head", "uniform", "windows"],
        help="frames kept of a clip longer than the model's window: all (default; every frame at --fps), "
        "head (the first --frames), uniform (--frames spread evenly over the clip; its motion is "
        "then faster) or windows (--windows runs of --frames spread over the clip)",
    )
    p.add_argument("--windows", type=COUNT, help="windows taken by --select windows (default 4)")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=SEED, help="random seed; the same seed repeats a CPU run exactly (default 0)")
    p.add_argument("--resume", action="store_true", help="continue from NAME.ckpt, the last checkpoint")
    p.add_argument("--checkpoint-every", type=COUNT, help="steps between checkpoints (default 50)")
    p.add_argument("--validate-every", type=STEPS, help="write a sample video to NAME.samples/ every N steps")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--optimizer",
        choices=["adamw", "adamw8bit"],
        help="adamw (default) or adamw8bit (bitsandbytes: AdamW's moments in 8 bits, less memory)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile each transformer block: the first steps compile (about a minute a graph on 2 CPU cores); "
        "on toy-v2 later steps ran 1.1-1.4 x faster, so it pays on long runs only",
    )
    p.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        help="recompute each transformer block's activations in the backward pass: far less memory, "
        "about a third more compute (default: on; the toy base ignores it)",
    )
    p.add_argument(
        "--offload-activations",
        action="store_true",
        help="keep each gradient-checkpointed block's input in pinned CPU memory until the backward pass "
        "(a local model folder; 14B at 480x832x81: 12.5 GiB off the GPU)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the run's plan without loading any weight: tokens per clip, adapted parameters, the "
        "estimated peak GPU memory by part, and with --vram the memory flags that make it fit (Wan folders)",
    )
    p.add_argument("--vram", type=POSITIVE, metavar="GIB", help="with --dry-run: the GPU's memory in GiB, e.g. 24")
    p.add_argument(
        "--keep-encoders",
        action="store_true",
        help="keep the text encoder and the VAE on --device for the whole run; by default the run encodes "
        "every prompt and clip window first and then moves both to CPU memory (a local model folder)",
    )
    p.add_argument(
        "--shard",
        action="store_true",
        help="under torchrun: shard the transformer's blocks across "
        "the processes with FSDP2 (for models too big for one GPU)",
    )


# ============================================================================================
# the configuration: preset, then --config FILE, then flags
# ============================================================================================


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    """The training configuration the flags ask for: the method's preset, the --config file over it,
    then each flag given over both.

    Raises:
        SetseqError: a flag the method has no stage for, or a setting out of range.
    """
    from setseq.backbones import PRETRAINED_TOYS
    from setseq.config import load_config
    from setseq.log import note

    default = "toy" if getattr(a, "base", None) in PRETRAINED_TOYS else "setseq"
    cfg = load_config(a.config, a.method, default)
    announce = cfg.method == "toy" and default == "toy" and a.method is None
    if a.rank is not None:
        cfg.lora.rank = a.rank
    if a.alpha is not None:
        cfg.lora.alpha = a.alpha
    _stage_flags(a, cfg)
    for name in ("batch_size", "micro_batch", "lr", "token_lr"):
        if getattr(a, name) is not None:
            setattr(cfg.optim, name, getattr(a, name))
    if a.timestep_shift is not None:
        cfg.flow.shift = a.timestep_shift
    if a.experts is not None:
        cfg.flow.experts = a.experts
    if a.no_prior:
        cfg.reg.prior_preservation = False
    if a.prior_videos is not None:
        cfg.reg.prior_videos = a.prior_videos
    for name in ("seed", "checkpoint_every", "validate_every"):
        if getattr(a, name) is not None:
            setattr(cfg, name, getattr(a, name))
    if a.optimizer is not None:
        cfg.optim.optimizer = a.optimizer
    cfg.compile = cfg.compile or a.compile
    if a.gradient_checkpointing is not None:
        cfg.gradient_checkpointing = a.gradient_checkpointing
    cfg.shard = cfg.shard or a.shard
    cfg.keep_encoders = cfg.keep_encoders or a.keep_encoders
    cfg.validate()
    if announce:  # the numbers the run will use, the flags above included
        note(
            f"--base {a.base} trains with the 'toy' preset (the paper's method at the toy base's scale: "
            f"rank {cfg.lora.rank}, lr {cfg.optim.lr:g}, prompt dropout {cfg.reg.prompt_dropout:g}, "
            f"{' + '.join(str(st.steps) for st in cfg.stages)} steps); "
            "--method setseq gives the paper's numbers."
        )
    return cfg


def _stage_flags(a: argparse.Namespace, cfg: TrainConfig) -> None:
    """--stage1-steps, --stage2-steps, --dropout and --train-basis: settings of single stages."""
    for i, steps in enumerate((a.stage1_steps, a.stage2_steps)):
        if steps is not None:
            if i >= len(cfg.stages):
                raise SetseqError(f"method {cfg.method!r} has one stage; use --stage1-steps only.")
            cfg.stages[i].steps = steps
    if getattr(a, "dropout", None) is not None:
        if len(a.dropout) != len(cfg.stages):
            names = ", ".join(s.name for s in cfg.stages)
            raise SetseqError(
                f"--dropout takes one value per stage and method {cfg.method!r} has {len(cfg.stages)} ({names}); "
                f"got {len(a.dropout)}."
            )
        for stage, p in zip(cfg.stages, a.dropout):
            stage.coef_dropout = p
    if a.train_basis:
        motion = [s for s in cfg.stages if s.train == "motion"]
        if not motion:
            raise SetseqError(f"--train-basis needs a motion stage, and method {cfg.method!r} has none.")
        for s in motion:
            s.train_basis = True


# ============================================================================================
# the command
# ============================================================================================


def _sources(a: argparse.Namespace) -> list:
    """The concepts to learn, from VIDEO arguments with --prompt, --motion-prompt, --mask, or --concepts FILE."""
    from setseq.specs import ConceptSource, check_videos, read_concept_list

    listed = read_concept_list(a.concepts) if a.concepts else []
    if listed and (a.videos or a.prompt or a.motion_prompt or a.mask):
        raise SetseqError("give the concepts either as VIDEO arguments with --prompt, or in --concepts FILE, not both.")
    if not listed and not a.videos:
        raise SetseqError("no video given: pass VIDEO arguments or --concepts FILE.")
    videos = [Path(s.video) for s in listed] or [Path(v) for v in a.videos]
    check_videos(videos)  # before the model loads (concept_specs checks again)
    if listed:
        return listed
    n = len(videos)
    for flag, given in (("--prompt", a.prompt), ("--motion-prompt", a.motion_prompt), ("--mask", a.mask)):
        if given and len(given) != n:
            raise SetseqError(
                f"{flag} was given {len(given)} times for {n} video(s); give it once per video, in order."
            )
    pick = lambda given, i: given[i] if given else None  # noqa: E731
    return [
        ConceptSource(v, prompt=pick(a.prompt, i), motion_prompt=pick(a.motion_prompt, i), mask=pick(a.mask, i))
        for i, v in enumerate(videos)
    ]


def _output(a: argparse.Namespace, first_video: str | Path) -> Path:
    out = Path(a.out) if a.out else Path(first_video).with_suffix(".safetensors")
    check_writable(out)  # a folder, a missing or unwritable folder: said before the model loads
    if out.suffix != ".safetensors":
        raise SetseqError(f"the output must be a .safetensors file, got {str(out)!r}.")
    return out


def cmd_train(a: argparse.Namespace) -> int:
    """Learn the concepts the flags name and write the concept file (and stage 1's beside it)."""
    if a.dry_run:
        return dry_run(a)
    trainer = train_from_args(a)
    if trainer.world.main:
        print(f"wrote {trainer.out}" + (f" and {trainer.stage1_path}" if len(trainer.cfg.stages) > 1 else ""))
    return 0


def train_from_args(a: argparse.Namespace, monitor=None):
    """The run `setseq train` makes of its parsed flags, with the same checks in the same order; the
    web UI builds the flags and passes a `train.Monitor` to watch and stop it. Returns the Trainer.

    Raises:
        SetseqError: for any bad input, before the model loads where it can be seen then.
        train.Stopped: when `monitor` stopped the run (its checkpoint resumes it).
    """
    from dataclasses import replace

    from setseq import parallel
    from setseq.backbones import load_backbone
    from setseq.log import note
    from setseq.specs import clip_geometry, concept_specs
    from setseq.train import Trainer, optimizer_class
    from setseq.video import EXCERPT_KEYS

    if a.vram is not None:
        raise SetseqError("--vram goes with --dry-run, which plans a run for a GPU of that memory.")
    sources = _sources(a)
    out = _output(a, sources[0].video)
    cfg = config_from_args(a)
    # Under torchrun (several processes), fail before loading the model; each rank uses its own GPU.
    parallel.check_batch(cfg.optim, parallel.launched_size())
    optimizer_class(cfg.optim.optimizer)
    options = device_options(a)
    options["device"] = parallel.device_for(options["device"])
    options["offload_activations"] = a.offload_activations or None
    backbone = load_backbone(a.base, **options)
    flags = {k: getattr(a, k) for k in EXCERPT_KEYS if getattr(a, k) is not None}
    g = clip_geometry(backbone, sources, excerpt=flags, fps=a.fps)  # the first clip's shape, the shortest's length
    given = {"frames": a.frames, "height": a.height, "width": a.width, "fps": a.fps}
    g = replace(g, **{k: v for k, v in given.items() if v is not None})
    backbone.check_geometry(g)
    shape = "square" if g.width == g.height else ("landscape" if g.width > g.height else "portrait")
    note(f"training clips: {g.frames} frames of {g.width} wide x {g.height} high ({shape}) at {g.fps:g} fps")
    needs_clip = any(s.data != "frames" for s in cfg.stages)
    specs = concept_specs(sources, g, excerpt=flags, needs_clip=needs_clip)
    try:
        trainer = Trainer(backbone, specs, cfg, out, geometry=g, progress=not a.quiet, monitor=monitor)
        trainer.run(resume=a.resume)
    finally:
        parallel.shutdown()
    return trainer


def dry_run(a: argparse.Namespace) -> int:
    """`setseq train --base FOLDER --dry-run`: print the plan of the run the flags ask for (`setseq.plan`),
    at the base's default geometry or --frames/--height/--width, without loading any weight."""
    from dataclasses import replace
    from pathlib import Path

    from setseq import plan

    if not Path(a.base).is_dir():
        raise SetseqError(f"--dry-run plans a run on a local Wan folder; {a.base!r} is not one.")
    cfg = config_from_args(a)
    model = plan.read_model(a.base)
    given = {"frames": a.frames, "height": a.height, "width": a.width}
    g = replace(model.geometry, **{k: v for k, v in given.items() if v is not None})
    dtype_bytes = {None: 4, "float32": 4}.get(a.dtype, 2)
    settings = plan.Settings(
        dtype_bytes=dtype_bytes,
        rank=cfg.lora.rank,
        concepts=max(1, len(a.videos) or 1),
        micro_batch=cfg.optim.micro_batch or cfg.optim.batch_size,
        stages=tuple(s.train for s in cfg.stages if s.train != "tokens"),
        optimizer=cfg.optim.optimizer,
        gradient_checkpointing=cfg.gradient_checkpointing,
        fp8_base=a.fp8_base,
        blocks_to_swap=a.blocks_to_swap or 0,
        offload_activations=a.offload_activations,
        keep_encoders=cfg.keep_encoders,
    )
    print(plan.render(model, g, settings, a.vram))
    return 0
