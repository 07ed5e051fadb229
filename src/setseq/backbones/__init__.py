"""Backbones: video models behind the small protocol in `base.py`. Loaded by name or path."""

from __future__ import annotations

from pathlib import Path

import torch

from setseq.backbones.base import Backbone, Geometry, SamplingDefaults, Text
from setseq.errors import SetseqError

__all__ = ["Backbone", "Geometry", "SamplingDefaults", "Text", "load_backbone", "BASES"]

BASES = ("toy", "toy-tiny")


def load_backbone(spec: str, **options) -> Backbone:
    """`toy` (the embedded default), `toy-tiny` (tests), or a local diffusers folder (Wan, LTX-Video)."""
    if spec in BASES:
        from setseq.backbones import toy

        if options.get("device") not in (None, "cpu") or options.get("dtype") not in (None, torch.float32):
            raise SetseqError(f"the toy base runs in float32 on the CPU; leave out --device and --dtype for {spec!r}.")
        return toy.load(spec)
    if Path(spec).exists():  # a local diffusers folder: Wan or LTX-Video
        from setseq.backbones.diffusers_common import load_local

        return load_local(spec, **{k: v for k, v in options.items() if v is not None})
    raise SetseqError(f"unknown base model {spec!r}; use one of {', '.join(BASES)} or a local model path.")
