"""Seconds per step of the toy DiT, by width and depth, float32 vs bf16 autocast, eager vs compiled.

    python benchmarks/toy_step.py                         # the default grid, 2 threads
    python benchmarks/toy_step.py --models 128x6,384x8 --compile --repeats 5
    python benchmarks/toy_step.py --models 256x8 --attention          # + bf16 attention in training

Three kinds of step, each on the toy's geometry (8 frames of 32 x 32, patch 4: 512 tokens a clip):
- pretrain: forward + backward of the whole DiT and text encoder on 16 clips, and an AdamW step;
- lora-set / lora-seq: the toy preset's LoRA steps (rank = width / 2, the preset's ratio; batch 4):
  stage 1 on single frames, stage 2 on clips, gradients into the adapters only;
- sample: one guided sampling step (conditional and unconditional together, batch 2, no grad).

Every configuration runs in this one process, so the ratios in a row are measured side by side.
bf16 columns run the backbone's bf16 autocast over float32 master weights (`ToyBackbone.bf16`,
setseq.precision); it pays where the CPU has bf16 matrix units (AMX, AVX-512 BF16). Under it the
toy's attention trains in float32 (`setseq.toy.dit.TRAIN_ATTENTION_FP32`); `--attention` adds a
column with attention in bf16 throughout, the path that flag replaced.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from setseq import flow, lora, precision
from setseq.backbones.toy import PRESETS, ToyBackbone
from setseq.toy import dit
from setseq.toy.dit import DiTConfig


def build(dim: int, depth: int, heads: int) -> ToyBackbone:
    cfg, g = PRESETS["toy"]
    arch = DiTConfig(**{**cfg.to_dict(), "dim": dim, "depth": depth, "heads": heads})
    return ToyBackbone("toy", arch, g, seed=0)


def make_steps(bb: ToyBackbone, kind: str):
    """A closure running one step of `kind`, and the modules it trains (for compile)."""
    g = bb.geometry
    gen = torch.Generator().manual_seed(0)
    text = ["a red circle on a blue background moves left while the camera is still"]
    if kind == "pretrain":
        for p in bb.parameters():
            p.requires_grad_(True)
        bb.transformer.train()
        params = [p for p in bb.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4)
        x0 = torch.randn(16, g.frames, 3, g.height, g.width, generator=gen)
        prompts = text * 16
    elif kind in ("lora-set", "lora-seq"):
        for p in bb.parameters():
            p.requires_grad_(False)
        if not lora.adapters(bb.transformer):
            lora.inject(bb.transformer, bb.lora_targets, rank=bb.cfg.dim // 2)
        for a in lora.adapters(bb.transformer).values():
            if kind == "lora-seq" and "c" not in a.motion:
                a.add_motion("c")
            a.basis.requires_grad_(kind == "lora-set")
            a.identity.requires_grad_(kind == "lora-set")
            for m in a.motion.values():
                m.requires_grad_(True)
        bb.transformer.train()
        params = [p for p in bb.transformer.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4)
        frames = 1 if kind == "lora-set" else g.frames
        x0 = torch.randn(4, frames, 3, g.height, g.width, generator=gen)
        prompts = text * 4
    else:  # sample
        bb.transformer.eval()
        x = torch.randn(1, g.frames, 3, g.height, g.width, generator=gen)

        def step():
            with torch.no_grad():
                t = torch.full((2,), 0.5)
                both = bb.encode_text([text[0], ""])
                v_c, v_u = bb.velocity(torch.cat([x, x]), t, both, torch.cat([x, x])).chunk(2)
                return flow.guide(v_c, v_u, 4.0)

        return step

    noise = torch.randn(x0.shape, generator=gen)
    t = torch.rand(len(x0), generator=gen)

    def step():
        x_t = flow.interpolate(x0, noise, t)
        emb = bb.encode_text(prompts)
        loss = (bb.velocity(x_t, t, emb).float() - flow.target_velocity(x0, noise)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


def seconds(step, bb: ToyBackbone, modes: list[tuple[bool, bool]], repeats: int) -> list[float]:
    """The fastest of `repeats` timings of `step` in each mode (bf16 autocast, float32 attention in
    training), the modes interleaved so that whatever else the machine does falls on all of them
    alike (one warm-up call each)."""
    best = [float("inf")] * len(modes)
    for r in range(repeats + 1):
        for i, (bf16, attention_fp32) in enumerate(modes):
            bb.bf16, dit.TRAIN_ATTENTION_FP32 = bf16, attention_fp32
            start = time.perf_counter()
            step()
            if r:
                best[i] = min(best[i], time.perf_counter() - start)
    dit.TRAIN_ATTENTION_FP32 = True
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="128x6,256x8,384x8,512x8", help="WIDTHxDEPTH,... (heads = width / 32)")
    ap.add_argument("--kinds", default="pretrain,lora-set,lora-seq,sample")
    ap.add_argument("--compile", action="store_true", help="also time bf16 autocast + torch.compile")
    ap.add_argument("--attention", action="store_true", help="also time bf16 with bf16 attention in training")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads, "
        f"bf16 matrix units: {precision.cpu_has_bf16()}, best of {args.repeats} (modes interleaved)"
    )
    cols = ["fp32", "bf16"] + (["bf16, bf16 attention"] if args.attention else [])
    cols += ["bf16+compile"] if args.compile else []
    print(f"| model | params | step | {' | '.join(f'{c} s' for c in cols)} | fp32 / bf16 |")
    print("|" + " --- |" * (4 + len(cols)))
    for spec in args.models.split(","):
        dim, depth = (int(v) for v in spec.split("x"))
        for kind in args.kinds.split(","):
            bb = build(dim, depth, max(1, dim // 32))
            n = sum(p.numel() for p in bb.parameters()) / 1e6
            step = make_steps(bb, kind)
            modes = [(False, True), (True, True)] + ([(True, False)] if args.attention else [])
            times = seconds(step, bb, modes, args.repeats)
            if args.compile:
                bb.transformer.compile()
                times += seconds(step, bb, [(True, True)], args.repeats)
            row = " | ".join(f"{s:.3f}" for s in times)
            print(f"| {dim} x {depth} | {n:.1f} M | {kind} | {row} | {times[0] / times[1]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
