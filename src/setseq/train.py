"""The two-stage Set-and-Sequence trainer (paper sec. 3.2-3.4), backbone-agnostic.

A run is a list of stages (config.StageConfig), each training one part of the model:
    identity  A, B_id        on an unordered set of frames (stage 1, "set") or on clips
    motion    B_mo[c]        on whole clips, A and B_id frozen (stage 2, "sequence")
    tokens    concept-token embeddings only (textual inversion)
with the regularisers of sec. 3.4 switchable in config.RegConfig. What a micro-batch holds and the
loss taken on it are `setseq.batches`'s (`Batches.draw`, `batch_loss`), checkpoints
`setseq.checkpoint`'s, the prior-preservation videos `setseq.prior`'s and the concept file's metadata
`concept.run_metadata`'s, the checks of a run `setseq.run_checks`'s (`check_run`). This file says what each stage trains
(`begin_stage`), and its `Trainer` sets up, steps and runs. Every random draw comes from torch's
global generator, whose state is checkpointed, so a resumed CPU run ends bit-identical to an
uninterrupted one.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from tqdm.auto import tqdm

from setseq import checkpoint, lora, parallel, preempt
from setseq import concept as concept_io
from setseq.backbones.base import Backbone, Geometry
from setseq.batches import Batches, ConceptSpec, LatentCache, TextCache, batch_loss
from setseq.config import OptimConfig, StageConfig, TrainConfig
from setseq.errors import SetseqError
from setseq.fileio import cache_root, check_space, check_writable
from setseq.generate import write_sample
from setseq.log import note
from setseq.prior import prior_videos
from setseq.run_checks import (
    check_concepts,
    check_finite,
    check_prompts,
    check_run,
    check_sharding,
    optimizer_class,
)

ENCODER_PARK = "cpu"  # where the text encoder and the VAE wait during the training steps

__all__ = [
    "ConceptSpec",
    "Monitor",
    "Stopped",
    "Trainer",
    "add_adapters",
    "begin_stage",
    "check_concepts",
    "check_prompts",
    "check_run",
    "optimizer_class",
]

# ============================================================================================
# stages: what each one trains
# ============================================================================================


def add_adapters(backbone: Backbone, concepts: list[ConceptSpec], cfg: TrainConfig) -> dict[str, lora.SetSeqLinear]:
    """Add the concepts' tokens to `backbone` and, unless only tokens train, a SetSeqLinear on each
    target layer, with a motion residual per concept when a stage learns motion. Returns the layers."""
    backbone.add_concept_tokens([t for c in concepts for t in (c.identity_token, c.motion_token)])
    if all(s.train == "tokens" for s in cfg.stages):
        return {}
    targets = cfg.lora.targets or backbone.lora_targets
    layers = lora.inject(backbone.transformer, targets, cfg.lora.rank, cfg.lora.scale)
    if any(s.train == "motion" for s in cfg.stages):
        for layer in layers.values():
            for c in concepts:
                layer.add_motion(c.name)
    return layers


def freeze(backbone: Backbone) -> None:
    """Nothing trains and no dropout acts: the state before and after every stage."""
    backbone.transformer.requires_grad_(False)
    for p in backbone.concept_token_parameters():
        p.requires_grad_(False)
    lora.set_dropout(backbone.transformer)


def begin_stage(
    backbone: Backbone, layers: dict[str, lora.SetSeqLinear], stage: StageConfig, optim: OptimConfig
) -> tuple[Optimizer, list[nn.Parameter], bool]:
    """Unfreeze what `stage` trains, switch on its coefficient dropout (sec. 3.4.2) and build its
    optimiser. Returns the optimiser, the trained parameters and whether the tokens train."""
    freeze(backbone)
    groups, adapted = [], layers.values()
    if stage.train == "identity":  # A and B_id
        groups.append([p for l in adapted for p in (l.basis, l.identity)])
        lora.set_dropout(backbone.transformer, identity=stage.coef_dropout)
    elif stage.train == "motion":  # B_mo[c]; A and B_id frozen
        groups.append([p for l in adapted for p in l.motion.values()])
        if stage.train_basis:  # not the paper's (A1 frozen): see StageConfig.train_basis
            groups.append([l.basis for l in adapted])
        lora.set_dropout(backbone.transformer, motion=stage.coef_dropout)
    token_lr = optim.token_lr if optim.token_lr is not None else (optim.lr if stage.train == "tokens" else None)
    param_groups = [{"params": g, "lr": optim.lr, "weight_decay": optim.weight_decay} for g in groups]
    if token_lr is not None:
        tokens = backbone.concept_token_parameters()
        param_groups.append({"params": tokens, "lr": token_lr, "weight_decay": 0.0})
    params = [p for g in param_groups for p in g["params"]]
    for p in params:
        p.requires_grad_(True)
    opt = optimizer_class(optim.optimizer)(
        param_groups, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay
    )
    return opt, params, token_lr is not None


# ============================================================================================
# the trainer
# ============================================================================================


class Monitor:
    """What a caller (the web UI) sees of a run as it goes, and how it stops one; the default sees
    nothing and never stops. `Trainer` calls `start` once set up, `losses` after each recorded step
    and `stop` after each step."""

    flush_every = 10  # steps whose losses wait on the device before one host sync records them

    def start(self, cfg: TrainConfig, done: int) -> None:
        """The run begins (`done` steps in, when it resumes a checkpoint) with the stages of `cfg`."""

    def losses(self, stage_index: int, stage: StageConfig, step: int, losses: dict[str, list[float]]) -> None:
        """`step` steps of stage `stage_index` are done; `losses` holds every stage's losses so far."""

    def stop(self) -> bool:
        """Whether the run should stop now (it records the step's losses and checkpoints first, then
        raises `Stopped`); asked after every step but a stage's last."""
        return False


class Stopped(Exception):
    """A run stopped on its monitor's request; its checkpoint `path` resumes it."""

    def __init__(self, path: Path):
        super().__init__(f"training stopped; its checkpoint {path} resumes it.")
        self.path = path


class Trainer:
    """Trains a concept set into `backbone` and writes it to `out` (see `run`).

    Args:
        backbone, concepts, cfg: the base model, the concepts to learn, the run's stages and settings.
        out: the concept file NAME.safetensors; its checkpoint NAME.ckpt is written beside it.
        geometry: frames, size and fps of the training clips (default: the base's).
        progress: show a progress bar; cache_dir: where prior videos are cached (`fileio.cache_root`).
        monitor: sees the losses as they are recorded and may stop the run (`Monitor`).

    Raises:
        SetseqError: for a run that could not train (see `check_run` and `check_sharding`).
        Stopped: from `run`, when the monitor stopped it (after a checkpoint at that step).
    """

    def __init__(
        self,
        backbone: Backbone,
        concepts: list[ConceptSpec],
        cfg: TrainConfig,
        out: str | Path,
        geometry: Geometry | None = None,
        progress: bool = True,
        cache_dir: str | Path | None = None,
        monitor: Monitor | None = None,
    ):
        self.backbone, self.concepts, self.cfg = backbone, concepts, cfg
        self.monitor = monitor or Monitor()
        self.geometry = geometry or backbone.geometry
        check_run(backbone, concepts, cfg, self.geometry)
        self.out, self.progress = Path(out), progress
        self.ckpt_path = self.out.with_name(self.out.stem + ".ckpt")
        self.resume_hint = "run the same command with --resume to continue"  # said when a signal stops the run
        self.stage1_path = self.out.with_name(self.out.name.removesuffix(".safetensors") + ".stage1.safetensors")
        check_writable(self.out, self.ckpt_path, self.stage1_path, create=True)  # before any training time is spent
        self.cache_dir = Path(cache_dir or cache_root())
        self.losses: dict[str, list[float]] = {s.name: [] for s in cfg.stages}
        self.layers: dict[str, lora.SetSeqLinear] = {}
        self.texts: TextCache | None = None  # prompt embeddings, when encoded ahead (`_encode_ahead`)
        self.parked: dict[str, bool] = {}  # which encoders wait in CPU memory during the steps
        self.expert_samples: dict[str, dict[str, int]] = {}  # {stage: {expert: samples it trained on}}
        # Under torchrun: join the process group; each rank trains on a share of every batch.
        self.world = parallel.setup(next(backbone.transformer.parameters()).device)
        self.sharded = check_sharding(cfg, self.world, backbone)

    def run(self, resume: bool = False) -> concept_io.ConceptSet:
        """Train every stage, checkpointing as it goes; write `out` (and `NAME.stage1.safetensors`
        after the set stage of a two-stage method). Returns the final concept set.

        Raises:
            preempt.Preempted: on SIGTERM or SIGINT, after the current step and its checkpoint
                (a second signal raises KeyboardInterrupt at once); `run(resume=True)` continues.
        """
        with preempt.stop_on_signals() as self.stop:
            return self._run(resume)

    def _run(self, resume: bool) -> concept_io.ConceptSet:
        cfg = self.cfg
        state = self._start(resume)
        start_stage, start_step = (state["stage"], state["step"]) if state else (0, 0)
        done = sum(s.steps for s in cfg.stages[:start_stage]) + start_step
        self.monitor.start(cfg, done)
        show = self.progress and self.world.main
        bar = tqdm(
            total=sum(s.steps for s in cfg.stages), initial=done, desc="training", disable=not show, dynamic_ncols=True
        )
        self.backbone.transformer.train()
        try:
            self._run_stages(state, start_stage, start_step, bar)
        finally:
            self._unpark()
        bar.close()
        self.backbone.transformer.eval()
        result = concept_io.collect(self.backbone, self._meta("final"))
        if self.world.main:
            concept_io.save(result, self.out)
            self.ckpt_path.unlink(missing_ok=True)
        return result

    def _run_stages(self, state: dict[str, Any] | None, start_stage: int, start_step: int, bar: tqdm) -> None:
        """Every stage from `start_stage` (step `start_step` of it when resuming `state`), checkpointing."""
        cfg = self.cfg
        for si, stage in enumerate(cfg.stages[start_stage:], start_stage):
            opt, params, train_tokens = begin_stage(self.backbone, self.layers, stage, cfg.optim)
            if state is not None:  # the stage the checkpoint was made in
                checkpoint.resume_stage(opt, state, cfg.optim)
            bar.set_description(f"stage {si + 1}/{len(cfg.stages)} ({stage.name})")
            pending: list[torch.Tensor] = []
            seen = dict(getattr(self.backbone.transformer, "samples", {}))  # per expert, before the stage
            for step in range(start_step if state is not None else 0, stage.steps):
                pending.append(self._step(stage, step, params, opt, train_tokens))
                last = step + 1 == stage.steps
                periodic = (step + 1) % cfg.checkpoint_every == 0
                due = len(pending) >= self.monitor.flush_every or last or periodic
                stop = self._stop_requested(due)  # a signal (SIGTERM, Ctrl-C)
                halt = not last and not stop and self.monitor.stop()  # a monitor serves one-process runs (the UI's)
                if due or stop or halt:
                    self._flush(pending, stage, step, bar)
                    self.monitor.losses(si, stage, step + 1, self.losses)
                if (periodic or stop or halt) and not last:
                    self._save_checkpoint(si, step + 1, opt)
                if stop and not last:
                    self._preempted(bar, f"after step {step + 1} of {stage.steps} of stage {si + 1} ({stage.name})")
                if halt:
                    bar.close()
                    raise Stopped(self.ckpt_path)
                if cfg.validate_every and (step + 1) % cfg.validate_every == 0:
                    self._validate(stage, step + 1)
            self._count_expert_samples(stage, seen)
            self._end_stage(si, stage)
            state = None
            if si + 1 < len(cfg.stages) and self._stop_requested(True):
                self._preempted(bar, f"after stage {si + 1} ({stage.name})")

    def _check_space(self) -> None:
        """Room on the disk for what rank 0 writes, checked now that the sizes are known and before
        any training time is spent; every rank raises alike (none waits on the others)."""
        problem = None
        if self.world.main:
            try:
                check_space(
                    self.out.parent, self._bytes_to_write(), "the concept file, its stage-1 file and checkpoint"
                )
            except SetseqError as e:
                problem = str(e)
        problem = parallel.from_main(self.world, problem)
        if problem:
            raise SetseqError(problem)

    def _bytes_to_write(self) -> int:
        """About what the run writes at most at once: the concept and stage-1 files (float32 adapters
        and tokens) and the checkpoint (the same tensors with two Adam moments each), plus 1 MiB."""
        adapters = sum(
            layer.basis.numel() + layer.identity.numel() + sum(b.numel() for _, b in layer.motion.items())
            for layer in self.layers.values()
        )
        tokens = sum(e.numel() for e in self.backbone.token_embeddings().values())
        return 4 * (adapters + tokens) * (1 + 1 + 3) + 2**20

    def _stop_requested(self, sync_point: bool) -> bool:
        """Whether a signal asked the run to stop; with several processes, asked on any of them,
        agreed on at sync points only (every rank must checkpoint at the same step)."""
        if self.world.size == 1:
            return self.stop.requested
        return sync_point and parallel.on_any_rank(self.world, self.stop.requested)

    def _preempted(self, bar: tqdm, where: str) -> None:
        """The checkpoint is written: say how to go on, and stop."""
        bar.close()
        signum = self.stop.signum or signal.SIGTERM  # another rank received it
        raise preempt.Preempted(
            f"stopped by {signal.Signals(signum).name} {where}; checkpoint {self.ckpt_path} is written: "
            f"{self.resume_hint}.",
            signum,
        )

    def _start(self, resume: bool) -> dict[str, Any] | None:
        """Set up the data and the adapters; with `resume`, load the checkpoint (its state, or None); compile, shard."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.backbone.set_gradient_checkpointing(cfg.gradient_checkpointing)
        prior = None
        if cfg.reg.prior_preservation:
            prior = prior_videos(self.backbone, cfg.reg, self.geometry, cfg.seed, self.cache_dir, self.world)
        self.batches = Batches(self.concepts, self.geometry.frames, cfg.reg, prior, self.backbone.frame_step)
        self.latents = LatentCache(self.backbone.encode_video)  # each window through the VAE once
        self.layers = add_adapters(self.backbone, self.concepts, cfg)
        freeze(self.backbone)
        self._check_space()
        state = checkpoint.start_run(self.ckpt_path, self.backbone, self.layers, cfg.to_dict(), self.world, resume)
        if state is not None:
            self.losses = state["losses"]
        self.texts, self.parked = self._encode_ahead()
        if cfg.compile:
            parallel.compile_blocks(self.backbone.transformer)
        if self.sharded:  # after the checkpoint's tensors are in place: they load into whole tensors
            parallel.shard(self.backbone.transformer)
        return state

    def _encode_ahead(self) -> tuple[TextCache | None, dict[str, bool]]:
        """Encode every prompt and clip window the run can draw, then park the text encoder and the VAE
        in CPU memory (a diffusers base, unless cfg.keep_encoders). The text encoder stays when concept
        tokens train (their prompts change every step), the VAE when stitched clips are drawn (each
        is new pixels). Returns the prompt cache (None: prompts are encoded as drawn) and what is parked."""
        bb, cfg = self.backbone, self.cfg
        if cfg.keep_encoders or not hasattr(bb, "park_encoders"):
            return None, {}
        tokens_train = cfg.optim.token_lr is not None or any(s.train == "tokens" for s in cfg.stages)
        stitched = len(self.concepts) > 1 and cfg.reg.stitch_prob > 0
        texts, stages = None, [s for s in cfg.stages if s.steps]
        if not tokens_train:
            texts = TextCache(bb.encode_text)
            texts.fill(self.batches.prompts(stages))
        self.latents.fill(self.batches.windows(stages))
        parked = {"text": not tokens_train, "vae": not stitched}
        bb.park_encoders(ENCODER_PARK, **parked)
        kept = [what for what, key in (("the text encoder", "text"), ("the VAE", "vae")) if not parked[key]]
        if kept and self.world.main:
            why = {"the text encoder": "concept tokens train", "the VAE": "stitched clips are encoded as drawn"}
            note(f"{' and '.join(kept)} stay on the device for the run ({'; '.join(why[k] for k in kept)}).")
        return texts, parked

    def _unpark(self) -> None:
        """The parked encoders back on the device (for sampling; at the end of a run)."""
        if any(self.parked.values()):
            self.backbone.unpark_encoders()

    def _step(
        self, stage: StageConfig, step: int, params: list[nn.Parameter], opt: Optimizer, train_tokens: bool
    ) -> torch.Tensor:
        """One optimiser step: the gradients of the step's micro-batches summed (over the ranks too),
        clipped. Returns the step's loss, on the device (no host sync per step)."""
        o = self.cfg.optim
        sizes = self.batches.micro_sizes(stage, o.batch_size, o.micro_batch, self.world.size)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for m, size in enumerate(sizes):  # gradient accumulation
            batch = self.batches.draw(stage, size, step * len(sizes) + m)
            first = step * o.batch_size + sum(sizes[:m])  # the micro-batch's first sample in the stage
            args = (self.backbone, batch, self.cfg, self.world, train_tokens, self.latents, first, self.texts)
            loss = batch_loss(*args)
            loss = loss / o.batch_size
            loss.backward()
            total = total + loss.detach()
        if self.world.size > 1:  # DDP's all-reduce: from the gradient of its own share to that of the batch
            total = parallel.sum_gradients(params, total)
        clip = parallel.clip_grad_norm if self.sharded else torch.nn.utils.clip_grad_norm_  # FSDP's or torch's
        clip(params, o.grad_clip)
        opt.step()
        return total

    def _flush(self, pending: list[torch.Tensor], stage: StageConfig, step: int, bar: tqdm) -> None:
        """One host sync per few steps: record the pending losses (and empty the list), stop on a non-finite one."""
        values = torch.stack(pending).tolist()
        pending.clear()
        check_finite(values, stage, step, self.ckpt_path)
        self.losses[stage.name].extend(values)
        bar.update(len(values))
        bar.set_postfix(loss=f"{values[-1]:.4f}")

    def _count_expert_samples(self, stage: StageConfig, before: dict[str, int]) -> None:
        """Record and say how many samples each expert trained on in `stage` (a base of experts only)."""
        now = getattr(self.backbone.transformer, "samples", None)
        if not now:
            return
        counts = {e: now[e] - before.get(e, 0) for e in now}
        self.expert_samples[stage.name] = counts
        if self.world.main:
            shown = ", ".join(f"{e} {n}" for e, n in counts.items())
            note(f"stage {stage.name!r}: samples each expert trained on ({self.cfg.flow.experts}): {shown}")

    def _end_stage(self, index: int, stage: StageConfig) -> None:
        """Freeze, write the stage-1 concept file after the first of several stages, checkpoint."""
        freeze(self.backbone)
        if index == 0 and len(self.cfg.stages) > 1:
            stage1 = concept_io.collect(self.backbone, self._meta(stage.name))  # sharded: on every rank
            if self.world.main:
                concept_io.save(stage1, self.stage1_path)
        self._save_checkpoint(index + 1, 0, None)

    def _meta(self, stage: str) -> dict[str, Any]:
        meta = concept_io.run_metadata(
            self.backbone, self.cfg, self.concepts, self.geometry, list(self.layers), self.losses, stage
        )
        if self.expert_samples:  # this process's samples per expert and stage (of this run, if resumed)
            meta["expert_samples"] = self.expert_samples
        return meta

    def _save_checkpoint(self, stage_index: int, step: int, opt: Optimizer | None) -> None:
        """Rank 0 writes; when sharded, every rank must call this, as the shards are gathered first."""
        args = (self.ckpt_path, self.backbone, opt, self.world, self.sharded)
        checkpoint.save_run(*args, stage=stage_index, step=step, losses=self.losses, config=self.cfg.to_dict())

    def _validate(self, stage: StageConfig, step: int) -> None:
        """A sample of the first concept's full prompt, in NAME.samples/ (sharded: every rank samples)."""
        if self.world.main or self.sharded:
            path = self.out.with_name(self.out.stem + ".samples") / f"{stage.name}-{step:05d}.mp4"
            prompt, g = self.concepts[0].full_prompt, self.geometry
            self._unpark()
            write_sample(self.backbone, prompt, path, geometry=g, seed=self.cfg.seed, write=self.world.main)
            if any(self.parked.values()):
                self.backbone.park_encoders(ENCODER_PARK, **self.parked)
            self.backbone.transformer.train()
