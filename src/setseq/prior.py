"""Prior-preservation videos (paper sec. 3.4.1): clips the base model makes from generic prompts,
generated once per base, geometry and seed and cached on disk, that training mixes into its batches
so that the concept does not overwrite what the base already draws."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch

from setseq import parallel
from setseq.backbones.base import Backbone, Geometry
from setseq.config import RegConfig
from setseq.fileio import atomic_path
from setseq.generate import generate
from setseq.log import note


def prior_videos(
    backbone: Backbone,
    reg: RegConfig,
    geometry: Geometry,
    seed: int,
    cache_dir: Path,
    world: parallel.World,
) -> tuple[torch.Tensor, list[tuple[str, str]]]:
    """The base model's videos of `reg.prior_videos` generic prompts, from the cache or generated.

    Args:
        backbone: the base model, before any adapter is injected.
        reg: the regularisers' settings (prior_videos, prior_steps).
        geometry: the clips' geometry.
        seed: the run's seed: it picks the prompts and seeds the i-th video with seed + i.
        cache_dir: the cache root; the videos go to ``cache_dir/prior/<hash>.pt``.
        world: the process group; all ranks load, or all generate (sharded, generating is
            collective), and rank 0 writes the cache.

    Returns:
        (videos (N, F, C, H, W) in [-1, 1], the N (appearance, motion) prompts).
    """
    prompts = backbone.prior_prompts(reg.prior_videos, seed)
    key = json.dumps(
        [
            backbone.fingerprint(),
            prompts,
            geometry.__dict__,
            reg.prior_steps,
            seed,
            dataclasses.asdict(backbone.sampling),
            # a folder's own scheduler samples them (none for the toy, whose cached videos keep their key)
            *([backbone.pipeline_sampler.describe()] if backbone.pipeline_sampler else []),
        ]
    )
    path = Path(cache_dir) / "prior" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.pt"
    # All ranks load, or all generate (sharded, generating is collective): never some of each.
    if parallel.on_every_rank(world, path.is_file()):
        return torch.load(path), prompts
    note(f"generating {len(prompts)} prior-preservation videos with the base model (cached in {path.parent})")
    videos = torch.cat(
        [
            generate(backbone, [f"{a} {m}"], geometry=geometry, steps=reg.prior_steps, seed=seed + i)
            for i, (a, m) in enumerate(prompts)
        ]
    )  # (N, F, C, H, W); every rank makes them (sharded, it must), rank 0 keeps them
    if world.main:
        with atomic_path(path) as tmp:
            torch.save(videos, tmp)
    return videos, prompts
