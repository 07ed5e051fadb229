"""Backbones: video models behind the small protocol in `base.py`. Loaded by name or path."""

from __future__ import annotations

from pathlib import Path

from setseq.backbones.base import Backbone, Geometry, SamplingDefaults, Text
from setseq.errors import SetseqError

__all__ = ["Backbone", "Geometry", "SamplingDefaults", "Text", "load_backbone", "BASES"]

BASES = ("toy", "toy-tiny")


def load_backbone(spec: str) -> Backbone:
    """`toy` (the embedded default), `toy-tiny` (tests), or a path to a local model directory."""
    if spec in BASES:
        from setseq.backbones import toy

        return toy.load(spec)
    if Path(spec).exists():
        raise SetseqError(f"loading a model from a local path ({spec!r}) is not supported in this "
                          f"version yet; use --base toy.")
    raise SetseqError(f"unknown base model {spec!r}; use one of {', '.join(BASES)} or a local model path.")
