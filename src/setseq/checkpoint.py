"""Training checkpoints: `NAME.ckpt` beside the concept file, so that `--resume` continues a run.

A checkpoint holds the adapter tensors and token embeddings (as a concept file names them), the
optimiser state, the losses so far, the position (stage, step) and torch's global generator state:
every random draw of training comes from that generator, so a resumed CPU run ends bit-identical to
an uninterrupted one. It also holds the run's configuration and the base's fingerprint, and refuses
to resume under other settings, except those a run may change across a resume (see `learning`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from setseq import concept as concept_io
from setseq import lora, parallel
from setseq.backbones.base import Backbone
from setseq.config import OptimConfig
from setseq.errors import SetseqError
from setseq.fileio import atomic_path
from setseq.log import note, warn

VERSION = 1


def learning(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """A run's settings less those a checkpoint resumes across: hardware (compile, shard, gradient
    checkpointing, keep_encoders) and the learning rates (after a non-finite loss, resume with a lower --lr);
    whether tokens train stays."""
    if config is None:
        return None
    out = {k: v for k, v in config.items() if k not in ("compile", "shard", "gradient_checkpointing", "keep_encoders")}
    if isinstance(out.get("flow"), dict):  # checkpoints from before 2026-12-07 have no expert setting
        out["flow"] = {"experts": "balanced", **out["flow"]}
    if isinstance(out.get("optim"), dict):
        optim = dict(out["optim"])
        optim.pop("lr", None)
        optim["token_lr"] = optim.get("token_lr") is not None
        out["optim"] = optim
    return out


def save(
    path: str | Path,
    tensors: dict[str, torch.Tensor],
    optimizer: dict[str, Any] | None,
    *,
    stage: int,
    step: int,
    losses: dict[str, list[float]],
    config: dict[str, Any],
    fingerprint: str,
) -> None:
    """Write a checkpoint atomically, with torch's generator state as it is now.

    Args:
        path: the checkpoint file.
        tensors: adapter tensors and token embeddings, named as in a concept file.
        optimizer: the optimiser's whole (unsharded) state dict, or None between stages.
        stage, step: where the run resumes: `step` steps into stage number `stage` (0-based).
        losses: the losses so far, by stage name.
        config: the run's configuration (`TrainConfig.to_dict()`); fingerprint: the base's.
    """
    state = {
        "version": VERSION,
        "stage": stage,
        "step": step,
        "tensors": tensors,
        "optimizer": optimizer,
        "rng": torch.get_rng_state(),
        "losses": losses,
        "config": config,
        "fingerprint": fingerprint,
    }
    # through a file object, so that a full disk raises OSError (torch.save to a path says only "file write failed")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)


def load(path: str | Path, config: dict[str, Any], fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint at `path`, or None (with a warning) when there is none.

    Raises:
        SetseqError: when the file cannot be read, or was made with other settings (`learning`
            compares them) or another base.
    """
    path = Path(path)
    if not path.is_file():
        warn(f"no checkpoint at {path}; starting from the beginning.")
        return None
    try:
        state = torch.load(path, weights_only=False)
    except Exception as e:  # a torn or foreign file: say which, do not guess
        raise SetseqError(f"checkpoint {str(path)!r} cannot be read ({e}); delete it to start afresh.") from None
    if not _same_run(state, config, fingerprint):
        raise SetseqError(
            f"checkpoint {str(path)!r} was made with another configuration or base; "
            f"run with the same settings, or delete it to start afresh."
        )
    return state


def _same_run(state: dict[str, Any], config: dict[str, Any], fingerprint: str) -> bool:
    """Whether a checkpoint's state was made with these settings (`learning`'s) and this base."""
    return learning(state.get("config")) == learning(config) and state.get("fingerprint") == fingerprint


def resumable(path: str | Path, config: dict[str, Any], fingerprint: str) -> bool:
    """Whether `path` holds a readable checkpoint of a run with these settings on this base, so
    that `load` would continue it (a job that decides by itself whether to resume; no warning)."""
    try:
        state = torch.load(path, weights_only=False) if Path(path).is_file() else None
    except Exception:  # a torn or foreign file: not a run to continue
        return False
    return state is not None and _same_run(state, config, fingerprint)


def resume_stage(opt: torch.optim.Optimizer, state: dict[str, Any], optim: OptimConfig) -> None:
    """Continue a stage from `state`: the optimiser's moments (at this run's learning rates, which
    may differ; say so) and, last, torch's generator state."""
    if state["optimizer"] is not None:
        rates = [g["lr"] for g in opt.param_groups]  # this run's; loading the state restores the old ones
        parallel.load_optimizer_state(opt, state["optimizer"])
        for g, lr in zip(opt.param_groups, rates):
            g["lr"] = lr
    old = state.get("config", {}).get("optim", {})
    for key, flag in (("lr", "--lr"), ("token_lr", "--token-lr")):
        if old.get(key) != getattr(optim, key):
            note(f"resuming with {flag} {getattr(optim, key):g}; the checkpoint was made at {old.get(key):g}.")
    torch.set_rng_state(state["rng"])


# --------------------------------------------------------------------------------------------
# a training run's checkpoint: what the Trainer saves and resumes
# --------------------------------------------------------------------------------------------


def save_run(
    path: str | Path,
    backbone: Backbone,
    opt: torch.optim.Optimizer | None,
    world: parallel.World,
    sharded: bool,
    *,
    stage: int,
    step: int,
    losses: dict[str, list[float]],
    config: dict[str, Any],
) -> None:
    """Checkpoint a run: the adapters and tokens in `backbone`, the optimiser's state, the position.
    Rank 0 writes; when `sharded`, every rank must call this, as the shards are gathered first.

    Args:
        opt: the stage's optimiser, or None between stages. The rest as in `save`.
    """
    if not (world.main or sharded):
        return
    tensors = concept_io.collect(backbone, {}).tensors
    optimizer = None if opt is None else parallel.full_optimizer_state(opt)
    if world.main:
        save(
            path,
            tensors,
            optimizer,
            stage=stage,
            step=step,
            losses=losses,
            config=config,
            fingerprint=backbone.fingerprint(),
        )


def load_run(
    path: str | Path, backbone: Backbone, layers: dict[str, lora.SetSeqLinear], config: dict[str, Any]
) -> dict[str, Any] | None:
    """Resume a run: the checkpoint's adapters into `layers` and its tokens into `backbone`.

    Returns:
        The checkpoint's state (stage, step, losses, optimizer, rng), or None without one.

    Raises:
        SetseqError: as `load`, or a tensor that does not fit its layer.
    """
    state = load(path, config, backbone.fingerprint())
    if state is not None:
        concept_io.load_adapters(layers, state["tensors"], f"checkpoint {str(path)!r}")
        tokens = {k[len("token.") :]: v for k, v in state["tensors"].items() if k.startswith("token.")}
        backbone.load_token_embeddings(tokens)
    return state


def start_run(
    path: str | Path,
    backbone: Backbone,
    layers: dict[str, lora.SetSeqLinear],
    config: dict[str, Any],
    world: parallel.World,
    resume: bool,
) -> dict[str, Any] | None:
    """Where a run starts, the same on every rank: with `resume`, the checkpoint loaded (`load_run`);
    without, afresh (warning that an existing checkpoint will be overwritten).

    Returns:
        The checkpoint's state as `load_run`'s, or None to start afresh.

    Raises:
        SetseqError: as `load_run`, or when the ranks found different checkpoints.
    """
    # A checkpoint that rank 0 is still writing (an interrupted run in this very process group)
    # is complete before any rank looks for it, and every rank must start from the same one.
    parallel.barrier(world)
    state = load_run(path, backbone, layers, config) if resume else None
    parallel.same_start(world, (state["stage"], state["step"]) if state else None, path)
    if not resume and Path(path).is_file():
        warn(f"starting afresh and overwriting {path}; pass --resume to continue it instead.")
    return state
