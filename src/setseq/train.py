"""The two-stage Set-and-Sequence trainer (paper sec. 3.2-3.4), backbone-agnostic.

A run is a list of stages (config.StageConfig), each training one part of the model:
    identity  A, B_id        on an unordered set of frames (stage 1, "set") or on clips
    motion    B_mo[c]        on whole clips, A and B_id frozen (stage 2, "sequence")
    tokens    concept-token embeddings only (textual inversion)
with the regularisers of sec. 3.4 switchable in config.RegConfig. What a micro-batch holds is
`setseq.batches`'s, the loss `setseq.flow.training_loss`, checkpoints `setseq.checkpoint`'s, the
prior-preservation videos `setseq.prior`'s and the concept file's metadata `concept.run_metadata`'s;
the `Trainer` sets up, steps and runs. Every random draw comes from torch's global generator, whose state
is checkpointed, so a resumed CPU run ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from setseq import checkpoint, flow, lora, parallel
from setseq import concept as concept_io
from setseq.backbones.base import Backbone, Geometry, Text
from setseq.batches import Batch, Batches, ConceptSpec, LatentCache
from setseq.config import StageConfig, TrainConfig
from setseq.errors import SetseqError
from setseq.fileio import cache_root
from setseq.generate import write_sample
from setseq.log import warn
from setseq.prior import prior_videos

__all__ = ["ConceptSpec", "Trainer", "check_concepts", "optimizer_class"]


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
        if c.identity_token not in c.prompt:
            raise SetseqError(
                f"the static prompt for {c.name!r} must contain its concept token "
                f"{c.identity_token}, e.g. 'a {c.identity_token} dancer on a bridge'; got {c.prompt!r}."
            )
        if needs_motion and not c.motion_prompt:
            raise SetseqError(
                f"method {cfg.method!r} learns motion, so {c.name!r} needs a motion prompt with "
                f"{c.motion_token}, e.g. 'it moves in {c.motion_token} motion'."
            )
        if c.motion_prompt and needs_motion and c.motion_token not in c.motion_prompt:
            raise SetseqError(
                f"the motion prompt for {c.name!r} must contain its motion token "
                f"{c.motion_token}; got {c.motion_prompt!r}."
            )
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


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
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


class Trainer:
    """Trains a concept set into `backbone` and writes it to `out` (see `run`)."""

    def __init__(
        self,
        backbone: Backbone,
        concepts: list[ConceptSpec],
        cfg: TrainConfig,
        out: str | Path,
        geometry: Geometry | None = None,
        progress: bool = True,
        cache_dir: str | Path | None = None,
    ):
        cfg.validate()
        self.backbone, self.concepts, self.cfg = backbone, concepts, cfg
        self.geometry = geometry or backbone.geometry
        backbone.check_geometry(self.geometry)
        check_concepts(concepts, cfg, self.geometry)
        self.out = Path(out)
        self.ckpt_path = self.out.with_name(self.out.stem + ".ckpt")
        self.progress = progress
        self.cache_dir = Path(cache_dir or cache_root())
        self.losses: dict[str, list[float]] = {s.name: [] for s in cfg.stages}
        self.uses_lora = any(s.train != "tokens" for s in cfg.stages)
        self.self_cond = cfg.reg.self_conditioning and backbone.supports_self_conditioning
        if cfg.reg.self_conditioning and not backbone.supports_self_conditioning:
            warn(f"base {backbone.name!r} has no self-conditioning input; that regulariser is off for this run.")
        for c in concepts:
            unknown = backbone.unknown_words(c.full_prompt)
            if unknown:
                warn(f"the text encoder does not know the words {sorted(set(unknown))}; they carry no meaning.")
        optimizer_class(cfg.optim.optimizer)  # a missing package fails now, not after the set-up
        # Under torchrun: join the process group; each rank trains on a share of every batch.
        self.world = parallel.setup(next(backbone.transformer.parameters()).device)
        parallel.check_batch(cfg.optim, self.world.size)
        self.sharded = cfg.shard and self.world.size > 1
        if cfg.shard and self.world.size == 1:
            warn(
                "--shard splits the model over the processes of a torchrun launch; this run has one, so it is not sharded."
            )
        if self.sharded and cfg.compile:
            raise SetseqError("--compile together with --shard is not supported yet; use one of them.")

    # ---------------------------------------------------------------------------------------
    # Set-up
    # ---------------------------------------------------------------------------------------
    def _setup(self) -> None:
        torch.manual_seed(self.cfg.seed)
        cfg = self.cfg
        self.backbone.set_gradient_checkpointing(cfg.gradient_checkpointing)
        prior = None
        if cfg.reg.prior_preservation:
            prior = prior_videos(self.backbone, cfg.reg, self.geometry, cfg.seed, self.cache_dir, self.world)
        self.batches = Batches(self.concepts, self.geometry.frames, self.cfg.reg, prior, self.backbone.frame_step)
        self.latents = LatentCache(self.backbone.encode_video)  # each window through the VAE once
        tokens = [t for c in self.concepts for t in (c.identity_token, c.motion_token)]
        self.backbone.add_concept_tokens(tokens)
        self.layers: dict[str, lora.SetSeqLinear] = {}
        if self.uses_lora:
            self.targets = self.cfg.lora.targets or self.backbone.lora_targets
            self.layers = lora.inject(self.backbone.transformer, self.targets, self.cfg.lora.rank, self.cfg.lora.scale)
            if any(s.train == "motion" for s in self.cfg.stages):
                for layer in self.layers.values():
                    for c in self.concepts:
                        layer.add_motion(c.name)
        self._freeze()

    # ---------------------------------------------------------------------------------------
    # Stages
    # ---------------------------------------------------------------------------------------
    def _freeze(self) -> None:
        """Nothing trains and no dropout acts: the state before and after every stage."""
        self.backbone.transformer.requires_grad_(False)
        for p in self.backbone.concept_token_parameters():
            p.requires_grad_(False)
        lora.set_dropout(self.backbone.transformer)

    def _begin_stage(self, stage: StageConfig) -> tuple[torch.optim.Optimizer, list[torch.nn.Parameter], bool]:
        """Unfreeze what `stage` trains, switch on its coefficient dropout (sec. 3.4.2) and build its
        optimiser. Returns the optimiser, the trained parameters and whether the tokens train."""
        o, layers = self.cfg.optim, self.layers.values()
        self._freeze()
        groups = []
        if stage.train == "identity":
            groups.append([p for l in layers for p in (l.basis, l.identity)])
            lora.set_dropout(self.backbone.transformer, identity=stage.coef_dropout)
        elif stage.train == "motion":
            groups.append([p for l in layers for p in l.motion.values()])
            if stage.train_basis:  # not the paper's (A1 frozen): see StageConfig.train_basis
                groups.append([l.basis for l in layers])
            lora.set_dropout(self.backbone.transformer, motion=stage.coef_dropout)
        token_lr = o.token_lr if o.token_lr is not None else (o.lr if stage.train == "tokens" else None)
        param_groups = [{"params": g, "lr": o.lr, "weight_decay": o.weight_decay} for g in groups]
        if token_lr is not None:
            tokens = self.backbone.concept_token_parameters()
            param_groups.append({"params": tokens, "lr": token_lr, "weight_decay": 0.0})
        params = [p for g in param_groups for p in g["params"]]
        for p in params:
            p.requires_grad_(True)
        opt = optimizer_class(o.optimizer)(param_groups, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        return opt, params, token_lr is not None

    def _end_stage(self, index: int, stage: StageConfig) -> None:
        """Freeze, write the stage-1 concept file after the first of several stages, checkpoint."""
        self._freeze()
        if index == 0 and len(self.cfg.stages) > 1:
            stage1 = concept_io.collect(self.backbone, self._meta(stage.name))  # sharded: on every rank
            if self.world.main:
                concept_io.save(stage1, self.stage1_path)
        self._save_checkpoint(index + 1, 0, None)

    # ---------------------------------------------------------------------------------------
    # One optimisation step
    # ---------------------------------------------------------------------------------------
    def _loss(self, stage: StageConfig, n: int, train_tokens: bool, micro_index: int) -> torch.Tensor:
        """The summed loss of this rank's share of a micro-batch of n samples. Every rank draws the
        random numbers of all n samples, so all ranks stay on one random stream (see setseq.parallel),
        but encodes and runs only its own share."""
        batch = self.batches.draw(stage, n, micro_index)
        with lora.scales(self.backbone.transformer, motion=batch.motion):  # this micro-batch's only
            return self._batch_loss(batch, train_tokens)

    def _batch_loss(self, batch: Batch, train_tokens: bool) -> torch.Tensor:
        """The summed, weighted loss of this rank's share of a batch of n clips (n, F', C, H, W)."""
        fc, bb, n = self.cfg.flow, self.backbone, len(batch.prompts)
        with torch.set_grad_enabled(train_tokens):  # all n prompts: the token mask's shape is the longest's
            text = bb.encode_text(batch.prompts)
        text.mask = self.batches.mask_tokens(text.mask)
        part = parallel.share(n, self.world)  # this rank's samples; all n when it runs alone
        text = Text(text.emb[part], text.mask[part])
        x0 = self.latents(batch.clips[part], batch.keys and batch.keys[part])
        noise = torch.randn((n, *x0.shape[1:]), dtype=x0.dtype, device=x0.device)[part]
        t = flow.sample_timesteps(n, fc.timesteps, fc.logit_mean, fc.logit_std, fc.shift, device=x0.device)[part]
        x_t = flow.interpolate(x0, noise, t)
        self_cond = None
        if self.self_cond:  # self-conditioning (sec. 3.4.3): a first pass's x_0 estimate as input
            with torch.no_grad():
                x0_hat = flow.predict_x0(x_t, bb.velocity(x_t, t, text, None), t)
            use = (torch.rand(n, device=x0.device)[part] < self.cfg.reg.self_cond_prob).to(x0_hat.dtype)
            self_cond = x0_hat * use.view(len(x0), *([1] * (x0_hat.ndim - 1)))
        v = bb.velocity(x_t, t, text, self_cond)
        per_sample = flow.training_loss(v, x0, noise, t, getattr(bb, "loss_space", "velocity"))
        return (per_sample * batch.weights[part].to(v.device)).sum()

    def _step(
        self,
        stage: StageConfig,
        step: int,
        params: list[torch.nn.Parameter],
        opt: torch.optim.Optimizer,
        train_tokens: bool,
    ) -> torch.Tensor:
        o = self.cfg.optim
        sizes = self.batches.micro_sizes(stage, o.batch_size, o.micro_batch, self.world.size)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for m, size in enumerate(sizes):  # gradient accumulation
            loss = self._loss(stage, size, train_tokens, step * len(sizes) + m) / o.batch_size
            loss.backward()
            total = total + loss.detach()  # stays on the device: no host sync per step
        if self.world.size > 1:  # DDP's all-reduce: from the gradient of its own share to that of the batch
            total = parallel.sum_gradients(params, total)
        if self.sharded:
            parallel.clip_grad_norm(params, o.grad_clip)
        else:
            torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
        opt.step()
        return total

    # ---------------------------------------------------------------------------------------
    # Checkpoints and outputs
    # ---------------------------------------------------------------------------------------
    def _meta(self, stage: str) -> dict[str, Any]:
        return concept_io.run_metadata(
            self.backbone, self.cfg, self.concepts, self.geometry, list(self.layers), self.losses, stage
        )

    def _save_checkpoint(self, stage_index: int, step: int, opt: torch.optim.Optimizer | None) -> None:
        """Rank 0 writes; when sharded, every rank must call this, as the shards are gathered first."""
        losses, config = self.losses, self.cfg.to_dict()
        args = (self.ckpt_path, self.backbone, opt, self.world, self.sharded)
        checkpoint.save_run(*args, stage=stage_index, step=step, losses=losses, config=config)

    def _validate(self, stage: StageConfig, step: int) -> None:
        """A sample of the first concept's full prompt, in NAME.samples/ (sharded: every rank samples)."""
        if self.world.main or self.sharded:
            path = self.out.with_name(self.out.stem + ".samples") / f"{stage.name}-{step:05d}.mp4"
            prompt, g = self.concepts[0].full_prompt, self.geometry
            write_sample(self.backbone, prompt, path, geometry=g, seed=self.cfg.seed, write=self.world.main)
            self.backbone.transformer.train()

    # ---------------------------------------------------------------------------------------
    # The run
    # ---------------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> concept_io.ConceptSet:
        """Train every stage, checkpointing as it goes; write `out` (and `NAME.stage1.safetensors`
        after the set stage of a two-stage method). Returns the final concept set."""
        cfg = self.cfg
        state = self._start(resume)
        start_stage, start_step = (state["stage"], state["step"]) if state else (0, 0)
        done = sum(s.steps for s in cfg.stages[:start_stage]) + start_step
        show = self.progress and self.world.main
        bar = tqdm(
            total=sum(s.steps for s in cfg.stages), initial=done, desc="training", disable=not show, dynamic_ncols=True
        )
        self.backbone.transformer.train()
        for si, stage in enumerate(cfg.stages[start_stage:], start_stage):
            opt, params, train_tokens = self._begin_stage(stage)
            if state is not None:  # the stage the checkpoint was made in
                checkpoint.resume_stage(opt, state, cfg.optim)
            bar.set_description(f"stage {si + 1}/{len(cfg.stages)} ({stage.name})")
            pending: list[torch.Tensor] = []
            for step in range(start_step if state is not None else 0, stage.steps):
                pending.append(self._step(stage, step, params, opt, train_tokens))
                last = step + 1 == stage.steps
                if len(pending) >= 10 or last or (step + 1) % cfg.checkpoint_every == 0:
                    self._flush(pending, stage, step, bar)
                    pending = []
                if (step + 1) % cfg.checkpoint_every == 0 and not last:
                    self._save_checkpoint(si, step + 1, opt)
                if cfg.validate_every and (step + 1) % cfg.validate_every == 0:
                    self._validate(stage, step + 1)
            self._end_stage(si, stage)
            state = None
        bar.close()
        self.backbone.transformer.eval()
        result = concept_io.collect(self.backbone, self._meta("final"))
        if self.world.main:
            concept_io.save(result, self.out)
            self.ckpt_path.unlink(missing_ok=True)
        return result

    def _start(self, resume: bool) -> dict[str, Any] | None:
        """Set up; with `resume`, load the checkpoint (its state, or None); compile and shard."""
        self._setup()
        # A checkpoint that rank 0 is still writing (an interrupted run in this very process group)
        # is complete before any rank looks for it, and every rank must start from the same one.
        parallel.barrier(self.world)
        state = checkpoint.load_run(self.ckpt_path, self.backbone, self.layers, self.cfg.to_dict()) if resume else None
        if state is not None:
            self.losses = state["losses"]
        parallel.same_start(self.world, (state["stage"], state["step"]) if state else None, self.ckpt_path)
        if not resume and self.ckpt_path.is_file():
            warn(f"starting afresh and overwriting {self.ckpt_path}; pass --resume to continue it instead.")
        if self.cfg.compile:
            parallel.compile_blocks(self.backbone.transformer)
        if self.sharded:  # after the checkpoint's tensors are in place: they load into whole tensors
            parallel.shard(self.backbone.transformer)
        return state

    @property
    def stage1_path(self) -> Path:
        return self.out.with_name(self.out.name.removesuffix(".safetensors") + ".stage1.safetensors")

    def _flush(self, pending: list[torch.Tensor], stage: StageConfig, step: int, bar: tqdm) -> None:
        """One host sync per few steps: record losses, stop on a non-finite one."""
        values = torch.stack(pending).tolist()
        if not all(map(lambda x: x == x and abs(x) != float("inf"), values)):
            where = (
                f"the last good checkpoint is {self.ckpt_path}; resume it with --resume (perhaps with a lower --lr)"
                if self.ckpt_path.is_file()
                else "no checkpoint had been written yet"
            )
            raise SetseqError(
                f"the loss became non-finite in stage {stage.name!r} by step {step + 1}; training stopped and {where}."
            )
        self.losses[stage.name].extend(values)
        bar.update(len(values))
        bar.set_postfix(loss=f"{values[-1]:.4f}")
