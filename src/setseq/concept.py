"""Concept files: one `.safetensors` per trained concept set.

Tensors (R = rank):
    <module>.basis            (out x R)  identity basis A, shared by every concept of the set
    <module>.identity         (R x in)   identity coefficients B_id
    <module>.motion.<concept> (R x in)   motion coefficients B_mo of one concept
    token.<token>             (D,)       concept-token embedding, e.g. token.[v]
Metadata (safetensors header, strings): `format` = "setseq.concept", `format_version`, and
`setseq`, a JSON object: base {name, fingerprint}, rank, scale, target_modules, concepts
[{name, identity_token, motion_token, prompt, motion_prompt, video}], method, config, stage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from setseq import lora
from setseq.backbones.base import Backbone
from setseq.errors import SetseqError
from setseq.fileio import atomic_path

FORMAT = "setseq.concept"
FORMAT_VERSION = 1


@dataclass
class ConceptSet:
    """Adapter tensors and token embeddings of one or more concepts, with their metadata."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def concepts(self) -> list[dict[str, Any]]:
        return self.meta.get("concepts", [])

    @property
    def tokens(self) -> dict[str, torch.Tensor]:
        return {k[len("token."):]: v for k, v in self.tensors.items() if k.startswith("token.")}

    def modules(self) -> list[str]:
        return sorted({k[: -len(".basis")] for k in self.tensors if k.endswith(".basis")})


def collect(backbone: Backbone, meta: dict[str, Any]) -> ConceptSet:
    """Read the adapters and concept tokens currently in `backbone` into a ConceptSet (when the model is
    sharded over processes, every process must call this)."""
    def whole(t: torch.Tensor) -> torch.Tensor:  # a tensor sharded over processes (FSDP) is gathered first
        return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().clone()

    tensors: dict[str, torch.Tensor] = {}
    for name, layer in lora.adapters(backbone.transformer).items():
        tensors[f"{name}.basis"] = whole(layer.basis)
        tensors[f"{name}.identity"] = whole(layer.identity)
        for c, b in layer.motion.items():
            tensors[f"{name}.motion.{c}"] = whole(b)
    for tok, emb in backbone.token_embeddings().items():
        tensors[f"token.{tok}"] = emb
    return ConceptSet(tensors, meta)


def save(cs: ConceptSet, path: str | Path) -> Path:
    """Write atomically: a temporary file in the same folder, then a rename."""
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "setseq": json.dumps(cs.meta)}
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous().cpu() for k, v in cs.tensors.items()}, str(tmp), metadata=header)
    return Path(path)


def load(path: str | Path) -> ConceptSet:
    """Read a concept file; a missing, corrupt or foreign file raises one clear SetseqError."""
    path = Path(path)
    if not path.is_file():
        raise SetseqError(f"concept file {str(path)!r} does not exist.")
    try:
        with safe_open(str(path), "pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise SetseqError(f"{str(path)!r} is not a readable .safetensors file ({e}).") from None
    if header.get("format") != FORMAT:
        raise SetseqError(f"{str(path)!r} is a .safetensors file but not a setseq concept "
                          f"(no '{FORMAT}' header); was it exported for another tool?")
    version = int(header.get("format_version", "0"))
    if version > FORMAT_VERSION:
        raise SetseqError(f"{str(path)!r} has concept format version {version}; this setseq reads "
                          f"up to {FORMAT_VERSION}; upgrade setseq.")
    try:
        meta = json.loads(header["setseq"])
    except (KeyError, json.JSONDecodeError):
        raise SetseqError(f"{str(path)!r} has a damaged setseq header.") from None
    return ConceptSet(tensors, meta)


def check_base(cs: ConceptSet, backbone: Backbone, source: str = "the concept") -> None:
    base = cs.meta.get("base", {})
    if base.get("fingerprint") != backbone.fingerprint():
        raise SetseqError(
            f"{source} was trained on base {base.get('name')!r} (weights {base.get('fingerprint')}), "
            f"but the loaded base is {backbone.name!r} (weights {backbone.fingerprint()}); "
            f"pass --base {base.get('name')} with the same weights."
        )


def apply(cs: ConceptSet, backbone: Backbone, source: str = "the concept") -> dict[str, lora.SetSeqLinear]:
    """Inject the concept set's adapters into `backbone` and load its tensors and tokens."""
    check_base(cs, backbone, source)
    backbone.load_token_embeddings(cs.tokens)
    modules = cs.modules()
    if not modules:  # textual inversion: tokens only
        return {}
    existing = lora.adapters(backbone.transformer)
    if existing:
        raise SetseqError("this model already carries a concept set; load one concept file per model.")
    rank = int(cs.meta["rank"])
    layers = lora.inject(backbone.transformer, [m for m in modules], rank, float(cs.meta.get("scale", 1.0)))
    if sorted(layers) != modules:
        raise SetseqError(f"{source} adapts modules that this base does not have: "
                          f"{sorted(set(modules) - set(layers))[:4]}.")
    with torch.no_grad():
        for name, layer in layers.items():
            for part in ("basis", "identity"):
                t = cs.tensors[f"{name}.{part}"]
                if t.shape != getattr(layer, part).shape:
                    raise SetseqError(f"{source}: tensor {name}.{part} has shape {tuple(t.shape)}, "
                                      f"the base needs {tuple(getattr(layer, part).shape)}.")
                getattr(layer, part).copy_(t)
            prefix = f"{name}.motion."
            for key, t in cs.tensors.items():
                if key.startswith(prefix):
                    c = key[len(prefix):]
                    layer.add_motion(c)
                    layer.motion[c].copy_(t)
    for p in backbone.transformer.parameters():
        p.requires_grad_(False)
    return layers
