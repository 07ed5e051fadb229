"""Time setseq LoRA training steps on a Wan-1.3B-sized transformer with random weights.

    python benchmarks/step_time.py --device cuda --dtype bf16          # Wan2.1-T2V-1.3B size, GPU
    python benchmarks/step_time.py --tiny                              # the tiny test model, any CPU

One step is what the trainer does per micro-batch on the transformer: forward with adapters, the
velocity loss, backward into the adapters only, an AdamW step. The VAE and text encoder are left
out (the trainer can cache their outputs). Per geometry it prints seconds per step, latent tokens
per second, peak memory, and MFU: the step's FLOPs (counted by torch's FlopCounterMode, so
attention and, with checkpointing, recomputation included) over the time, against the matmul
rate measured on this device in the same dtype.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time

import torch

from setseq import flow, lora
from setseq.backbones.wan import WAN_1_3B, WAN_TINY

# HEIGHTxWIDTHxFRAMES: Wan's 480p clip and a smaller one; the tiny ones keep the tiny model fast.
GEOMETRIES = ["480x832x81", "320x576x49"]
TINY_GEOMETRIES = ["32x32x5", "64x64x9"]


def latent_shape(frames: int, height: int, width: int) -> tuple[int, int, int, int]:
    """Wan's VAE: 16 channels, 4x in time (first frame apart), 8x in space."""
    return (16, (frames - 1) // 4 + 1, height // 8, width // 8)


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 10) -> float:
    """Measured FLOP/s of an n x n matmul: the reference for MFU."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # process peak RSS (KiB on Linux)


def build(tiny: bool, rank: int, device: torch.device, dtype: torch.dtype, checkpointing: bool):
    from diffusers import WanTransformer3DModel

    cfg = WAN_TINY if tiny else WAN_1_3B
    with torch.device(device):
        model = WanTransformer3DModel(**cfg).to(dtype)
    for name, module in model.named_modules():  # as from_pretrained(torch_dtype=...) keeps them
        if any(k in name.split(".") for k in model._keep_in_fp32_modules):
            module.float()
    model.requires_grad_(False)
    if checkpointing:
        model.enable_gradient_checkpointing()
    layers = lora.inject(
        model,
        ["blocks.*.attn[12].to_[qkv]", "blocks.*.attn[12].to_out.0", "blocks.*.ffn.net.0.proj", "blocks.*.ffn.net.2"],
        rank,
    )
    params = [p for layer in layers.values() for p in (layer.basis, layer.identity)]
    for p in params:
        p.requires_grad_(True)
    model.train()
    return model, params, cfg["text_dim"]


def run_geometry(model, params, text_dim, shape, batch, text_len, steps, warmup, device, dtype) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    opt = torch.optim.AdamW(params, lr=1e-4)
    x0 = torch.randn(batch, *shape, device=device, dtype=dtype)
    text = torch.randn(batch, text_len, text_dim, device=device, dtype=dtype)

    def step():
        noise = torch.randn_like(x0)
        t = flow.sample_timesteps(batch, device=device)
        x_t = flow.interpolate(x0, noise, t)
        v = model(hidden_states=x_t, timestep=1000 * t, encoder_hidden_states=text, return_dict=False)[0]
        flow.loss_per_sample(v, flow.target_velocity(x0, noise)).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        step()
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    tokens = batch * math.prod(s // p for s, p in zip(shape[1:], (1, 2, 2)))
    return {
        "seconds": seconds,
        "tokens": tokens,
        "flops": counter.get_total_flops(),
        "peak_gib": peak_memory_gib(device),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="the tiny test transformer (CPU-friendly)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default=None, help="default: bf16 on GPU, fp32 on CPU")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=5, help="timed steps per geometry")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing")
    p.add_argument("--geometry", action="append", help="HEIGHTxWIDTHxFRAMES, e.g. 480x832x81 (repeatable)")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[a.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    geometries = a.geometry or (TINY_GEOMETRIES if a.tiny else GEOMETRIES)
    torch.manual_seed(0)
    model, params, text_dim = build(a.tiny, a.rank, device, dtype, a.checkpointing)
    n_params = sum(q.numel() for q in model.parameters()) - sum(q.numel() for q in params)
    peak = matmul_rate(device, dtype, 1024 if device.type == "cpu" else 8192)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device {name} ({torch.get_num_threads()} threads), torch {torch.__version__}, {dtype}, "
        f"{'tiny' if a.tiny else 'Wan-1.3B'} transformer ({n_params / 1e6:.2f}M params), LoRA rank {a.rank}, "
        f"batch {a.batch}, checkpointing {a.checkpointing}, matmul rate {peak / 1e12:.3f} TFLOP/s"
    )
    print(f"{'geometry':<14}{'tokens':>8}{'s/step':>10}{'tokens/s':>11}{'GFLOP/step':>12}{'MFU':>8}{'peak GiB':>10}")
    for label in geometries:
        height, width, frames = (int(v) for v in label.split("x"))
        r = run_geometry(
            model,
            params,
            text_dim,
            latent_shape(frames, height, width),
            a.batch,
            512 if not a.tiny else 16,
            a.steps,
            a.warmup,
            device,
            dtype,
        )
        mfu = r["flops"] / r["seconds"] / peak
        print(
            f"{label:<14}{r['tokens']:>8}{r['seconds']:>10.4f}{r['tokens'] / r['seconds']:>11.0f}"
            f"{r['flops'] / 1e9:>12.3f}{mfu:>8.2%}{r['peak_gib']:>10.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
