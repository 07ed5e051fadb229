"""The sampler a diffusers pipeline runs: the scheduler its folder names, with the pipeline's own defaults.

A diffusers folder's scheduler/scheduler_config.json names a scheduler class and its settings: Wan's
is UniPCMultistepScheduler with flow sigmas and a flow_shift, LTX-Video's FlowMatchEulerDiscreteScheduler
with a shift that grows with the token count and a terminal stretch. A `PipelineSampler` holds that
config, the defaults of the pipeline's `__call__` (steps, guidance) and the one thing that differs from
pipeline to pipeline: how `__call__` sets the scheduler's timesteps (`set_timesteps`, supplied by each
backbone module next to its `PIPELINE`). The sampling loop itself is `flow.scheduler_sample`.

diffusers is imported only when a sampler is built or run.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from setseq.errors import SetseqError

# set_timesteps(scheduler, steps, latent_shape (C, F', h, w) of one sample, device): as the pipeline's __call__
SetTimesteps = Callable[[Any, int, tuple[int, ...], torch.device], None]


def steps_only(scheduler, steps: int, latent_shape: tuple[int, ...], device: torch.device) -> None:
    """The common set-up (WanPipeline's): `scheduler.set_timesteps(steps)`, the scheduler's own spacing."""
    scheduler.set_timesteps(steps, device=device)


def scheduler_class(name: str):
    """The diffusers scheduler class called `name`, or one sentence saying this diffusers has none."""
    import diffusers

    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_config") or not hasattr(cls, "step"):
        raise SetseqError(
            f"the model folder's scheduler is a {name!r}, which diffusers {diffusers.__version__} does not "
            f"have; upgrade diffusers or sample with --sampler euler."
        )
    return cls


def make_scheduler(config: dict):
    """A fresh scheduler of the class and settings `config` holds (a scheduler_config.json's content)."""
    return scheduler_class(config["_class_name"]).from_config(config)


def pipeline_defaults(pipeline: str) -> dict[str, Any]:
    """The defaults of a diffusers pipeline's `__call__` arguments, by name (num_inference_steps, ...)."""
    import diffusers

    params = inspect.signature(getattr(diffusers, pipeline).__call__).parameters
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


@dataclass(frozen=True)
class PipelineSampler:
    """How a diffusers pipeline samples its model.

    Attributes:
        pipeline: the pipeline class ("WanPipeline"), for messages and records.
        config: the scheduler's config as scheduler/scheduler_config.json holds it, "_class_name" included.
        steps, guidance: the pipeline's default num_inference_steps and guidance_scale.
        set_timesteps: how the pipeline's `__call__` sets the scheduler's timesteps (`SetTimesteps`).
    """

    pipeline: str
    config: dict
    steps: int
    guidance: float
    set_timesteps: SetTimesteps = field(default=steps_only, compare=False)

    def scheduler(self, steps: int, latent_shape: tuple[int, ...], device: torch.device | str | None = None):
        """A fresh scheduler (schedulers keep per-run state) with its timesteps set for `steps` steps on
        latents of `latent_shape` (C, F', h, w), as the pipeline sets them.

        Raises:
            SetseqError: when diffusers has no scheduler of this class.
        """
        scheduler = make_scheduler(self.config)
        self.set_timesteps(scheduler, steps, tuple(latent_shape), torch.device(device or "cpu"))
        scheduler.set_begin_index(0)  # step i is timestep i (WanPipeline's call; the index a search would find)
        return scheduler

    def describe(self) -> dict:
        """What decides the samples (for cache keys and records): the pipeline and the scheduler config."""
        return {
            "pipeline": self.pipeline,
            "scheduler": {k: v for k, v in self.config.items() if k != "_diffusers_version"},
        }


def from_folder(
    root: str | Path, pipeline: str, set_timesteps: SetTimesteps = steps_only, **defaults
) -> PipelineSampler | None:
    """The sampler of a local diffusers folder: its scheduler/scheduler_config.json and the pipeline's defaults.

    Args:
        root: the folder.
        pipeline: the pipeline class its model_index.json names.
        set_timesteps: the pipeline's timesteps set-up.
        defaults: steps and guidance where the pipeline's `__call__` has no default for them.

    Returns:
        The sampler, or None when the folder has no scheduler/ (then only the Euler sampler runs).

    Raises:
        SetseqError: for a scheduler config that cannot be read or a class diffusers does not have.
    """
    path = Path(root) / "scheduler" / "scheduler_config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SetseqError(f"{str(path)!r} cannot be read ({e}).") from None
    if "_class_name" not in config:
        raise SetseqError(f"{str(path)!r} names no scheduler class (_class_name).")
    scheduler_class(config["_class_name"])  # refuse an unknown class now, not after loading the weights
    own = pipeline_defaults(pipeline)
    steps = own.get("num_inference_steps", defaults.get("steps"))
    guidance = own.get("guidance_scale", defaults.get("guidance"))
    if steps is None or guidance is None:
        raise ValueError(f"{pipeline}.__call__ has no default steps or guidance; pass them as `defaults`.")
    return PipelineSampler(pipeline, config, int(steps), float(guidance), set_timesteps)
