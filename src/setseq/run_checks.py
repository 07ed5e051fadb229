"""Checks of a training run, before it is set up (`check_run`: the concepts, their prompts and
clips, the experts of the base, the optimiser's package, sharding) and of its losses as it runs
(`check_finite`). Each failure is one sentence (`SetseqError`), raised before any training time is
spent where it can be known then."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch.optim import Optimizer

from setseq import flow, parallel
from setseq.backbones.base import Backbone, Geometry
from setseq.batches import ConceptSpec
from setseq.config import EXPERT_MODES, StageConfig, TrainConfig
from setseq.errors import SetseqError
from setseq.log import warn

# ============================================================================================
# checks: before a run is set up, and of its losses as it runs
# ============================================================================================


def check_run(backbone: Backbone, concepts: list[ConceptSpec], cfg: TrainConfig, geometry: Geometry) -> None:
    """Refuse a run that could not train, before anything is set up: the settings, the clip geometry
    for this base, the concepts (`check_concepts`) and the optimiser's package. Warns of a
    self-conditioning the base cannot take and of prompt words its text encoder does not know.

    Raises:
        SetseqError: the first of these that fails, in that order.
    """
    cfg.validate()
    backbone.check_geometry(geometry)
    check_concepts(concepts, cfg, geometry)
    if cfg.reg.self_conditioning and not backbone.supports_self_conditioning:
        warn(f"base {backbone.name!r} has no self-conditioning input; that regulariser is off for this run.")
    check_experts(backbone, cfg)
    if getattr(backbone, "offload_activations", False) and not cfg.gradient_checkpointing:
        raise SetseqError(
            "--offload-activations moves the inputs that gradient checkpointing keeps to CPU memory, so it "
            "needs gradient checkpointing; leave out --no-gradient-checkpointing."
        )
    for c in concepts:
        unknown = backbone.unknown_words(c.full_prompt)
        if unknown:
            warn(f"the text encoder does not know the words {sorted(set(unknown))}; they carry no meaning.")
    optimizer_class(cfg.optim.optimizer)  # a missing package fails now, not after the set-up


def check_sharding(cfg: TrainConfig, world: parallel.World, backbone: Backbone) -> bool:
    """Whether the run shards its model (--shard over several processes); checks that the batch
    splits over the processes, that --compile is not asked for with sharding, and that neither
    meets a base kept in float8 or in CPU memory (`parallel.refuse_memory_flags`).

    Raises:
        SetseqError: a batch the processes cannot share evenly, --compile with --shard, or either
            with --fp8-base / --blocks-to-swap where that is not supported.
    """
    parallel.check_batch(cfg.optim, world.size)
    if cfg.shard and world.size == 1:
        warn(
            "--shard splits the model over the processes of a torchrun launch; this run has one, so it is not sharded."
        )
    sharded = cfg.shard and world.size > 1
    if sharded and cfg.compile:
        raise SetseqError("--compile together with --shard is not supported yet; use one of them.")
    for flag, on in (("--compile", cfg.compile), ("--shard", sharded)):  # before any set-up work
        if on:
            parallel.refuse_memory_flags(backbone.transformer, flag)
    return sharded


def check_concepts(concepts: list[ConceptSpec], cfg: TrainConfig, geometry: Geometry) -> None:
    """Prompts carry their tokens, and clips are long enough for the clip stages."""
    if not concepts:
        raise SetseqError("no concept to train: give at least one video.")
    needs_motion = any(s.train == "motion" for s in cfg.stages)
    needs_clip = any(s.data in ("clip", "mixed") for s in cfg.stages)
    names = [c.name for c in concepts]
    for c in concepts:
        if not c.name or not all(ch.isalnum() or ch in "_-" for ch in c.name):
            raise SetseqError(
                f"concept name {c.name!r} may hold only letters, digits, '_' and '-' (it names the "
                "concept's tensors and its --scale key); rename it."
            )
        if names.count(c.name) > 1:
            raise SetseqError(f"two concepts are named {c.name!r}; give each its own name.")
        if c.windows is not None and (
            not c.windows or any(w < 0 or w + geometry.frames > c.video.shape[0] for w in c.windows)
        ):
            raise SetseqError(
                f"the windows of {c.name!r} {c.windows} do not each hold {geometry.frames} of its "
                f"{c.video.shape[0]} frames."
            )
        check_prompts(c.name, c.prompt, c.motion_prompt, (c.identity_token, c.motion_token), cfg.method, needs_motion)
        if c.mask is not None and (
            c.mask.dtype != torch.bool or c.mask.shape != (c.video.shape[0], *c.video.shape[2:])
        ):
            raise SetseqError(
                f"the mask of {c.name!r} must be bool (F, H, W) = {(c.video.shape[0], *c.video.shape[2:])} "
                f"like its video, got {c.mask.dtype} {tuple(c.mask.shape)}."
            )
        if needs_clip and c.video.shape[0] < geometry.frames:
            raise SetseqError(
                f"the video for {c.name!r} has {c.video.shape[0]} frames at {geometry.fps:g} fps, "
                f"but a clip needs {geometry.frames}; use a longer video or pass --frames."
            )


def check_prompts(
    name: str, prompt: str, motion_prompt: str | None, tokens: tuple[str, str], method: str, needs_motion: bool
) -> None:
    """A concept's static prompt holds its identity token and, for a method that learns motion, its
    motion prompt holds its motion token (the web UI checks them as they are typed).

    Args:
        name: the concept's name; tokens: its (identity, motion) tokens, e.g. ("[v1]", "[u1]").

    Raises:
        SetseqError: the first prompt that lacks its token.
    """
    identity_token, motion_token = tokens
    if identity_token not in prompt:
        raise SetseqError(
            f"the static prompt for {name!r} must contain its concept token "
            f"{identity_token}, e.g. 'a {identity_token} dancer on a bridge'; got {prompt!r}."
        )
    if needs_motion and not motion_prompt:
        raise SetseqError(
            f"method {method!r} learns motion, so {name!r} needs a motion prompt with "
            f"{motion_token}, e.g. 'it moves in {motion_token} motion'."
        )
    if motion_prompt and needs_motion and motion_token not in motion_prompt:
        raise SetseqError(
            f"the motion prompt for {name!r} must contain its motion token {motion_token}; got {motion_prompt!r}."
        )


def check_experts(backbone: Backbone, cfg: TrainConfig) -> None:
    """For a base of experts by timestep (Wan 2.2 T2V-A14B), where a sample trains only the expert of
    its time: refuse an expert setting that names no expert of this base, and, when the samples'
    times come from one shared distribution, warn when an expert's range draws under a tenth of them.

    Raises:
        SetseqError: for `cfg.flow.experts` neither "balanced", "shared" nor an expert of the base.
    """
    fc, experts = cfg.flow, getattr(backbone, "experts", None) or {}
    known = (*EXPERT_MODES, *experts)
    if fc.experts not in known:
        raise SetseqError(f"experts = {fc.experts!r} is not one of {', '.join(known)} for base {backbone.name!r}.")
    if fc.experts != "shared":
        return
    for name, expert in experts.items():
        lo, hi = expert["t"]
        share = flow.fraction_at_least(lo, fc.timesteps, fc.logit_mean, fc.logit_std, fc.shift)
        share -= flow.fraction_at_least(hi, fc.timesteps, fc.logit_mean, fc.logit_std, fc.shift)
        if share < 0.1:
            warn(
                f"the {name} expert serves t in [{lo:g}, {hi:g}], where {share:.1%} of training samples "
                "fall with these timestep settings, so its adapters learn little; --experts balanced "
                "gives each expert its share, --timestep-shift moves samples towards noise."
            )


def optimizer_class(name: str) -> type[Optimizer]:
    """torch's AdamW, or bitsandbytes' AdamW8bit (moments in 8 bits: a quarter of the state's memory)."""
    if name != "adamw8bit":
        return torch.optim.AdamW
    try:
        import bitsandbytes
    except ImportError:
        raise SetseqError(
            "--optimizer adamw8bit needs bitsandbytes, which is not installed; "
            "run `pip install bitsandbytes` or use --optimizer adamw."
        ) from None
    return bitsandbytes.optim.AdamW8bit


def check_finite(losses: list[float], stage: StageConfig, step: int, ckpt_path: Path) -> None:
    """Stop a run whose loss became NaN or infinite, saying where to resume from.

    Raises:
        SetseqError: when a loss of `losses` (recorded by `step` of `stage`) is not finite.
    """
    if all(map(math.isfinite, losses)):
        return
    where = (
        f"the last good checkpoint is {ckpt_path}; resume it with --resume (perhaps with a lower --lr)"
        if ckpt_path.is_file()
        else "no checkpoint had been written yet"
    )
    raise SetseqError(
        f"the loss became non-finite in stage {stage.name!r} by step {step + 1}; training stopped and {where}."
    )
