"""A concept set as a standard rank-R LoRA, for diffusers pipelines and ComfyUI.

For every adapted linear layer the concept set computes W + s A (g (.) s_id B_id + sum_c w_c B_mo[c]),
so with the scales chosen at export time it is an ordinary LoRA W + up @ down:

    up   (out x R) = s A                                            (PEFT's lora_B)
    down (R x in)  = g (.) s_id B_id + sum_c w_c B_mo[c]   (full)   (PEFT's lora_A)
                   = g (.) s_id B_id                       (identity)

`down` is `lora.combine`, the function the layer itself uses, so an export is what `generate`
samples with the same scales and rank weights.

The LoRA scale s is folded into `up`, so the files need alpha = R (scale 1). Formats:

    diffusers  transformer.<module>.lora_A.weight / .lora_B.weight, diffusers module names
               (any base, the toy included; pipelines load it with `load_lora_weights`)
    comfyui    Wan:       diffusion_model.blocks.{i}.self_attn.q.lora_A.weight ... with .alpha = R,
                          the original Wan module names (key table below)
               LTX-Video, LTX-2: diffusion_model.<diffusers module name>.lora_A.weight ..., the
                          native names of the video stream being the diffusers ones
               HunyuanVideo 1.5: diffusion_model.double_blocks.{i}.img_attn.qkv.lora_A.weight ...
                          with .alpha, ComfyUI's native names (key table below), in which the query,
                          key and value projections are one fused linear layer

HunyuanVideo15Pipeline has no LoRA loader; its diffusers-format file (the PEFT names lora_A / lora_B
under `transformer.`) loads into the pipeline's transformer with diffusers' model-level PEFT loader,
`pipe.transformer.load_lora_adapter(path, prefix="transformer")`.

A concept of a two-expert base (Wan 2.2 T2V-A14B) is two LoRAs, one per expert, written beside each
other as NAME_high_noise.safetensors and NAME_low_noise.safetensors with the keys above (in each,
the module names of its own transformer). ComfyUI loads each onto its expert's model; diffusers
loads the first with `pipe.load_lora_weights(...)` and the second with
`pipe.load_lora_weights(..., load_into_transformer_2=True)`.

Concept-token embeddings have no place in a LoRA file and are not exported; they are zero unless
the concept was trained with --token-lr.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from setseq import lora
from setseq.concept import ConceptSet
from setseq.errors import SetseqError
from setseq.fileio import atomic_path, check_writable

FORMATS = ("diffusers", "comfyui")
PARTS = ("full", "identity")

# diffusers Wan module -> original Wan module, the names ComfyUI and the Wan repository use
WAN_ATTENTION = {"attn1": "self_attn", "attn2": "cross_attn"}
WAN_PROJECTION = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "o"}
WAN_FFN = {"net.0.proj": "0", "net.2": "2"}
WAN_ATTN_RE = re.compile(r"blocks\.(\d+)\.(attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)")
WAN_FFN_RE = re.compile(r"blocks\.(\d+)\.ffn\.(net\.0\.proj|net\.2)")
# LTX-Video's and LTX-2's native module names are diffusers' for the adapted layers. Read from
# ComfyUI's source: comfy/ldm/lightricks/model.py (transformer_blocks.{i}.attn1 / attn2 of
# CrossAttention with to_q, to_k, to_v, to_out.0; ff of FeedForward with net.0.proj, net.2) and, for
# LTX-2, comfy/ldm/lightricks/av_model.py (BasicAVTransformerBlock: the video stream's attn1, attn2, ff
# beside audio_attn1, audio_attn2, audio_ff, audio_to_video_attn, video_to_audio_attn).
LTX_RE = re.compile(r"transformer_blocks\.\d+\.\S+")

# diffusers HunyuanVideo 1.5 module -> ComfyUI's native module (and the part it is of a fused layer).
# Read from ComfyUI's source: comfy/ldm/hunyuan_video/model.py builds `double_blocks` of flux's
# DoubleStreamBlock, whose native names (img_attn.qkv, img_attn.proj, img_mlp.0, img_mlp.2 and the txt_
# twins) comfy/lora.py's model_lora_keys_unet spells out in its HunyuanVideo branch; that function maps
# every "diffusion_model.<module>" LoRA key to the module's weight. HunyuanVideo 1.5's own checkpoint
# keeps q, k and v apart (img_attn_q, ...: diffusers' scripts/convert_hunyuan_video1_5_to_diffusers.py),
# which ComfyUI's layout holds fused in q, k, v order. The ComfyUI versions readable here predate its
# 1.5 support; that 1.5 LoRAs for ComfyUI take this fused layout is what musubi-tuner's
# networks/convert_hunyuan_video_1_5_lora_to_comfy.py writes.
HY15_NATIVE = {
    "attn.to_q": ("img_attn.qkv", 0),
    "attn.to_k": ("img_attn.qkv", 1),
    "attn.to_v": ("img_attn.qkv", 2),
    "attn.to_out.0": ("img_attn.proj", None),
    "ff.net.0.proj": ("img_mlp.0", None),
    "ff.net.2": ("img_mlp.2", None),
    "attn.add_q_proj": ("txt_attn.qkv", 0),
    "attn.add_k_proj": ("txt_attn.qkv", 1),
    "attn.add_v_proj": ("txt_attn.qkv", 2),
    "attn.to_add_out": ("txt_attn.proj", None),
    "ff_context.net.0.proj": ("txt_mlp.0", None),
    "ff_context.net.2": ("txt_mlp.2", None),
}
HY15_RE = re.compile(r"transformer_blocks\.(\d+)\.(\S+)")


def lora_pairs(
    cs: ConceptSet,
    part: str = "full",
    identity_scale: float = 1.0,
    motion_scale: float | dict[str, float] = 1.0,
    rank_weights: torch.Tensor | None = None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(down (R, in), up (out, R)) per adapted module, so that up @ down is the layer's weight delta
    with these scales: down is `lora.combine`, the formula the layer itself computes.

    Args:
        cs: the concept set.
        part: "full" (identity and motion) or "identity" (stage 1's appearance only).
        identity_scale: s_id, the scale of the identity coefficients.
        motion_scale: w_c, one number for every concept or a scale per concept name.
        rank_weights: g (R,), per-component weights on the identity part (None: all ones).

    Raises:
        SetseqError: for an unknown part or concept name, rank weights of another length than the
            rank, or a concept set without LoRA weights.
    """
    if part not in PARTS:
        raise SetseqError(f"--part must be one of {', '.join(PARTS)}, got {part!r}.")
    modules = cs.modules()
    if not modules:
        raise SetseqError(
            "this concept set has no LoRA weights (a textual-inversion concept holds only token "
            "embeddings), so there is nothing to export as a LoRA."
        )
    names = [c["name"] for c in cs.concepts]
    scales = {c: float(motion_scale) for c in names} if isinstance(motion_scale, (int, float)) else dict(motion_scale)
    unknown = set(scales) - set(names)
    if unknown:
        raise SetseqError(f"no concept named {sorted(unknown)} in this set; it has {names}.")
    rank = int(cs.meta.get("rank", 0))
    if rank_weights is not None and tuple(rank_weights.shape) != (rank,):
        raise SetseqError(f"rank weights must have {rank} entries (the rank), got {tuple(rank_weights.shape)}.")
    g = None if rank_weights is None else rank_weights.float()
    s = float(cs.meta.get("scale", 1.0))
    t = cs.tensors
    pairs = {}
    for m in modules:
        motion = {c: t[f"{m}.motion.{c}"].float() for c in names if part == "full" and f"{m}.motion.{c}" in t}
        down = lora.combine(t[f"{m}.identity"].float(), motion, identity_scale, scales, g)  # (R, in)
        pairs[m] = (down, s * t[f"{m}.basis"].float())  # up: (out, R)
    return pairs


def wan_original_name(module: str) -> str | None:
    """blocks.3.attn2.to_out.0 -> blocks.3.cross_attn.o; None for a module outside the table."""
    if m := WAN_ATTN_RE.fullmatch(module):
        return f"blocks.{m[1]}.{WAN_ATTENTION[m[2]]}.{WAN_PROJECTION[m[3]]}"
    if m := WAN_FFN_RE.fullmatch(module):
        return f"blocks.{m[1]}.ffn.{WAN_FFN[m[2]]}"
    return None


def hunyuan15_native_name(module: str) -> tuple[str, int | None] | None:
    """transformer_blocks.3.attn.to_k -> ("double_blocks.3.img_attn.qkv", 1): ComfyUI's module and the
    part of it (q 0, k 1, v 2; None for an unfused layer); None for a module outside the table."""
    m = HY15_RE.fullmatch(module)
    if m is None or m[2] not in HY15_NATIVE:
        return None
    native, part = HY15_NATIVE[m[2]]
    return f"double_blocks.{m[1]}.{native}", part


# The key table of each model a concept file names (its base's `model`, recorded in concept files from
# 2026-12-07 on); older files are told apart by their module names.
FAMILIES = {"LTX-Video": "ltx", "LTX-2": "ltx", "HunyuanVideo 1.5": "hunyuan15"}
FITS = {
    "wan": wan_original_name,
    "hunyuan15": hunyuan15_native_name,
    "ltx": LTX_RE.fullmatch,
}


def base_family(modules: list[str], model: str | None = None) -> str:
    """ "wan", "hunyuan15", "ltx" (LTX-Video and LTX-2) or "other": the key table of the base `model`
    (as a concept file records it) when every module is in it, else the first table that holds every
    module name (HunyuanVideo 1.5's blocks hold `attn` and `ff_context`, LTX's `attn1`, `attn2` and
    `ff`; names alone cannot tell an LTX concept of `ff` layers only from a HunyuanVideo one)."""
    family = "wan" if (model or "").startswith("Wan") else FAMILIES.get(model or "")
    if family is not None:
        return family if all(FITS[family](m) for m in modules) else "other"
    return next((f for f, fits in FITS.items() if all(fits(m) for m in modules)), "other")


def fuse_parts(parts: dict[int, tuple[torch.Tensor, torch.Tensor]], n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """One LoRA for a linear layer that fuses n projections (q, k, v stacked on the output side) from
    the LoRAs of its parts {index: (down (R, in), up (out, R))}: down (n R, in) stacks the downs, up
    (n out, n R) holds each part's up on the diagonal, so up @ down stacks the parts' deltas (a missing
    part: zeros)."""
    down0, up0 = next(iter(parts.values()))
    R, out = down0.shape[0], up0.shape[0]
    down = torch.zeros(n * R, down0.shape[1])
    up = torch.zeros(n * out, n * R)
    for i, (d, u) in parts.items():
        down[i * R : (i + 1) * R] = d
        up[i * out : (i + 1) * out, i * R : (i + 1) * R] = u
    return down, up


def _hunyuan15_comfy(pairs: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    fused: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
    layers: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for m, pair in pairs.items():
        native, part = hunyuan15_native_name(m)
        if part is None:
            layers[native] = pair
        else:
            fused.setdefault(native, {})[part] = pair
    layers.update({native: fuse_parts(parts) for native, parts in fused.items()})
    out: dict[str, torch.Tensor] = {}
    for native, (down, up) in sorted(layers.items()):
        name = f"diffusion_model.{native}"
        out[f"{name}.lora_A.weight"], out[f"{name}.lora_B.weight"] = down, up
        out[f"{name}.alpha"] = torch.tensor(float(down.shape[0]))  # alpha = rank: scale 1
    return out


def by_expert(
    cs: ConceptSet, pairs: dict[str, tuple[torch.Tensor, torch.Tensor]]
) -> dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """The pairs of each expert under the module names of its own transformer ("high_noise.blocks.0..."
    -> "blocks.0..."), by expert; a set of a one-transformer base is one expert named ""."""
    experts = cs.meta.get("experts")
    if not experts:
        return {"": pairs}
    out: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {e: {} for e in experts}
    for m, pair in pairs.items():
        expert, _, module = m.partition(".")  # concept.validate: every module begins with its expert
        out[expert][module] = pair
    return {e: p for e, p in out.items() if p}


def state_dict(
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], fmt: str, model: str | None = None
) -> dict[str, torch.Tensor]:
    """The LoRA tensors under the key names of `fmt` (see the module docstring); `model` is the base's
    model as the concept file records it (None: told by the module names)."""
    if fmt not in FORMATS:
        raise SetseqError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}.")
    out: dict[str, torch.Tensor] = {}
    if fmt == "diffusers":
        for m, (down, up) in pairs.items():
            out[f"transformer.{m}.lora_A.weight"], out[f"transformer.{m}.lora_B.weight"] = down, up
        return out
    family = base_family(list(pairs), model)
    if family == "other":
        raise SetseqError(
            f"the ComfyUI format is for Wan, LTX-Video, LTX-2 and HunyuanVideo 1.5 concepts, and this one adapts "
            f"modules such as {sorted(pairs)[0]!r}; export it with --format diffusers instead."
        )
    if family == "hunyuan15":
        return _hunyuan15_comfy(pairs)
    for m, (down, up) in pairs.items():
        name = f"diffusion_model.{wan_original_name(m) if family == 'wan' else m}"
        out[f"{name}.lora_A.weight"], out[f"{name}.lora_B.weight"] = down, up
        if family == "wan":  # alpha = R: scale 1, the LoRA scale being folded into lora_B
            out[f"{name}.alpha"] = torch.tensor(float(down.shape[0]))
    return out


def export(
    cs: ConceptSet,
    out: str | Path,
    fmt: str,
    part: str = "full",
    identity_scale: float = 1.0,
    motion_scale: float | dict[str, float] = 1.0,
    dtype: torch.dtype = torch.float32,
    rank_weights: torch.Tensor | None = None,
) -> list[Path]:
    """Write the concept set as a LoRA `.safetensors` file, or one per expert (atomically).

    Args:
        cs: the concept set, from `concept.load`.
        out: the output path, NAME.safetensors; a set of a two-expert base is written as
            NAME_high_noise.safetensors and NAME_low_noise.safetensors instead.
        fmt: "diffusers" or "comfyui".
        part, identity_scale, motion_scale, rank_weights: as in `lora_pairs`.
        dtype: dtype of the written tensors (float32, or bfloat16 / float16 for half the size).

    Returns:
        The paths written: [out], or one per expert, high noise first.

    Raises:
        SetseqError: for a path not ending in .safetensors or that cannot be written (a folder, no
            permission), and as `lora_pairs` and `state_dict` (before anything is written).
    """
    out = Path(out)
    check_writable(out, create=True)
    if out.suffix != ".safetensors":
        raise SetseqError(f"the export must be a .safetensors file, got {str(out)!r}.")
    experts = by_expert(cs, lora_pairs(cs, part, identity_scale, motion_scale, rank_weights))
    files = {
        (out.with_name(f"{out.stem}_{e}{out.suffix}") if e else out, e): state_dict(
            pairs, fmt, cs.meta.get("base", {}).get("model")
        )
        for e, pairs in experts.items()
    }
    info = {
        "base": cs.meta.get("base", {}),
        "concepts": [c["name"] for c in cs.concepts],
        "part": part,
        "identity_scale": identity_scale,
        "motion_scale": motion_scale,
        "rank": cs.meta.get("rank"),
    }
    if rank_weights is not None:
        info["rank_weights"] = [float(w) for w in rank_weights]
    written: list[Path] = []
    try:
        for (path, expert), tensors in files.items():
            meta = {**info, "expert": expert, **cs.meta["experts"][expert]} if expert else info
            with atomic_path(path) as tmp:
                save_file(
                    {k: v.to(dtype).contiguous() for k, v in tensors.items()},
                    str(tmp),
                    metadata={"format": f"setseq.lora.{fmt}", "setseq": json.dumps(meta)},
                )
            written.append(path)
    except BaseException:  # one expert's file without the other's is no model: remove it
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written
