"""Concept files: one `.safetensors` per trained concept set.

Tensors (R = rank):
    <module>.basis            (out x R)  identity basis A, shared by every concept of the set
    <module>.identity         (R x in)   identity coefficients B_id
    <module>.motion.<concept> (R x in)   motion coefficients B_mo of one concept
    token.<token>             (D,)       concept-token embedding, e.g. token.[v]
All float32, whatever dtype the base trained in (older files may hold the base's dtype; they load).
Metadata (safetensors header, strings): `format` = "setseq.concept", `format_version`, and
`setseq`, a JSON object: base {name, fingerprint, model (a diffusers base's, e.g. "LTX-2")}, rank, scale, target_modules, concepts
[{name, identity_token, motion_token, prompt, motion_prompt, video}], method, config, stage, and for
a base of two experts (Wan 2.2 T2V-A14B) experts {expert: {component, t: [from, to]}}: each module
name then begins with the expert it belongs to (`high_noise.blocks.0.attn1.to_q`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from setseq import lora
from setseq.backbones.base import Backbone
from setseq.concept_check import FORMAT, FORMAT_VERSION, read_header, validate
from setseq.errors import SetseqError
from setseq.fileio import atomic_path

if TYPE_CHECKING:
    from setseq.backbones.base import Geometry
    from setseq.batches import ConceptSpec
    from setseq.config import TrainConfig


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
        return {k[len("token.") :]: v for k, v in self.tensors.items() if k.startswith("token.")}

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


def run_metadata(
    backbone: Backbone,
    cfg: TrainConfig,
    concepts: list[ConceptSpec],
    geometry: Geometry,
    modules: list[str],
    losses: dict[str, list[float]],
    stage: str,
) -> dict[str, Any]:
    """The ``setseq`` metadata of a concept file written by a training run (see the module docstring).

    Args:
        backbone: the base the run trained on (its name and weights' fingerprint are recorded).
        cfg: the run's configuration; rank 0 when no stage trains an adapter (textual inversion).
        concepts: the concepts trained, in token order.
        geometry: the clips' geometry.
        modules: the adapted module names.
        losses: {stage name: losses per step so far}, rounded to 6 digits.
        stage: the stage the file was written after ("set", ..., or "final").
    """
    from setseq import __version__

    uses_lora = any(s.train != "tokens" for s in cfg.stages)
    meta = {
        "setseq_version": __version__,
        "base": {"name": backbone.name, "fingerprint": backbone.fingerprint(), **base_model(backbone)},
        "rank": cfg.lora.rank if uses_lora else 0,
        "scale": cfg.lora.scale,
        "target_modules": sorted(modules),
        "concepts": [
            {
                "name": c.name,
                "identity_token": c.identity_token,
                "motion_token": c.motion_token,
                "prompt": c.prompt,
                "motion_prompt": c.motion_prompt,
                "video": c.source,
            }
            for c in concepts
        ],
        "method": cfg.method,
        "config": cfg.to_dict(),
        "geometry": geometry.__dict__,
        "stage": stage,
        "losses": {k: [round(x, 6) for x in v] for k, v in losses.items()},
    }
    experts = getattr(backbone, "experts", None)  # which expert each module-name prefix is, when there are two
    if experts:
        meta["experts"] = experts
    return meta


def base_model(backbone: Backbone) -> dict[str, str]:
    """{"model": the base's model ("LTX-2", "Wan 2.2 TI2V-5B", ...)} for a diffusers base, which the
    export reads to pick its key names; {} for the toy."""
    model = getattr(backbone, "model", None)
    return {"model": model} if isinstance(model, str) else {}


def load(path: str | Path) -> ConceptSet:
    """Read a concept file; a missing, corrupt or foreign file raises one clear SetseqError."""
    path = Path(path)
    if not path.is_file():
        raise SetseqError(f"concept file {str(path)!r} does not exist.")
    try:
        with safe_open(str(path), "pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise SetseqError(f"{str(path)!r} is not a readable .safetensors file ({e}).") from None
    meta = read_header(header, repr(str(path)))
    cs = ConceptSet(tensors, meta)
    validate(cs, repr(str(path)))
    return cs


def check_base(cs: ConceptSet, backbone: Backbone, source: str = "the concept") -> None:
    base = cs.meta.get("base", {})
    if base.get("fingerprint") != backbone.fingerprint():
        raise SetseqError(
            f"{source} was trained on base {base.get('name')!r} (weights {base.get('fingerprint')}), "
            f"but the loaded base is {backbone.name!r} (weights {backbone.fingerprint()}); "
            f"pass --base {base.get('name')} with the same weights"
            + (" (SETSEQ_TOY_WEIGHTS set as when it was trained)." if base.get("name") == "toy" else ".")
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
        raise SetseqError(
            f"{source} adapts modules that this base does not have: {sorted(set(modules) - set(layers))[:4]}."
        )
    load_adapters(layers, cs.tensors, source)
    for p in backbone.transformer.parameters():
        p.requires_grad_(False)
    return layers


@torch.no_grad()
def load_adapters(
    layers: dict[str, lora.SetSeqLinear], tensors: dict[str, torch.Tensor], source: str = "the concept"
) -> None:
    """Copy adapter tensors, named as in a concept file, into `layers` (by module name): the basis and
    identity coefficients of each, and every concept's motion, added to a layer that lacks it. The one
    place adapter tensors are loaded, for concept files and training checkpoints alike.

    Raises:
        SetseqError: naming `source`, for a tensor whose shape the layer does not have, or a missing
            tensor (a layer's basis, identity, or the motion of a concept the layer already holds).
    """
    for name, layer in layers.items():
        prefix = f"{name}.motion."
        motion = {key[len(prefix) :]: t for key, t in tensors.items() if key.startswith(prefix)}
        missing = [f"{name}.{part}" for part in ("basis", "identity") if f"{name}.{part}" not in tensors]
        missing += [f"{prefix}{c}" for c in layer.motion if c not in motion]
        if missing:
            raise SetseqError(f"{source} has no tensor {missing[0]}; it was made for another set of adapters.")
        for c in motion:
            if c not in layer.motion:
                layer.add_motion(c)
        parts = {
            f"{name}.basis": layer.basis,
            f"{name}.identity": layer.identity,
            **{f"{prefix}{c}": layer.motion[c] for c in motion},
        }
        for key, param in parts.items():
            t = tensors[key]
            if t.shape != param.shape:
                raise SetseqError(
                    f"{source}: tensor {key} has shape {tuple(t.shape)}, the base needs {tuple(param.shape)}."
                )
            param.copy_(t)


# --------------------------------------------------------------------------------------------
# scales by token or name: the keys people write ("u1=0.5", "v=0.8", "waves=0"), resolved once
# --------------------------------------------------------------------------------------------


def resolve_scales(cs: ConceptSet, scales: dict[str, float]) -> tuple[float | None, dict[str, float]]:
    """Split scales keyed by token or concept name into the identity scale and motion scales by name.

    Args:
        cs: the concept set the keys refer to.
        scales: {key: scale}; a key is an identity token (``v``, ``[v1]``: the identity scale, which
            every concept of a set shares), a motion token (``u2``) or a concept name (its motion).

    Returns:
        (identity scale or None when no key sets it, {concept name: motion scale}), for ``lora.scales``.

    Raises:
        SetseqError: a key the set does not have, or two different identity scales.
    """
    by_token = {}
    for c in cs.concepts:
        by_token[c["motion_token"].strip("[]")] = c["name"]
        by_token[c["name"]] = c["name"]
    identity_keys = {c["identity_token"].strip("[]") for c in cs.concepts}
    identity, motion = None, {}
    for key, value in scales.items():
        k = key.strip("[]")
        if k in identity_keys:
            if identity is not None and identity != value:
                raise SetseqError(
                    "the identity basis is shared by all concepts of a set, so one identity scale "
                    f"applies to all; --scale gave {identity} and {value}."
                )
            identity = value
        elif k in by_token:
            motion[by_token[k]] = value
        else:
            names = sorted(identity_keys | set(by_token))
            raise SetseqError(
                f"--scale names {key!r}, which this concept set does not have; it has {', '.join(names)}."
            )
    return identity, motion


def rank_weights(cs: ConceptSet, weights: list[float]) -> torch.Tensor:
    """Per-component weights on the identity basis (restyling), checked against the set's rank.

    Args:
        cs: the concept set.
        weights: R numbers, R the set's rank.

    Returns:
        (R,) float32, for ``lora.scales(..., rank_weights=...)`` and ``export``.

    Raises:
        SetseqError: the count is not the rank.
    """
    w = torch.tensor([float(x) for x in weights])
    if len(w) != int(cs.meta.get("rank", 0)):
        raise SetseqError(f"--rank-weights needs {cs.meta.get('rank')} numbers (the rank), got {len(w)}.")
    return w
