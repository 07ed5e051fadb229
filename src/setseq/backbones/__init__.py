"""Backbones: video models behind the small protocol in `base.py`. Loaded by name or path.

Which module builds a backbone is decided here and only here: the toy by name, a local diffusers
folder by the pipeline class its model_index.json names (each diffusers backbone module states its
own as `PIPELINE`). The backbone modules never import this dispatch, so nothing imports back.
"""

from __future__ import annotations

from pathlib import Path

import torch

from setseq.backbones.base import Backbone, Geometry, SamplingDefaults, Text
from setseq.errors import SetseqError

__all__ = ["Backbone", "Geometry", "SamplingDefaults", "Text", "load_backbone", "BASES", "PRETRAINED_TOYS"]

# The embedded bases pretrained on the toy world, each trained on with the toy-scale method preset
# (`config.preset_toy`); toy-tiny is random, for tests, and takes the paper's presets.
PRETRAINED_TOYS = ("toy", "toy-v2")
BASES = (*PRETRAINED_TOYS, "toy-tiny")


def load_backbone(spec: str, **options) -> Backbone:
    """`toy` (the embedded default), `toy-v2` (its larger successor), `toy-tiny` (tests), or a local
    diffusers folder (Wan 2.1, Wan 2.2, LTX-Video, LTX-2, HunyuanVideo 1.5).

    Args:
        spec: a name of BASES or the path of a local Diffusers-format folder.
        options: for a folder, passed to its backbone's `load` (dtype, device, cache_dir,
            gradient_checkpointing, fp8_base, blocks_to_swap, offload_activations; None values are left out).

    Raises:
        SetseqError: for an unknown name, options the toy cannot honour, or a folder that is not
            a supported diffusers pipeline.
    """
    if spec in BASES:
        from setseq.backbones import toy

        if options.get("device") not in (None, "cpu") or options.get("dtype") not in (None, torch.float32):
            raise SetseqError(f"the toy base runs in float32 on the CPU; leave out --device and --dtype for {spec!r}.")
        if options.get("fp8_base") or options.get("blocks_to_swap") or options.get("offload_activations"):
            raise SetseqError(
                f"the toy base is small and needs no --fp8-base, --blocks-to-swap or --offload-activations; "
                f"leave them out for {spec!r}."
            )
        return toy.load(spec)
    if Path(spec).exists():  # a local diffusers folder
        return _load_local(spec, **{k: v for k, v in options.items() if v is not None})
    raise SetseqError(f"unknown base model {spec!r}; use one of {', '.join(BASES)} or a local model path.")


def _load_local(path: str | Path, **options) -> Backbone:
    """A backbone from a local diffusers folder, chosen by the pipeline class in model_index.json; the
    backbone module tells the layouts of its pipeline apart (Wan 2.1, Wan 2.2 T2V-A14B, TI2V-5B)."""
    from setseq.backbones import diffusers_common, hunyuan15, ltx, ltx2, wan

    index = diffusers_common.read_model_index(path)
    diffusers_common.require_diffusers()
    kind = index.get("_class_name", "")
    loaders = {module.PIPELINE: module.load for module in (wan, ltx, ltx2, hunyuan15)}
    if kind not in loaders:
        names = list(loaders)
        raise SetseqError(
            f"{str(path)!r} holds a {kind or 'unnamed'} pipeline; setseq supports text-to-video "
            f"{', '.join(names[:-1])} and {names[-1]} folders."
        )
    return loaders[kind](path, **options)
