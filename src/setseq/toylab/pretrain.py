"""Pretraining the toy DiT from scratch on the toy world (`setseq toy pretrain`).

Flow matching on freshly rendered clips with their two-part captions, and, like the paper's joint
image-video pretraining, a share of single frames with the appearance caption alone (stage 1 of
Set-and-Sequence trains on single frames, so the base must know them). Captions are dropped with
probability 0.1 for classifier-free guidance, and self-conditioning is trained with probability
0.5. An exponential moving average of the weights is kept and is what ships. Resumable.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from setseq import flow
from setseq.backbones.base import Geometry
from setseq.backbones.toy import PRESETS, ToyBackbone, load_file_weights, save_weights
from setseq.errors import SetseqError
from setseq.fileio import atomic_path
from setseq.log import note
from setseq.toy import world
from setseq.toy.dit import DiTConfig
from setseq.toylab.evaluate import camera_probe, direction_probe, sample_strip

ARCH_OVERRIDES = (
    "prediction",
    "patch",
    "dim",
    "depth",
    "heads",
    "frozen_words",
    "refine",
)  # PretrainConfig fields that override the preset


@dataclass
class PretrainConfig:
    model: str = "toy"  # a preset of backbones.toy: architecture and geometry
    # Overrides of the preset's architecture (None keeps it), for experiments: what the output layer
    # predicts ("velocity" or "x0"), the spatial patch (must divide the frame size), width, depth
    # and attention heads. The defaults below with the "toy" preset made the shipped weights.
    prediction: str | None = None
    patch: int | None = None
    dim: int | None = None
    depth: int | None = None
    heads: int | None = None
    # A fixed, never-trained word table in the text encoder (DiTConfig.frozen_words); None keeps
    # the preset's (the shipped weights were made without it).
    frozen_words: bool | None = None
    # Hidden channels of the convolutional output head (DiTConfig.refine); None keeps the preset's
    # (none). Continuing weights without one (`init`) adds it, zero-initialised.
    refine: int | None = None
    steps: int = 2500
    batch_size: int = 16
    lr: float = 1e-3
    warmup: int = 200
    min_lr_ratio: float = 0.1  # cosine decay to this share of lr
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    frame_prob: float = 0.3  # share of batches made of single frames with the static caption
    # Frames in a single-frame batch (None: batch_size). batch_size x frames costs about what a
    # batch of clips does (the same tokens, shorter attention): many more objects seen per second.
    frame_batch_size: int | None = 128
    # Squared errors on the object's pixels weigh 1 + foreground_weight (the world knows its masks):
    # an object covers about 6 % of a frame, so by default the loss is nearly all background.
    foreground_weight: float = 0.0
    init: str | None = None  # start from these weights (a `setseq toy pretrain` output) instead of from scratch
    prompt_dropout: float = 0.1
    self_cond_prob: float = 0.5
    # Uniform, not logit-normal: logit-normal almost never draws t near 1, and sampling starts
    # there; a small model trained without it turns pure noise into blocky noise.
    timesteps: str = "uniform"
    # Shift the drawn timesteps towards noise, t -> s t / (1 + (s - 1) t) (SD3's shift; 1: none).
    # Where a clip's path is decided: at high noise x_t no longer shows where the object is, and
    # only the words can; under uniform timesteps few steps train there (docs/toy-model.md).
    timestep_shift: float = 1.0
    # The motion curriculum (MOTION_FOCUS below): draw timesteps in [min_t, 1] only, and clips of
    # straight movers under a still camera only. Both concentrate the loss on what only the
    # direction words can tell.
    min_t: float = 0.0
    straight_only: bool = False
    # The camera curriculum (CAMERA_FOCUS below): when either is set, only sprites, each
    # with its motion redrawn from `motions` and filmed by a camera drawn from `cameras` (uniformly
    # from the tuple: repeat a name to weigh it); None keeps what the world drew.
    motions: tuple[str, ...] | None = None
    cameras: tuple[str, ...] | None = None
    # With motions or cameras: either the object or the camera moves in a clip, never both, so that
    # "left" and "right" mean one thing within a caption (docs/research-notes.md: the camera words).
    one_mover: bool = False
    # The loss on the velocity, or on the clean clip each prediction implies ("x0"); None: on what
    # the model predicts. For an x0-predicting model the velocity loss weighs the clean-clip error
    # by 1/t^2, so nearly all of its signal comes from low noise and the model learns to copy x_t
    # (v = 0) near t = 1 (2026-11-21, docs/research-notes.md).
    loss: str | None = None
    ema: float = 0.998
    seed: int = 0
    checkpoint_every: int = 100


# The shipped weights are the defaults above, then this continuation of them (`--init` the first
# run's weights), mostly on clips, where motion is learned (docs/toy-model.md):
#   setseq toy pretrain --out A
#   setseq toy pretrain --out B --init A/toy.safetensors --steps 1600 --frame-prob 0.1 --lr 4e-4 --warmup 50
CONTINUATION = {"steps": 1600, "frame_prob": 0.1, "lr": 4e-4, "warmup": 50}

STRAIGHT = ("left", "right", "up", "down")

# The motion curriculum (2026-11-30, docs/research-notes.md): from the weights above, first only straight
# movers at noise levels 0.85-1, where nothing but the words can say where the object is,
# at a constant lr and without EMA, prompt dropout or self-conditioning, until the words move
# things; then the whole world again so that everything else comes back.
MOTION_FOCUS = {"steps": 700, "lr": 1e-3, "warmup": 0, "min_lr_ratio": 1.0, "frame_prob": 0.0,
                "prompt_dropout": 0.0, "self_cond_prob": 0.0, "weight_decay": 0.0, "ema": 0.0,
                "min_t": 0.85, "straight_only": True, "seed": 4}  # fmt: skip
CONSOLIDATION = {"steps": 1200, "frame_prob": 0.1, "lr": 4e-4, "warmup": 50, "timestep_shift": 2.0, "seed": 5}

# The camera curriculum (2026-12-01, docs/research-notes.md): the same treatment for the camera
# words, which the base above mostly ignored (held-out camera 39.5 %, pans and zooms drawn as a
# still camera): sprites under a camera drawn uniformly from the five, at noise 0.8-1, where the
# stripes' drift and the object's scale can only come from the words; their own motions stay, so
# the direction words keep being trained. Then the consolidation again (another seed). It taught
# the zooms (one-step probe 0 -> 0.64), not the pans (0; docs/research-notes.md says why we think so).
CAMERA_FOCUS = {**MOTION_FOCUS, "steps": 1000, "straight_only": False, "cameras": world.CAMERAS, "min_t": 0.8,
                "seed": 6}  # fmt: skip
CAMERA_CONSOLIDATION = {**CONSOLIDATION, "seed": 8}


# The recipes of the shipped weights' runs by name (`setseq toy pretrain --recipe NAME`), in order:
# "defaults" from scratch, then each from the previous run's weights (`--init`).
RECIPES = {
    "defaults": {},
    "continuation": CONTINUATION,
    "motion-focus": MOTION_FOCUS,
    "consolidation": CONSOLIDATION,
    "camera-focus": CAMERA_FOCUS,
    "camera-consolidation": CAMERA_CONSOLIDATION,
}


def _lr(cfg: PretrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p)))


def batch(
    rng: np.random.Generator,
    n: int,
    g: Geometry,
    frames_only: bool,
    straight_only: bool = False,
    motions: tuple[str, ...] | None = None,
    cameras: tuple[str, ...] | None = None,
    one_mover: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """n training clips (n, F, C, H, W) of the world's train split, their object masks
    (n, F, 1, H, W) and their captions; with frames_only, one frame of each (F = 1); with
    straight_only, only sprites moving left, right, up or down under a still camera; with motions
    or cameras, only sprites, their motion and camera redrawn uniformly from these tuples (with
    one_mover, until the object or the camera stays still)."""
    focus = motions is not None or cameras is not None
    clips, masks, texts = [], [], []
    for _ in range(n):
        scene = world.sample_scene(rng, "train")
        while (straight_only or focus) and not (
            scene.kind == "sprite" and (scene.motion in STRAIGHT or not straight_only)
        ):
            scene = world.sample_scene(rng, "train")
        if straight_only:
            scene = world.edit_scene(scene, camera="still")
        if focus:
            # A new motion or camera can make a held-out combination of the world (captions.py):
            # the draw stays in the train split, so it draws again until it does.
            while True:
                moved = scene
                if motions is not None:
                    moved = world.edit_scene(moved, motion=str(rng.choice(motions)))
                if cameras is not None:
                    moved = world.with_camera(moved, str(rng.choice(cameras)))
                both = moved.motion != "still" and moved.camera != "still"
                if not world.is_heldout(moved) and not (one_mover and both):
                    break
            scene = moved
        only = int(rng.integers(g.frames)) if frames_only else None
        r = world.render(scene, g.frames, g.height, g.width, only=only)
        static, motion = world.caption(scene)
        clips.append(r.video)
        masks.append(r.mask[:, None])
        texts.append(static if frames_only else f"{static} {motion}")
    return torch.stack(clips), torch.stack(masks), texts


class Batches(torch.utils.data.Dataset):
    """The training batch of step i: (clips, masks, captions with dropout applied, self-conditioning
    or not), all drawn from the seed (cfg.seed, i)."""

    def __init__(self, cfg: PretrainConfig, g: Geometry):
        self.cfg, self.g = cfg, g

    def __len__(self) -> int:
        return self.cfg.steps

    def __getitem__(self, i: int):
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, i])
        frames_only = rng.random() < cfg.frame_prob
        n = (cfg.frame_batch_size or cfg.batch_size) if frames_only else cfg.batch_size
        clips, masks, texts = batch(
            rng, n, self.g, frames_only, cfg.straight_only, cfg.motions, cfg.cameras, cfg.one_mover
        )
        texts = ["" if rng.random() < cfg.prompt_dropout else t for t in texts]
        return clips, masks, texts, bool(rng.random() < cfg.self_cond_prob)


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"


def _layout(c: DiTConfig) -> dict:
    """The architecture a config describes; the vocabulary is left out (filled in when a model is built)."""
    return {k: v for k, v in c.to_dict().items() if k != "vocab"}


def weighted_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, foreground_weight: float
) -> torch.Tensor:
    """Mean squared error with each object pixel weighing 1 + foreground_weight, normalised by the
    mean weight so that the loss keeps its scale. pred, target: (B, F, C, H, W); mask: (B, F, 1, H, W)."""
    weight = 1.0 + foreground_weight * mask.float()
    return ((pred.float() - target.float()) ** 2 * weight).mean() / weight.mean()


def add_refine(bb: ToyBackbone, channels: int, seed: int = 0) -> ToyBackbone:
    """`bb` with a convolutional output head (`DiTConfig.refine`) added: the same weights, the head's
    last layer zero, so the new model computes what `bb` did until the head trains."""
    cfg = DiTConfig(**{**bb.cfg.to_dict(), "refine": channels})
    fresh = ToyBackbone(bb.name, cfg, bb.geometry, seed=seed, pretrained_init=True).state_dict()
    old = bb.state_dict()
    assert set(old) <= set(fresh) and all(".refine." in k for k in set(fresh) - set(old))
    return ToyBackbone(bb.name, cfg, bb.geometry, state={**fresh, **old})


def _sample_ema(bb: ToyBackbone, modules: torch.nn.Module, ema: dict, path: Path) -> None:
    """The EMA weights' samples of four held-out captions under their truths (`sample_strip`), the live
    weights put back after."""
    live = {k: v.detach().clone() for k, v in modules.state_dict().items()}
    modules.load_state_dict(ema)
    try:
        path.parent.mkdir(exist_ok=True)
        sample_strip(bb, path)
    finally:
        modules.load_state_dict(live)


def pretrain(
    out_dir: str | Path,
    cfg: PretrainConfig,
    resume: bool = False,
    progress: bool = True,
    threads: int | None = None,
    device: str | None = None,
    workers: int = 0,
    compile: bool = False,
) -> Path:
    """Train the toy DiT; writes `out_dir/ckpt.pt` as it goes and `out_dir/<model>.safetensors`, and at
    every checkpoint `out_dir/samples/step-NNNNNN.png`: the EMA weights' samples of four held-out
    captions, each under its rendered truth.

    Args:
        device: where the model trains ("cpu", "cuda", ...); None: a GPU when there is one.
        workers: processes rendering the world's clips beside the training (0: in this process).
            On a GPU the rendering, not the model, sets the pace unless several workers share it.
        compile: run the transformer through torch.compile (inductor), one graph per batch shape
            and mode. On the 2-core AMX box (2026-12-07) a 256-wide bf16 step took 2.26 s compiled
            against 3.03 s eager (benchmarks/toy_step.py), after a few minutes of compiling; the
            weights and checkpoints are the same as eager ones.
        The result does not depend on these beyond rounding.

    Returns the path of the weights file.
    """
    if threads:
        torch.set_num_threads(threads)
    if cfg.timestep_shift <= 0:
        raise SetseqError(f"the timestep shift must be positive (1: none), got {cfg.timestep_shift:g}.")
    if workers < 0:
        raise SetseqError(f"the number of rendering workers cannot be negative, got {workers}.")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except RuntimeError:
        raise SetseqError(f"unknown device {device!r}; use cpu, cuda or cuda:N.") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SetseqError(f"--device {device} was asked for, but this torch build sees no GPU; use --device cpu.")
    out_dir = Path(out_dir)
    ckpt_path = out_dir / "ckpt.pt"
    dit_cfg, g = PRESETS[cfg.model]
    arch = DiTConfig(**dit_cfg.to_dict())
    for name in ARCH_OVERRIDES:
        if getattr(cfg, name) is not None:
            setattr(arch, name, getattr(cfg, name))
    if arch.dim % arch.heads or (arch.dim // arch.heads) % 8:
        raise SetseqError(
            f"width {arch.dim} with {arch.heads} heads gives heads of {arch.dim / arch.heads:g} channels; "
            "use a width that is a multiple of 8 x heads (3D RoPE splits each head 2:1:1)."
        )
    if g.height % arch.patch or g.width % arch.patch:
        raise SetseqError(
            f"patch size {arch.patch} does not divide the {cfg.model!r} frames of {g.height} x {g.width}."
        )
    loss_on = cfg.loss or arch.prediction
    if cfg.init:
        bb = load_file_weights(cfg.init, cfg.model)
        if _layout(bb.cfg) == {**_layout(arch), "refine": 0} and arch.refine and bb.geometry == g:
            bb = add_refine(bb, arch.refine, cfg.seed)
        if _layout(bb.cfg) != _layout(arch) or bb.geometry != g:
            raise SetseqError(f"{cfg.init!r} holds another architecture or geometry than the {cfg.model!r} preset.")
    else:
        bb = ToyBackbone(cfg.model, arch, g, seed=cfg.seed, pretrained_init=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    computes = "bf16 autocast over float32 weights" if bb.bf16 and device == "cpu" else "float32"
    if compile:
        # Six graphs, within dynamo's default limit of 8: frame and clip batches, with and without
        # self-conditioning, and the self-conditioning pass under no_grad; captions padded to one
        # length; the probes run eagerly.
        bb.transformer.compile(dynamic=False)
        computes += ", compiled"
    note(f"pretraining {arch.dim} wide x {arch.depth} blocks on {device}: {computes}")
    modules = torch.nn.ModuleDict({"transformer": bb.transformer, "text_encoder": bb.text_encoder}).to(device)
    for name, p in modules.named_parameters():
        p.requires_grad_(not (arch.frozen_words and name == "text_encoder.words.weight"))
    modules.train()
    ema = {k: v.detach().clone() for k, v in modules.state_dict().items()}
    decay, no_decay = [], []
    for name, p in modules.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name or name.endswith("concepts") else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.99),
    )
    torch.manual_seed(cfg.seed)
    step, log, probes, elapsed = 0, [], [], 0.0
    if resume and ckpt_path.is_file():
        state = torch.load(ckpt_path, weights_only=False, map_location="cpu")  # the RNG state must stay on the CPU
        modules.load_state_dict(state["model"])
        ema = {k: v.to(device) for k, v in state["ema"].items()}
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        step, log, elapsed = state["step"], state["log"], state["elapsed"]
        probes = state.get("probes", [])
    # Each step's batch is drawn from its own seed, (seed, step): the data do not depend on how
    # many worker processes render them, and a resumed run sees what an unbroken one would.
    batches = torch.utils.data.DataLoader(
        Batches(cfg, g),
        batch_size=None,
        sampler=range(step, cfg.steps),
        num_workers=workers,
        prefetch_factor=4 if workers else None,
        generator=torch.Generator(),
    )  # leaves the global RNG (the noise) alone
    bar = tqdm(total=cfg.steps, initial=step, desc="pretraining", disable=not progress, dynamic_ncols=True)
    t0, window = time.time() - elapsed, []
    for clips, masks, texts, use_self_cond in batches:
        for group in opt.param_groups:
            group["lr"] = _lr(cfg, step)
        text = bb.encode_text(texts, pad_to_max=compile)
        noise = torch.randn_like(clips)  # drawn on the CPU, so that runs agree across devices
        t = flow.sample_timesteps(len(texts), cfg.timesteps, shift=cfg.timestep_shift)
        t = cfg.min_t + (1.0 - cfg.min_t) * t
        clips, masks, noise, t = (x.to(device) for x in (clips, masks, noise, t))
        x_t = flow.interpolate(clips, noise, t)
        self_cond = None
        if use_self_cond:
            with torch.no_grad():
                self_cond = flow.predict_x0(x_t, bb.velocity(x_t, t, text, None), t)
        v = bb.velocity(x_t, t, text, self_cond)
        pred, target = (
            (flow.predict_x0(x_t, v, t), clips) if loss_on == "x0" else (v, flow.target_velocity(clips, noise))
        )
        loss = weighted_loss(pred, target, masks, cfg.foreground_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(modules.parameters(), cfg.grad_clip)
        opt.step()
        with torch.no_grad():
            for k, v_ in modules.state_dict().items():
                ema[k].lerp_(v_, 1.0 - cfg.ema) if v_.is_floating_point() else ema[k].copy_(v_)
        step += 1
        window.append(loss.item())
        bar.update()
        if step % 20 == 0 or step == cfg.steps:
            log.append({"step": step, "loss": float(np.mean(window)), "time": time.time() - t0})
            bar.set_postfix(loss=f"{log[-1]['loss']:.4f}")
            window = []
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            # Whether the words move things yet (1: as far as the truth, 0: not at all), from
            # almost pure noise: the cheap sign of motion that the held-out measure needs.
            with torch.compiler.set_stance("force_eager"):
                probe, camera = direction_probe(bb, t=0.99), camera_probe(bb, t=0.99)
                _sample_ema(bb, modules, ema, out_dir / "samples" / f"step-{step:06d}.png")
            probes.append(
                {
                    "step": step,
                    "follows": round(probe["follows"], 4),
                    "moves": round(probe["own"] / probe["truth"], 4),
                    "camera_follows": round(camera["follows"], 4),
                    "pan_follows": round(camera["pan"]["follows"], 4),
                    "zoom_follows": round(camera["zoom"]["follows"], 4),
                }
            )
            bar.set_postfix(
                loss=f"{loss.item():.4f}", follows=f"{probe['follows']:+.2f}", camera=f"{camera['follows']:+.2f}"
            )
            with atomic_path(ckpt_path) as tmp:
                torch.save(
                    {
                        "model": modules.state_dict(),
                        "ema": ema,
                        "optimizer": opt.state_dict(),
                        "torch_rng": torch.get_rng_state(),
                        "step": step,
                        "log": log,
                        "probes": probes,
                        "elapsed": time.time() - t0,
                    },
                    tmp,
                )
    bar.close()
    modules.load_state_dict(ema)
    modules.cpu()
    info = {
        "pretrain": asdict(cfg),
        "steps": step,
        "seconds": round(time.time() - t0),
        "final_loss": log[-1]["loss"] if log else None,
        "precision": computes,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {_device_name(device)}, {workers} rendering workers",
    }
    weights = out_dir / f"{cfg.model}.safetensors"
    save_weights(bb, weights, info)
    (out_dir / "log.json").write_text(json.dumps({"info": info, "log": log, "probes": probes}, indent=1))
    return weights
