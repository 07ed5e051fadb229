"""The `setseq` command line. Bad input: one sentence on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from setseq.errors import SetseqError

EXIT_USAGE = 2


# ============================================================================================
# flag ranges: checked at parse time, one sentence naming the flag and what it accepts
# ============================================================================================


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line ("setseq: error: argument --lr: ...") and exit 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"setseq: error: {message}.\n")


def _number(kind: type, low: float | None = None, *, above: bool = False, what: str):
    """An argparse ``type=``: parse ``kind`` (int or float), finite, at least (or above) ``low``."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        ok = value is not None and math.isfinite(value) and (low is None or (value > low if above else value >= low))
        if not ok:
            raise argparse.ArgumentTypeError(f"takes {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


COUNT = _number(int, 1, what="a whole number >= 1")
STEPS = _number(int, 0, what="a whole number >= 0")
SEED = _number(int, 0, what="a whole number >= 0")
POSITIVE = _number(float, 0, above=True, what="a number > 0")
SECONDS = _number(float, 0, what="a number of seconds >= 0")
DURATION = _number(float, 0, above=True, what="a number of seconds > 0")
SCALE = _number(float, what="a finite number")
GUIDANCE = _number(float, 0, what="a number >= 0")


# ============================================================================================
# train
# ============================================================================================


def _train_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="learn a dynamic concept from a video (stage 1 then stage 2)",
        description="Learn one or more dynamic concepts from videos into LoRA weights.",
    )
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
    p.add_argument(
        "--base", default="toy", help="base model: 'toy' (embedded default), 'toy-tiny', or a local path (default: toy)"
    )
    p.add_argument("--out", help="output concept file NAME.safetensors (default: VIDEO's name)")
    _device_args(p)
    p.add_argument(
        "--method",
        default=None,
        help="setseq (the paper; default for real models), toy (default with --base toy), "
        "lora, two-stage, dreammix, textual-inversion",
    )
    p.add_argument("--config", help="TOML file overriding any training setting (see README)")
    p.add_argument("--rank", type=COUNT, help="LoRA rank R (default 8)")
    p.add_argument("--alpha", type=POSITIVE, help="LoRA alpha; scale = alpha / rank (default: scale 1)")
    p.add_argument("--stage1-steps", type=STEPS, help="steps of the first stage (paper: 600)")
    p.add_argument("--stage2-steps", type=STEPS, help="steps of the second stage (paper: 900)")
    p.add_argument("--batch-size", type=COUNT, help="samples per optimiser step (paper: 8)")
    p.add_argument("--micro-batch", type=COUNT, help="samples per forward pass; gradients accumulate (memory)")
    p.add_argument("--lr", type=POSITIVE, help="learning rate (paper: 1e-4, constant)")
    p.add_argument(
        "--timestep-shift",
        type=POSITIVE,
        help="shift the training timesteps towards noise, t' = s t / (1 + (s - 1) t) (default 1: no shift)",
    )
    p.add_argument(
        "--token-lr", type=POSITIVE, help="also train the concept-token embeddings at this rate (paper: 1e-5)"
    )
    p.add_argument(
        "--train-basis",
        action="store_true",
        help="stage 2 also trains the identity basis A (not the "
        "paper's method, which freezes it; see docs/toy-model.md)",
    )
    p.add_argument("--no-prior", action="store_true", help="turn prior preservation off")
    p.add_argument("--prior-videos", type=COUNT, help="number of prior-preservation videos (default 8)")
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
        help="torch.compile each transformer block (the first steps compile; any speed-up is unmeasured)",
    )
    p.add_argument(
        "--shard",
        action="store_true",
        help="under torchrun: shard the transformer's blocks across "
        "the processes with FSDP2 (for models too big for one GPU)",
    )
    p.set_defaults(func=cmd_train)


def _config_from_args(a):
    from setseq.config import load_config
    from setseq.log import note

    default = "toy" if getattr(a, "base", None) == "toy" else "setseq"
    cfg = load_config(a.config, a.method, default)
    if cfg.method == "toy" and default == "toy" and a.method is None:
        note(
            "--base toy trains with the 'toy' preset (the paper's method at the toy base's scale: lr 1e-3, "
            f"{cfg.stages[0].steps} + {cfg.stages[1].steps} steps); --method setseq gives the paper's numbers."
        )
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
    if a.train_basis:
        motion = [s for s in cfg.stages if s.train == "motion"]
        if not motion:
            raise SetseqError(f"--train-basis needs a motion stage, and method {cfg.method!r} has none.")
        for s in motion:
            s.train_basis = True
    if a.timestep_shift is not None:
        cfg.flow.shift = a.timestep_shift
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
    cfg.shard = cfg.shard or a.shard
    cfg.validate()
    return cfg


DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16"}


def _device_args(p) -> None:
    p.add_argument("--device", help="device for a local model folder, e.g. cuda or cuda:1 (default: cpu)")
    p.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        help="weights dtype for a local model folder (default float32; bfloat16 halves memory)",
    )


def _device_options(a) -> dict:
    import torch

    return {"device": a.device, "dtype": getattr(torch, DTYPES[a.dtype]) if a.dtype else None}


def _concept_name(path: Path, taken: set[str]) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem) or "concept"
    base, i = name, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


EXCERPT_KEYS = ("start", "duration", "select", "windows")


def _read_concept_list(path: str) -> list[dict]:
    """[[concept]] tables of a TOML file: video and mask (relative to the file), prompt, motion_prompt, name,
    and the excerpt settings start, duration, select, windows."""
    from setseq.config import read_toml

    file = Path(path)
    entries = read_toml(file).get("concept", [])
    if not isinstance(entries, list) or not entries:
        raise SetseqError(f"{path!r} lists no concepts; write one [[concept]] table per video.")
    for e in entries:
        unknown = set(e) - {"video", "prompt", "motion_prompt", "name", "mask", *EXCERPT_KEYS}
        if "video" not in e or unknown:
            raise SetseqError(
                f"each [[concept]] in {path!r} needs a video and may have prompt, motion_prompt, name, "
                f"mask, {', '.join(EXCERPT_KEYS)}; got {sorted(e)}."
            )
        e["video"] = str(file.parent / e["video"])
        if e.get("mask"):
            e["mask"] = str(file.parent / e["mask"])
    return entries


def _concept_mask(video_path: Path, given: str | None, video, size: tuple[int, int], excerpt=None):
    """The clip's foreground mask (F, H, W) bool: the given file, else the one beside it, else the
    clip's alpha channel (opaque = subject), else None."""
    from setseq import data
    from setseq.log import note, warn

    if given and not Path(given).exists():
        raise SetseqError(f"mask {given!r} for {str(video_path)!r} does not exist.")
    file = Path(given) if given else data.find_mask(video_path)
    if file is None:
        if video.alpha is None:
            return None
        mask = video.alpha > 0.5  # (F, H, W)
        if not mask.any():
            warn(
                f"{video_path.name} is transparent everywhere, so its alpha channel marks no subject; no mask is used."
            )
            return None
        note(f"foreground mask for {video_path.name}: its alpha channel (no mask file given)")
        return mask
    mask = data.load_mask(file, video, size, excerpt=excerpt)
    note(f"foreground mask for {video_path.name}: {file}")
    return mask


def cmd_train(a) -> int:
    from dataclasses import replace

    from setseq import data, parallel
    from setseq.backbones import load_backbone
    from setseq.log import note
    from setseq.train import ConceptSpec, Trainer, optimizer_class

    listed = _read_concept_list(a.concepts) if a.concepts else []
    if listed and (a.videos or a.prompt or a.motion_prompt or a.mask):
        raise SetseqError("give the concepts either as VIDEO arguments with --prompt, or in --concepts FILE, not both.")
    flags = {k: getattr(a, k) for k in EXCERPT_KEYS if getattr(a, k) is not None}
    if listed:
        a.videos = [c["video"] for c in listed]
        a.prompt = [c.get("prompt") for c in listed]
        a.motion_prompt = [c.get("motion_prompt") for c in listed]
        a.mask = [c.get("mask") for c in listed]
    if not a.videos:
        raise SetseqError("no video given: pass VIDEO arguments or --concepts FILE.")
    videos = [Path(v) for v in a.videos]
    for v in videos:
        if not v.exists():
            raise SetseqError(f"video {str(v)!r} does not exist.")
        if data.is_mask_path(v):
            raise SetseqError(
                f"{str(v)!r} is named like a mask (NAME.mask.*), which is read with its clip NAME; "
                f"pass the clip only, or rename it."
            )
    n = len(videos)
    for flag, given in (("--prompt", a.prompt), ("--motion-prompt", a.motion_prompt), ("--mask", a.mask)):
        if given and len(given) != n:
            raise SetseqError(
                f"{flag} was given {len(given)} times for {n} video(s); give it once per video, in order."
            )
    out = Path(a.out) if a.out else videos[0].with_suffix(".safetensors")
    if out.suffix != ".safetensors":
        raise SetseqError(f"the output must be a .safetensors file, got {str(out)!r}.")
    if out.parent and not out.parent.exists():
        raise SetseqError(f"the output folder {str(out.parent)!r} does not exist.")
    cfg = _config_from_args(a)
    # Under torchrun (several processes), fail before loading the model; each rank uses its own GPU.
    parallel.check_batch(cfg.optim, parallel.launched_size())
    optimizer_class(cfg.optim.optimizer)
    options = _device_options(a)
    options["device"] = parallel.device_for(options["device"])
    backbone = load_backbone(a.base, **options)
    g = backbone.geometry
    pick = lambda given, default: default if given is None else given  # noqa: E731
    g = replace(
        g,
        frames=pick(a.frames, g.frames),
        height=pick(a.height, g.height),
        width=pick(a.width, g.width),
        fps=pick(a.fps, g.fps),
    )
    backbone.check_geometry(g)
    needs_clip = any(s.data != "frames" for s in cfg.stages)
    taken: set[str] = set()
    specs = []
    for i, v in enumerate(videos):
        txt_static, txt_motion, txt_settings = data.read_clip_file(v)
        static = (a.prompt[i] if a.prompt else None) or txt_static
        motion = (a.motion_prompt[i] if a.motion_prompt else None) or txt_motion
        if not static:
            raise SetseqError(
                f"no prompt for {str(v)!r}: pass --prompt 'a [v] ...' or write {v.with_suffix('.txt').name} beside it."
            )
        table = {k: listed[i][k] for k in EXCERPT_KEYS if listed and k in listed[i]}
        settings = {
            **data.excerpt_settings(txt_settings, f"the .txt of {str(v)!r}"),
            **data.excerpt_settings(table, f"the [[concept]] of {str(v)!r} in {a.concepts!r}"),
            **flags,
        }
        excerpt = data.Excerpt(frames=g.frames, **settings)
        video = data.load_video(
            v, fps=g.fps, size=(g.height, g.width), min_frames=g.frames if needs_clip else 1, excerpt=excerpt
        )
        if excerpt.select == "uniform" and needs_clip:
            note(
                f"{v.name}: {g.frames} frames spread over the clip, {1 / video.fps:.2f} s apart, so its motion "
                f"trains {g.fps * (1 / video.fps):.1f} times as fast as it was filmed."
            )
        mask = _concept_mask(v, a.mask[i] if a.mask else None, video, (g.height, g.width), excerpt)
        suffix = "" if n == 1 else str(i + 1)
        name = listed[i]["name"] if listed and listed[i].get("name") else _concept_name(v, taken)
        specs.append(
            ConceptSpec(
                name,
                video.frames,
                static,
                motion,
                identity_token=f"[v{suffix}]",
                motion_token=f"[u{suffix}]",
                source=str(v),
                mask=mask,
                windows=video.windows,
            )
        )
    try:
        trainer = Trainer(backbone, specs, cfg, out, geometry=g, progress=not a.quiet)
        trainer.run(resume=a.resume)
    finally:
        parallel.shutdown()
    if trainer.world.main:
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


def _concept_scales(cs, scales: dict[str, float]) -> tuple[float | None, dict[str, float]]:
    """Split --scale entries into the (shared) identity scale and motion scales by concept name."""
    by_token = {}
    for c in cs.concepts:
        by_token[c["motion_token"].strip("[]")] = c["name"]
        by_token[c["name"]] = c["name"]
    identity_keys = {c["identity_token"].strip("[]") for c in cs.concepts}
    identity, motion = None, {}
    for key, value in scales.items():
        k = key.strip("[]")
        if k in identity_keys:
            if identity is not None and identity != value:
                raise SetseqError(
                    "the identity basis is shared by all concepts of a set, so one identity scale "
                    f"applies to all; --scale gave {identity} and {value}."
                )
            identity = value
        elif k in by_token:
            motion[by_token[k]] = value
        else:
            names = sorted(identity_keys | set(by_token))
            raise SetseqError(
                f"--scale names {key!r}, which this concept set does not have; it has {', '.join(names)}."
            )
    return identity, motion


def _rank_weights(text: str | None, cs):
    if not text:
        return None
    import torch

    try:
        w = torch.tensor([float(x) for x in text.split(",")])
    except ValueError:
        raise SetseqError(f"--rank-weights takes comma-separated numbers, got {text!r}.") from None
    if len(w) != int(cs.meta.get("rank", 0)):
        raise SetseqError(f"--rank-weights needs {cs.meta.get('rank')} numbers (the rank), got {len(w)}.")
    return w


def _generate_parser(sub) -> None:
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
    _device_args(p)
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
    p.add_argument("--negative", default="", help="negative prompt for guidance (default empty)")
    p.add_argument("--frames", type=COUNT, help="frames to generate (default: the concept's)")
    p.add_argument("--upscale", type=COUNT, help="integer upscaling of the written video (default: to at least 256 px)")
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
    backbone = load_backbone(a.base or (cs.meta["base"]["name"] if cs else "toy"), **_device_options(a))
    g = backbone.geometry
    identity, motion, rank_weights = None, {}, None
    if cs is not None:
        concept_io.apply(cs, backbone, source=repr(a.concept))
        g = replace(g, **cs.meta.get("geometry", {}))
        identity, motion = _concept_scales(cs, _parse_scales(a.scale))
        rank_weights = _rank_weights(a.rank_weights, cs)
    if a.frames is not None:
        g = replace(g, frames=a.frames)
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
            seed=a.seed,
            negative=a.negative,
            progress=True,
        )[0]
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
    if any(st.get("train_basis") for st in m.get("config", {}).get("stages", [])):
        print("             stage 2 also trained the identity basis (--train-basis; not the paper's method)")
    print(f"base         {m['base']['name']} (weights {m['base']['fingerprint']})")
    print(f"rank         {m.get('rank')}, {len(cs.modules())} adapted modules")
    g = m.get("geometry", {})
    if g:
        print(f"geometry     {g.get('frames')} frames, {g.get('height')}x{g.get('width')} at {g.get('fps')} fps")
    for c in cs.concepts:
        print(f"concept      {c['name']}: {c['identity_token']} {c['motion_token']}  (from {c.get('video') or '?'})")
        print(f"  prompt         {c.get('prompt')}")
        if c.get("motion_prompt"):
            print(f"  motion prompt  {c['motion_prompt']}")
    for stage, losses in m.get("losses", {}).items():
        if losses:
            print(f"loss         {stage}: {losses[0]:.4f} -> {losses[-1]:.4f} over {len(losses)} steps")
    return 0


# ============================================================================================
# eval
# ============================================================================================


def _eval_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="score a generated video against its reference and prompt",
        description="Compute the paper's metrics (MSE, ArcFace ID, CLIP-T, TC) of a generated video "
        "against its reference clip and prompt, plus toy-world metrics for an example "
        "concept. Metrics whose model is not given are skipped.",
    )
    p.add_argument("video", metavar="VIDEO", help="the generated video")
    p.add_argument(
        "--reference", required=True, metavar="REF", help="the reference video (e.g. the concept's training clip)"
    )
    p.add_argument("--prompt", required=True, metavar="TEXT", help="the prompt VIDEO was generated from")
    p.add_argument("--clip", metavar="PATH", help="local CLIP folder in transformers format (for CLIP-T and TC)")
    p.add_argument(
        "--arcface", metavar="PATH", help="insightface model folder (.../models/NAME) or ArcFace .onnx file (for ID)"
    )
    p.add_argument(
        "--toy-scene", metavar="NAME", help="REF is this example concept: sprite, waves or flicker (toy metrics)"
    )
    p.add_argument("--json", metavar="OUT", help="also write the results to this JSON file")
    p.set_defaults(func=cmd_eval)


def _format_metric(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
    return str(value)


def _eval_metrics(a, video, reference) -> tuple[dict, dict[str, str]]:
    """The metrics `setseq eval` can compute with the models it was given, and why the others were skipped."""
    from setseq.metrics import mse, pixel_coherence

    results: dict = {"mse": mse(video, reference), "tc_pixel": pixel_coherence(video)}
    skipped: dict[str, str] = {}
    if a.clip:
        from setseq.metrics.clip import clip_temporal_coherence, clip_text_score, load_clip

        clip = load_clip(a.clip)
        results.update(clip_t=clip_text_score(clip, video, a.prompt), tc_clip=clip_temporal_coherence(clip, video))
    else:
        skipped["clip_t, tc_clip"] = "no --clip PATH (a local CLIP folder in transformers format)"
    if a.arcface:
        from setseq.metrics.identity import identity_similarity, load_face_embedder

        results.update(identity_similarity(video, reference, load_face_embedder(a.arcface)))
    else:
        skipped["id"] = "no --arcface PATH (an insightface model folder or an ArcFace .onnx file)"
    if a.toy_scene:
        from setseq.metrics.toy import concept_metrics

        results.update(concept_metrics(video, reference, a.toy_scene, a.prompt))
        if "toy_edit" not in results:
            skipped["toy_edit"] = "the prompt names no background, colour or camera other than the reference's"
    else:
        skipped["toy_*"] = "no --toy-scene NAME (sprite, waves or flicker)"
    return results, skipped


def cmd_eval(a) -> int:
    import math

    from setseq import data
    from setseq.toy.world import CONCEPTS

    if a.toy_scene is not None and a.toy_scene not in CONCEPTS:
        raise SetseqError(f"--toy-scene must be one of {', '.join(CONCEPTS)}, got {a.toy_scene!r}.")
    video = data.load_video(a.video).frames
    reference = data.load_video(a.reference).frames
    results, skipped = _eval_metrics(a, video, reference)
    for name, value in results.items():
        print(f"{name:<16} {_format_metric(value)}")
    for name, why in skipped.items():
        print(f"{name:<16} skipped: {why}")
    if a.json:
        from setseq.fileio import atomic_path

        # NaN (no face found) is not valid JSON: write null.
        metrics = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in results.items()}
        report = {
            "video": a.video,
            "reference": a.reference,
            "prompt": a.prompt,
            "metrics": metrics,
            "skipped": skipped,
        }
        with atomic_path(a.json) as tmp:
            tmp.write_text(json.dumps(report, indent=1))
    return 0


# ============================================================================================
# export
# ============================================================================================


def _export_parser(sub) -> None:
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
        help="comfyui (Wan: original Wan key names; LTX-Video) or diffusers (load_lora_weights; any base)",
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
    p.add_argument("--out", required=True, help="output LoRA file, NAME.safetensors")
    p.set_defaults(func=cmd_export)


def cmd_export(a) -> int:
    from setseq import concept as concept_io
    from setseq.export import export

    cs = concept_io.load(a.concept)
    out = export(
        cs,
        a.out,
        a.format,
        part=a.part,
        identity_scale=a.identity_scale,
        motion_scale=a.motion_scale,
        rank_weights=_rank_weights(a.rank_weights, cs),
    )
    print(f"wrote {out}")
    return 0


# ============================================================================================
# demo and toy
# ============================================================================================


def _demo_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole method on the embedded base and write a report",
        description="Learn a shipped example concept on the embedded toy base, generate its "
        "reconstruction, edits and a restyle next to the base model, and write "
        "report.html, metrics.json, the concept file and the videos into --out.",
    )
    p.add_argument("--out", default="demo-out", help="output folder (default: demo-out)")
    p.add_argument("--concept", default="sprite", help="example concept: sprite, waves or flicker (default: sprite)")
    p.add_argument("--quick", action="store_true", help="a short run (tests use it): a few minutes on 2 CPU cores")
    p.add_argument("--base", default="toy", help="base model (default: toy)")
    p.add_argument("--seed", type=SEED, default=0, help="random seed (default 0)")
    p.add_argument("--compose", action="store_true", help="also learn waves and flicker jointly and compose them")
    p.set_defaults(func=cmd_demo)


def cmd_demo(a) -> int:
    from setseq.demo import run_demo

    m = run_demo(a.out, concept=a.concept, quick=a.quick, base=a.base, seed=a.seed, compose=a.compose)
    for who, s in m["summary"].items():
        print(
            f"{who:>8}: identity {s['identity']:.2f}, motion {s['motion']:.2f}, edits followed {s['edit_followed']:.0%}"
        )
    print(f"open {Path(a.out) / 'report.html'}")
    return 0


def _bench_parser(sub) -> None:
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
    ab.add_argument(
        "--step-scale", type=POSITIVE, default=0.25, help="training steps as a share of the paper's (default 0.25)"
    )
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
    lk.add_argument(
        "--step-scale", type=POSITIVE, default=0.25, help="training steps as a share of the paper's (default 0.25)"
    )
    lk.add_argument("--quick", action="store_true", help="a smoke run with a few steps")
    lk.set_defaults(func=cmd_bench_leakage)


def cmd_bench_ablation(a) -> int:
    from setseq.bench import markdown_table, run_ablation
    from setseq.toy import world

    concepts = [c.strip() for c in a.concepts.split(",") if c.strip()]
    unknown = set(concepts) - set(world.CONCEPTS)
    if unknown:
        raise SetseqError(f"unknown example concept(s) {sorted(unknown)}; choose from {', '.join(world.CONCEPTS)}.")
    try:
        seeds = [int(s) for s in a.seeds.split(",")]
    except ValueError:
        raise SetseqError(f"--seeds takes comma-separated integers, got {a.seeds!r}.") from None
    if a.quick:
        r = run_ablation(
            a.out, concepts[:1], seeds[:1], a.base, step_scale=0.005, batch_size=2, sample_steps=2, edits=2
        )
    else:
        r = run_ablation(a.out, concepts, seeds, a.base, a.step_scale, a.batch_size, a.sample_steps)
    print(markdown_table(r["summary"]))
    print(f"wrote {Path(a.out) / 'table.md'}, table.csv, scatter.svg and index.html")
    return 0


def cmd_bench_leakage(a) -> int:
    from setseq.bench import run_leakage

    try:
        seeds = [int(s) for s in a.seeds.split(",")]
    except ValueError:
        raise SetseqError(f"--seeds takes comma-separated integers, got {a.seeds!r}.") from None
    scale, steps = (0.003, 2) if a.quick else (a.step_scale, 20)
    r = run_leakage(a.out, seeds=seeds, base=a.base, step_scale=scale, sample_steps=steps)
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


def _toy_parser(sub) -> None:
    p = sub.add_parser(
        "toy",
        help="the embedded toy world and base model: pretrain, evaluate, examples",
        description="Tools for the embedded default base model.",
    )
    tsub = p.add_subparsers(dest="toy_command", required=True, metavar="TOOL")
    pre = tsub.add_parser("pretrain", help="pretrain the toy DiT from scratch on the toy world (resumable)")
    pre.add_argument("--out", required=True, help="folder for the checkpoint, log and MODEL.safetensors")
    pre.add_argument("--model", default="toy", help="architecture preset: toy or toy-tiny (default: toy)")
    from setseq.toylab.pretrain import PretrainConfig

    d = PretrainConfig()  # the help states the defaults the run will use
    pre.add_argument("--steps", type=int, help=f"optimiser steps (default {d.steps})")
    pre.add_argument("--batch-size", type=int, help=f"clips per step (default {d.batch_size})")
    pre.add_argument("--lr", type=float, help=f"peak learning rate (default {d.lr:g}, cosine decay)")
    pre.add_argument("--seed", type=int, help=f"random seed (default {d.seed})")
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
        "--foreground-weight", type=float, help="extra loss weight on the object's pixels: 1 + W (default 0)"
    )
    pre.add_argument(
        "--init", help="start from this weights file (e.g. the shipped toy.safetensors) instead of from scratch"
    )
    pre.add_argument("--resume", action="store_true", help="continue from OUT/ckpt.pt")
    pre.add_argument("--device", help="where to train: cpu, cuda, cuda:1, ... (default: a GPU when there is one)")
    pre.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes rendering clips beside the training (default 0; on a GPU use several, "
        "the rendering sets the pace). The result does not depend on it",
    )
    pre.set_defaults(func=cmd_toy_pretrain)
    ev = tsub.add_parser("eval", help="attribute accuracy of a base model on held-out captions")
    ev.add_argument("--base", default="toy", help="base model (default: toy)")
    ev.add_argument("--weights", help="a weights file from `setseq toy pretrain` instead of the shipped one")
    ev.add_argument("-n", type=int, help="number of held-out captions (default 100; 32 clips with --motion-words)")
    ev.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    ev.add_argument("--guidance", type=float, help="guidance (default: the model's)")
    ev.add_argument("--json", help="also write the results to this JSON file")
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
        help="instead: the one-step direction probe logged while pretraining; the clean estimate of moving "
        "sprites noised to t = 0.99, 0.9, 0.7 under their caption and the opposite one (-n clips, default 16)",
    )
    ev.set_defaults(func=cmd_toy_eval)
    ex = tsub.add_parser("examples", help="render the example concept videos, their prompt files and masks")
    ex.add_argument("--out", help="folder (default: the package's examples folder)")
    ex.set_defaults(func=cmd_toy_examples)


def cmd_toy_pretrain(a) -> int:
    from setseq.toylab.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(model=a.model)
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
    ):
        if getattr(a, name) is not None:
            setattr(cfg, name, getattr(a, name))
    if a.model not in ("toy", "toy-tiny"):
        raise SetseqError(f"unknown model preset {a.model!r}; use toy or toy-tiny.")
    print(f"wrote {pretrain(a.out, cfg, resume=a.resume, device=a.device, workers=a.workers)}")
    return 0


def cmd_toy_eval(a) -> int:
    from setseq.backbones import load_backbone
    from setseq.toylab.evaluate import attribute_accuracy, direction_probe, motion_words

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
    if a.probe:
        r = {"probes": [direction_probe(bb, n=n, t=t) for t in (0.99, 0.9, 0.7)]}
        print(f"{n} moving sprites; speed of the clean estimate along the captioned way, pixels a frame:")
        print(f"{'noise t':<8} {'truth':>6} {'own':>6} {'opposite':>9} {'follows':>8}")
        for p in r["probes"]:
            print(f"{p['t']:<8g} {p['truth']:>6.2f} {p['own']:>6.2f} {p['opposite']:>9.2f} {p['follows']:>8.2f}")
    elif a.motion_words:
        r = motion_words(bb, n=n, start=a.start, steps=a.steps, guidance=a.guidance)
        print(f"{n} moving sprites noised to t = {a.start:g}, read back after denoising under each caption:")
        print(f"{'caption':<16} {'true way':>9} {'caption says':>13} {'still':>6}")
        for name, row in r["rows"].items():
            said = "-" if row["captioned"] is None else f"{row['captioned']:.0%}"
            print(f"{name:<16} {row['true']:>9.0%} {said:>13} {row['still']:>6.0%}")
    else:
        r = attribute_accuracy(bb, n=n, steps=a.steps, guidance=a.guidance)
        for k, v in r["accuracy"].items():
            print(f"{k:<12} {v:.1%}")
        print(f"{'mean':<12} {r['mean']:.1%}  over {n} held-out captions")
    if a.json:
        from setseq.fileio import atomic_path

        with atomic_path(a.json) as tmp:
            tmp.write_text(json.dumps(r, indent=1))
    return 0


def cmd_toy_examples(a) -> int:
    from setseq.toylab.examples import EXAMPLES_DIR, write_examples

    for p in write_examples(a.out or EXAMPLES_DIR):
        print(f"wrote {p}, {p.with_suffix('.txt').name} and {p.stem}.mask{p.suffix}")
    return 0


# ============================================================================================
# main
# ============================================================================================


def build_parser() -> argparse.ArgumentParser:
    from setseq import __version__

    parser = _Parser(
        prog="setseq",
        description="Set-and-Sequence: personalise a text-to-video diffusion transformer with a dynamic "
        "concept (appearance and motion) learned from a single video.",
    )
    parser.add_argument("--version", action="version", version=f"setseq {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _train_parser(sub)
    _generate_parser(sub)
    _info_parser(sub)
    _export_parser(sub)
    _eval_parser(sub)
    _demo_parser(sub)
    _toy_parser(sub)
    _bench_parser(sub)
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
