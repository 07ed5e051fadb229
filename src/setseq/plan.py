"""What a training run will need on the GPU, estimated before any weight is read (`setseq train --dry-run`).

Everything here is arithmetic on a local Wan folder's configuration files, an estimate, never a
measurement:

    tokens      = F' x (h / p_h) x (w / p_w)                   latent frames x patches a frame
    weights     = the transformer's blocks kept on the GPU (bf16: 2 bytes, --fp8-base: 1 byte a linear
                  weight) + its other parts + the swapped blocks in flight (two with the overlapped swap)
    adapters    = every adapter tensor (float32) + the gradients and AdamW's two moments of those the
                  stage trains (float32; AdamW8bit: 1 byte a moment), the larger of the two stages
    activations = per sample of a micro-batch, with gradient checkpointing: each block's input
                  (T x D x 2 bytes; in CPU memory with --offload-activations) + one block's saved
                  tensors counted twice (its recomputation and its backward: an upper bound);
                  without: every block's saved tensors
    encoders    = the UMT5 text encoder and the VAE when --keep-encoders holds them on the GPU (else 0:
                  they wait in CPU memory during the steps)

The bytes a block saves per token come from `benchmarks/saved_activations.py` on the CPU
(`ACTIVATION_BYTES`); parameter counts from the diffusers and transformers classes built on the meta
device, which allocates nothing. The CUDA context and the allocator's own overhead are a fixed
`OVERHEAD_GIB`, an assumption; a run fits a card when the total is within `HEADROOM` of its memory.
`benchmarks/gpu.py` compares the estimate with the measured peak where a GPU runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn as nn

from setseq import lora
from setseq.backbones.base import Geometry
from setseq.errors import SetseqError

GIB = 2**30
OVERHEAD_GIB = 0.5  # the CUDA context, not counted by torch's allocator (an assumption, about 0.5 GiB)
HEADROOM = 0.95  # a plan fits a card when it needs at most this share of its memory (the rest: fragmentation)

# Bytes autograd saves per block for the backward pass in bf16 with rank-32 adapters, 512 text tokens:
# (per video token, independent of the clip), by the block's (width D, FFN width). Counted on the CPU on
# 2026-12-07 with `benchmarks/saved_activations.py --model M --rank 32 --tokens 130 260` (the earlier
# 1.3B and 14B figures of docs/benchmarks.md, 95.9 and 251.7 kB a token at other token counts, are
# 5 and 7 % lower).
ACTIVATION_BYTES = {
    (1536, 8960): (101.0e3, 8.71 * 2**20),  # Wan 2.1 T2V-1.3B
    (5120, 13824): (271.2e3, 26.91 * 2**20),  # Wan 2.1 T2V-14B, each expert of Wan 2.2 T2V-A14B
    (3072, 14336): (187.1e3, 16.91 * 2**20),  # Wan 2.2 TI2V-5B
}


# --------------------------------------------------------------------------------------------
# What a folder holds: its configuration, and the parameter counts it implies
# --------------------------------------------------------------------------------------------


@dataclass
class Model:
    """A Wan model as its configuration files describe it; counts in parameters."""

    name: str
    geometry: Geometry  # its default clip geometry
    frame_step: int  # the VAE's temporal compression
    vae_stride: int  # the VAE's spatial compression
    patch: tuple[int, int, int]  # the transformer's (frames, height, width) patch
    width: int  # D
    ffn: int  # the FFN's hidden width
    experts: int  # transformers (2: Wan 2.2 T2V-A14B)
    blocks: int  # blocks of one transformer
    block_linear: int  # one block's nn.Linear weights (what --fp8-base stores in float8)
    block_other: int  # one block's other tensors (biases, norms; some float32)
    other: int  # one transformer's tensors outside its blocks
    text_encoder: int
    vae: int
    adapted: list[tuple[int, int]] = field(default_factory=list)  # (in, out) of every adapted linear, all experts


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters()) + sum(b.numel() for b in module.buffers())


def read_model(folder: str | Path) -> Model:
    """The model of a local Wan folder from model_index.json and the config.json of its transformer(s),
    text encoder and VAE: no weight is read (the parts are built on the meta device to be counted).

    Raises:
        SetseqError: for a folder that is not a Wan folder setseq knows (`wan.identify`), or a config
            that is missing or unreadable.
    """
    from setseq.backbones import wan
    from setseq.backbones.diffusers_common import read_config, read_model_index, require_diffusers

    require_diffusers()
    from diffusers import AutoencoderKLWan
    from transformers import UMT5Config, UMT5EncoderModel

    root = Path(folder)
    index = read_model_index(root)
    if index.get("_class_name", wan.PIPELINE) != wan.PIPELINE:
        raise SetseqError(f"--dry-run plans Wan folders; {str(root)!r} holds a {index.get('_class_name')}.")
    tcfg, vcfg = read_config(root, "transformer"), read_config(root, "vae")
    layout = wan.identify(index, tcfg, vcfg, repr(str(root)))
    text_cfg = read_config(root, "text_encoder")
    with torch.device("meta"):
        vae = AutoencoderKLWan.from_config(_settings(vcfg))
        text = UMT5EncoderModel(UMT5Config(**_settings(text_cfg)))
    model = transformer_model(tcfg, 2 if layout.experts else 1, layout.name, layout.geometry)
    return replace(
        model,
        frame_step=vae.config.scale_factor_temporal,
        vae_stride=vae.config.scale_factor_spatial,
        text_encoder=_count(text),
        vae=_count(vae),
    )


def _settings(config: dict) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_")}


WAN_480P = Geometry(81, 480, 832, 16.0)


def transformer_model(config: dict, experts: int = 1, name: str = "Wan", geometry: Geometry = WAN_480P) -> Model:
    """The `Model` of a WanTransformer3DModel configuration (`experts` of them), built on the meta
    device to be counted; Wan 2.1's VAE compression (4x temporal, 8x spatial), no text encoder or VAE
    counted (`read_model` adds a folder's)."""
    from diffusers import WanTransformer3DModel

    from setseq.backbones import wan

    with torch.device("meta"):
        transformer = WanTransformer3DModel.from_config(_settings(config))
    block = transformer.blocks[0]
    linear = sum(m.weight.numel() for m in block.modules() if isinstance(m, nn.Linear))
    targets = [
        (m.in_features, m.out_features)
        for _ in range(experts)
        for n, m in transformer.named_modules()
        if isinstance(m, nn.Linear) and lora.matches(n, wan.TARGETS)
    ]
    c = transformer.config
    return Model(
        name=name,
        geometry=geometry,
        frame_step=4,
        vae_stride=8,
        patch=tuple(c.patch_size),
        width=c.num_attention_heads * c.attention_head_dim,
        ffn=c.ffn_dim,
        experts=experts,
        blocks=len(transformer.blocks),
        block_linear=linear,
        block_other=_count(block) - linear,
        other=_count(transformer) - len(transformer.blocks) * _count(block),
        text_encoder=0,
        vae=0,
        adapted=targets,
    )


# --------------------------------------------------------------------------------------------
# The estimate
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """The run's settings that decide its memory (the flags of `setseq train` of the same names)."""

    dtype_bytes: int = 2  # --dtype bfloat16
    rank: int = 32
    concepts: int = 1
    micro_batch: int = 1
    stages: tuple[str, ...] = ("identity", "motion")  # what each stage trains
    optimizer: str = "adamw"
    gradient_checkpointing: bool = True
    fp8_base: bool = False
    blocks_to_swap: int = 0  # of all the model's blocks (both experts': 80 for T2V-A14B)
    offload_activations: bool = False
    keep_encoders: bool = False

    def flags(self) -> list[str]:
        """The memory flags these settings stand for, as `setseq train` spells them."""
        out = [f"--dtype {'bfloat16' if self.dtype_bytes == 2 else 'float32'}", f"--micro-batch {self.micro_batch}"]
        out += ["--fp8-base"] if self.fp8_base else []
        out += [f"--blocks-to-swap {self.blocks_to_swap}"] if self.blocks_to_swap else []
        out += ["--offload-activations"] if self.offload_activations else []
        out += ["--keep-encoders"] if self.keep_encoders else []
        out += ["--no-gradient-checkpointing"] if not self.gradient_checkpointing else []
        out += ["--optimizer adamw8bit"] if self.optimizer == "adamw8bit" else []
        return out


@dataclass
class Estimate:
    """Peak GPU memory of a training step in bytes, by part, and what the run holds in CPU memory."""

    tokens: int
    adapter_params: int
    weights: float
    adapters: float
    activations: float
    encoders: float
    cpu: float  # pinned CPU memory: swapped blocks and offloaded activations (the parked encoders aside)

    @property
    def total(self) -> float:
        return self.weights + self.adapters + self.activations + self.encoders + OVERHEAD_GIB * GIB


def tokens(model: Model, g: Geometry) -> int:
    """Video tokens of one clip: latent frames x patches per latent frame."""
    pf, ph, pw = model.patch
    frames = (g.frames - 1) // model.frame_step + 1
    return (frames // pf) * (g.height // model.vae_stride // ph) * (g.width // model.vae_stride // pw)


def activation_bytes(model: Model, dtype_bytes: int = 2) -> tuple[float, float]:
    """(bytes a token, bytes independent of the clip) that one block saves for its backward pass: the
    measured figure of this width (`ACTIVATION_BYTES`), or for a width not measured, that of the
    nearest measured width scaled by D; in the model's dtype (measured in bf16)."""
    key = (model.width, model.ffn)
    if key not in ACTIVATION_BYTES:
        near = min(ACTIVATION_BYTES, key=lambda k: abs(k[0] - model.width))
        per, fixed = ACTIVATION_BYTES[near]
        per, fixed = per * model.width / near[0], fixed * model.width / near[0]
    else:
        per, fixed = ACTIVATION_BYTES[key]
    return per * dtype_bytes / 2, fixed * dtype_bytes / 2


def estimate(model: Model, g: Geometry, s: Settings) -> Estimate:
    """Peak GPU memory of one training step of `model` at geometry `g` with settings `s` (see the module
    docstring for the model of each part)."""
    T, b = tokens(model, g), s.dtype_bytes
    all_blocks = model.experts * model.blocks
    if not 0 <= s.blocks_to_swap <= all_blocks:
        raise SetseqError(f"--blocks-to-swap must be between 0 and the model's {all_blocks} blocks.")
    block = model.block_linear * (1 if s.fp8_base else b) + model.block_other * b
    in_flight = min(2, s.blocks_to_swap)  # the block that runs and the next, copied while it runs
    weights = model.experts * model.other * b + (all_blocks - s.blocks_to_swap + in_flight) * block
    # adapters: A (out, R), B_id (R, in), one B_mo (R, in) per concept, float32
    basis = sum(out * s.rank for _, out in model.adapted)
    coef = sum(s.rank * i for i, _ in model.adapted)
    params = basis + coef * (1 + s.concepts)
    trained = max((basis + coef if kind == "identity" else coef * s.concepts for kind in s.stages), default=0)
    moments = 2 * (1 if s.optimizer == "adamw8bit" else 4)
    adapters = 4 * params + (4 + moments) * trained
    per, fixed = activation_bytes(model, b)
    one_block = per * T + fixed
    if s.gradient_checkpointing:
        inputs = 0 if s.offload_activations else model.blocks * T * model.width * b
        activations = s.micro_batch * (inputs + 2 * one_block)
    else:
        activations = s.micro_batch * model.blocks * one_block
    encoders = (model.text_encoder * b + model.vae * 4) if s.keep_encoders else 0
    cpu = s.blocks_to_swap * block
    cpu += s.micro_batch * model.blocks * T * model.width * b if s.offload_activations else 0
    return Estimate(T, params, weights, adapters, activations, encoders, cpu)


def fit(model: Model, g: Geometry, s: Settings, vram_gib: float) -> Settings | None:
    """The first settings, from `s` and adding memory flags in this order, whose estimate fits
    `vram_gib` (within HEADROOM): as given; one sample a forward pass (--micro-batch 1: the same
    gradients, accumulated) in bf16; --fp8-base; --fp8-base --blocks-to-swap N (the least N);
    --fp8-base --offload-activations; the same with the least N; then with --optimizer adamw8bit. None
    when none fits."""
    budget = HEADROOM * vram_gib * GIB
    bf16 = replace(s, dtype_bytes=2, micro_batch=1)
    fp8 = replace(bf16, fp8_base=True)
    offload = replace(fp8, offload_activations=s.gradient_checkpointing)
    for base in (s, bf16, fp8, offload, replace(offload, optimizer="adamw8bit")):
        for n in range(base.blocks_to_swap, model.experts * model.blocks + 1):
            candidate = replace(base, blocks_to_swap=n)
            if estimate(model, g, candidate).total <= budget:
                return candidate
            if base is s:  # the settings as given are tried without added swapping first
                break
    return None


# --------------------------------------------------------------------------------------------
# The printed plan
# --------------------------------------------------------------------------------------------


def _gib(x: float) -> str:
    return f"{x / GIB:.1f} GiB"


def render(model: Model, g: Geometry, s: Settings, vram_gib: float | None = None) -> str:
    """The plan `setseq train --dry-run` prints: the model, the clip, the estimate split by part and,
    with `vram_gib`, the memory flags that make it fit that card."""
    e = estimate(model, g, s)
    per_expert = model.other + model.blocks * (model.block_linear + model.block_other)
    experts = f"{model.experts} experts of " if model.experts > 1 else ""
    lines = [
        f"plan for {model.name} (an estimate by arithmetic, not a measurement; setseq.plan says how):",
        f"  transformer      {experts}{per_expert / 1e9:.2f} B parameters, {model.experts * model.blocks} blocks",
        f"  clip             {g.frames} frames of {g.width} x {g.height}: {e.tokens:,} tokens",
        f"  adapters         {len(model.adapted)} linear layers at rank {s.rank}: {e.adapter_params / 1e6:.1f} M parameters",
        f"  settings         {' '.join(s.flags())}",
        "  peak GPU memory of a training step:",
        f"    weights                  {_gib(e.weights)}",
        f"    adapters and optimiser   {_gib(e.adapters)}",
        f"    activations              {_gib(e.activations)}"
        + ("" if s.gradient_checkpointing else " (no gradient checkpointing)"),
        f"    encoders                 {_gib(e.encoders)}"
        + (
            " (--keep-encoders)"
            if s.keep_encoders
            else f" (text encoder {_gib(model.text_encoder * s.dtype_bytes)} and VAE "
            f"{_gib(model.vae * 4)} wait in CPU memory)"
        ),
        f"    CUDA context (assumed)   {OVERHEAD_GIB:.1f} GiB",
        f"    total                    {_gib(e.total)}",
        f"  pinned CPU memory          {_gib(e.cpu)} (swapped blocks, offloaded block inputs)",
        "  before the first step the encoders are on the GPU with the weights and adapters: "
        f"{_gib(e.weights + 4 * e.adapter_params + model.text_encoder * s.dtype_bytes + model.vae * 4 + OVERHEAD_GIB * GIB)}"
        " and the VAE's own activations for one clip (not estimated).",
    ]
    if vram_gib is not None:
        fitting = fit(model, g, s, vram_gib)
        if fitting is None:
            lines.append(f"  nothing fits {vram_gib:g} GiB by this estimate; train on fewer frames or a smaller size.")
        elif fitting == s:
            lines.append(f"  fits {vram_gib:g} GiB as it is ({_gib(e.total)} of {vram_gib:g} GiB).")
        else:
            total = estimate(model, g, fitting).total
            lines.append(f"  fits {vram_gib:g} GiB with: {' '.join(fitting.flags())} ({_gib(total)}).")
    lines.append("  the estimate's model: setseq.plan; benchmarks/gpu.sh compares it with a measured peak.")
    return "\n".join(lines)


__all__ = ["ACTIVATION_BYTES", "Estimate", "Model", "Settings", "estimate", "fit", "read_model", "render", "tokens"]
