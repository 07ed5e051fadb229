"""setseq's GPU benchmark (2026-12-01): Wan-sized transformers with random weights, one process.

    benchmarks/gpu.sh                  # one H100 / H200: about 5 minutes; gpu-bench.json + gpu-bench.md
    benchmarks/gpu.sh --cpu-small      # the same measurements, reduced, on the CPU (a few minutes on 2 cores)

Three parts, each a table:
1. Steps: a Wan2.1-T2V-1.3B-sized transformer (`WAN_1_3B`, 1.42 B parameters) in bf16 with rank-32
   adapters on Wan's default targets, at 320x576x49 and 480x832x81, without and with gradient
   checkpointing: seconds per step, peak memory, MFU.
2. setseq against PEFT: the same base weights twice in one process, one copy with setseq's adapter
   (`lora.inject`), the other with PEFT's LoRA (`peft.inject_adapter_in_model`), same rank, targets,
   dtype, geometry and step; timed in alternating rounds (A B, B A, ...), so that whatever else
   loads the machine loads both. The figure is setseq's time over PEFT's, per round: median and range.
3. 14B memory: a Wan2.1-T2V-14B-sized transformer (14.29 B parameters, one expert of Wan 2.2
   T2V-A14B) at 480x832x81, checkpointed, with its base in float8 (`--fp8-base`), all 40 blocks in
   CPU memory and their inputs too (`--offload-activations`), then N = 40, 20, 0 of its 40 blocks
   in CPU memory (`--blocks-to-swap N`), then in plain bf16: peak GPU memory and time of a training
   step, beside `setseq.plan`'s estimate of the peak for the same settings (plan vs measured).

A step is what the trainer does per micro-batch on the transformer: noise, forward, velocity loss,
backward into the adapters, AdamW. The VAE and the text encoder are not run (the trainer caches their
outputs); the text is 512 random embeddings, as Wan pads prompts to. FLOPs are counted by torch's
FlopCounterMode over one step (attention and recomputation included); MFU is them per second over
the rate of a large bf16 matmul measured on the same GPU (and over the GPU's dense bf16 datasheet
figure where known). Peak memory is `torch.cuda.max_memory_allocated` over the timed steps (tensors
only: the CUDA context and the allocator's cache come on top; `reserved` is the cache's peak).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from setseq import flow, lora, memory, plan
from setseq.backbones.base import Geometry
from setseq.backbones.wan import WAN_1_3B, WanBackbone

TARGETS = WanBackbone.lora_targets
# the same modules as a regular expression, for PEFT (which matches the whole module name)
PEFT_TARGETS = r"blocks\.\d+\.(attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)|blocks\.\d+\.ffn\.net\.(0\.proj|2)"
# Wan2.1-T2V-14B's transformer (the diffusers config of Wan-AI/Wan2.1-T2V-14B-Diffusers)
WAN_14B = dict(WAN_1_3B, num_attention_heads=40, ffn_dim=13824, num_layers=40)
DENSE_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # datasheet dense bf16 FLOP/s (SXM)


@dataclass
class Setup:
    """What one run measures: the model configs, geometries (HxWxF) and step counts."""

    device: torch.device
    dtype: torch.dtype
    model: dict
    big: dict
    geometries: list[str]
    big_geometry: str
    big_runs: list[tuple[bool, int, bool]]  # (--fp8-base, --blocks-to-swap N, --offload-activations) per row
    rank: int = 32
    text_len: int = 512
    warmup: int = 2
    steps: int = 5
    rounds: int = 6
    round_steps: int = 2
    threads: int | None = None  # CPU: torch threads


def gpu_setup() -> Setup:
    return Setup(
        torch.device("cuda"),
        torch.bfloat16,
        WAN_1_3B,
        WAN_14B,
        ["320x576x49", "480x832x81"],
        "480x832x81",
        # the 24 GB case first (rows are saved as they come): what `setseq train --dry-run --vram 24` names
        [(True, 40, True), (True, 40, False), (True, 20, False), (True, 0, False), (False, 0, False)],
    )


def cpu_small_setup() -> Setup:
    """A Wan of width 256 (4 heads of 64), 4 blocks, text width 256, 64 text tokens, at two small
    clips; the 'big' model has 8 blocks, 4 of them swapped. float32: the CPU's fast dtype. One torch
    thread, timed in CPU seconds of the process: on a CPU shared with other jobs, wall time mostly
    measures the other jobs, and two threads would spin while the other waits for a core."""
    small = dict(WAN_1_3B, num_attention_heads=4, attention_head_dim=64, ffn_dim=1024, num_layers=4, text_dim=256)
    return Setup(
        torch.device("cpu"),
        torch.float32,
        small,
        dict(small, num_layers=8),
        ["64x112x9", "96x160x17"],
        "96x160x17",
        [(True, 4, True), (True, 4, False), (True, 0, False), (False, 0, False)],
        text_len=64,
        warmup=1,
        steps=3,
        rounds=7,
        round_steps=2,
        threads=1,
    )


# --------------------------------------------------------------------------------------------
# Models, inputs and one step
# --------------------------------------------------------------------------------------------


def latent_shape(geometry: str) -> tuple[int, int, int, int]:
    """HxWxF -> Wan's latents (16, (F - 1) / 4 + 1, H / 8, W / 8)."""
    height, width, frames = (int(v) for v in geometry.split("x"))
    return (16, (frames - 1) // 4 + 1, height // 8, width // 8)


def tokens(geometry: str) -> int:
    _, f, h, w = latent_shape(geometry)
    return f * (h // 2) * (w // 2)  # Wan's 1x2x2 patches


def build(cfg: dict, s: Setup, seed: int = 0) -> torch.nn.Module:
    """A frozen WanTransformer3DModel with random weights, made on the device in the run's dtype."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(s.dtype)  # made in bf16 on the GPU: a 14B model never exists in float32
    try:
        with s.device:
            model = WanTransformer3DModel(**cfg)
    finally:
        torch.set_default_dtype(default)
    for name, module in model.named_modules():  # as from_pretrained(torch_dtype=...) keeps them
        if any(k in name.split(".") for k in model._keep_in_fp32_modules):
            module.float()
    return model.requires_grad_(False).train()


def setseq_adapters(model: torch.nn.Module, rank: int) -> list[torch.nn.Parameter]:
    """Stage 1's trainable tensors: the basis A and identity coefficients B_id of every target."""
    layers = lora.inject(model, TARGETS, rank)
    params = [p for layer in layers.values() for p in (layer.basis, layer.identity)]
    return [p.requires_grad_(True) for p in params]


def peft_adapters(model: torch.nn.Module, rank: int, dtype: torch.dtype) -> list[torch.nn.Parameter]:
    """PEFT's LoRA on the same modules, scale alpha / r = 1 as setseq's, its weights in the base's
    dtype: both compute in that dtype (setseq keeps float32 adapter tensors and casts them to it in
    each forward; PEFT's `get_peft_model` would keep float32 weights and cast the input up instead)."""
    from peft import LoraConfig, inject_adapter_in_model

    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=PEFT_TARGETS), model)
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    for p in params:
        p.data = p.data.to(dtype)
    return [p.requires_grad_(True) for p in params]


def inputs(cfg: dict, s: Setup, geometry: str, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(s.device).manual_seed(seed)
    x0 = torch.randn(1, *latent_shape(geometry), generator=g, device=s.device, dtype=s.dtype)  # (B, C, F', h, w)
    text = torch.randn(1, s.text_len, cfg["text_dim"], generator=g, device=s.device, dtype=s.dtype)  # (B, T, D)
    return x0, text


def make_step(model, params, x0, text):
    """One training step as the trainer makes it (flow-matching velocity loss, AdamW)."""
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step() -> torch.Tensor:
        noise = torch.randn_like(x0)
        t = flow.sample_timesteps(len(x0), device=x0.device)
        x_t = flow.interpolate(x0, noise, t)
        v = model(hidden_states=x_t, timestep=1000 * t, encoder_hidden_states=text, return_dict=False)[0]
        loss = flow.loss_per_sample(v.float(), flow.target_velocity(x0, noise).float()).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device) -> float:
    """Wall time on a GPU (after a sync); the process's CPU time on the CPU (see cpu_small_setup)."""
    return time.perf_counter() if device.type == "cuda" else time.process_time()


def seconds_per_step(step, n: int, device: torch.device) -> float:
    sync(device)
    start = clock(device)
    for _ in range(n):
        step()
    sync(device)
    return (clock(device) - start) / n


def matmul_rate(s: Setup) -> float:
    """FLOP/s of a large square matmul in the run's dtype: MFU's yardstick."""
    n = 8192 if s.device.type == "cuda" else 1024
    a = torch.randn(n, n, device=s.device, dtype=s.dtype)
    a @ a
    return 2 * n**3 / seconds_per_step(lambda: a @ a, 10, s.device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peaks(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"peak_gib": None, "reserved_gib": None}  # a CPU process's peak RSS says nothing per part
    return {
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30,
        "reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30,
    }


def out_of_memory(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


# --------------------------------------------------------------------------------------------
# The three parts
# --------------------------------------------------------------------------------------------


def step_rows(s: Setup, rate: float, rows: list[dict], save) -> None:
    """Seconds per step, peak memory and MFU per geometry, without and with checkpointing."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build(s.model, s)
    params = setseq_adapters(model, s.rank)
    for geometry in s.geometries:
        for checkpointing in (False, True):
            row = {"geometry": geometry, "tokens": tokens(geometry), "checkpointing": checkpointing}
            model.enable_gradient_checkpointing() if checkpointing else model.disable_gradient_checkpointing()
            free(s.device)
            try:
                step = make_step(model, params, *inputs(s.model, s, geometry))
                with FlopCounterMode(display=False) as counter:
                    step()
                for _ in range(s.warmup):
                    step()
                free(s.device)
                row["seconds"] = seconds_per_step(step, s.steps, s.device)
                row["flops"] = counter.get_total_flops()
                row["mfu"] = row["flops"] / row["seconds"] / rate
                row.update(peaks(s.device))
            except RuntimeError as e:
                if not out_of_memory(e):
                    raise
                row["oom"] = True
            step = None
            for p in params:
                p.grad = None
            rows.append(row)
            save(row)
    del model, params
    free(s.device)


def peft_rows(s: Setup, rows: list[dict], save) -> None:
    """setseq's step time over PEFT's on the same base, per geometry, in alternating rounds."""
    base = build(s.model, s)
    base.enable_gradient_checkpointing()
    ours, theirs = base, copy.deepcopy(base)
    ours_params, their_params = setseq_adapters(ours, s.rank), peft_adapters(theirs, s.rank, s.dtype)
    for i, geometry in enumerate(s.geometries):
        x0, text = inputs(s.model, s, geometry)
        if i == 0:  # the same model: before training, with zero bases, both give the base's velocity
            with torch.no_grad():
                t = torch.full((1,), 500.0, device=s.device)
                a, b = (m(hidden_states=x0, timestep=t, encoder_hidden_states=text)[0] for m in (ours, theirs))
            same = (a.float() - b.float()).abs().max().item()
            print(f"  setseq and PEFT models before training: largest difference {same:g}", flush=True)
        steps = {"setseq": make_step(ours, ours_params, x0, text), "peft": make_step(theirs, their_params, x0, text)}
        free(s.device)
        try:
            for step in steps.values():
                for _ in range(s.warmup):
                    step()
            times = {"setseq": [], "peft": []}
            for r in range(s.rounds):
                for name in ("setseq", "peft") if r % 2 == 0 else ("peft", "setseq"):
                    times[name].append(seconds_per_step(steps[name], s.round_steps, s.device))
            ratios = [a / b for a, b in zip(times["setseq"], times["peft"])]
            row = {
                "geometry": geometry,
                "checkpointing": True,
                "start_difference": same,
                "setseq_seconds": statistics.median(times["setseq"]),
                "peft_seconds": statistics.median(times["peft"]),
                "ratio_median": statistics.median(ratios),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "ratios": ratios,
            }
        except RuntimeError as e:
            if not out_of_memory(e):
                raise
            row = {"geometry": geometry, "oom": True}
        steps = None
        rows.append(row)
        save(row)
    del base, ours, theirs, ours_params, their_params
    free(s.device)


def planned(s: Setup, fp8: bool, swap: int, offload: bool) -> float:
    """`setseq.plan`'s estimate of this step's peak in GiB, less the CUDA context it assumes (which
    `max_memory_allocated` leaves out): stage 1's adapters only, as `setseq_adapters` makes them."""
    height, width, frames = (int(v) for v in s.big_geometry.split("x"))
    model = plan.transformer_model(s.big)
    settings = plan.Settings(
        dtype_bytes=torch.finfo(s.dtype).bits // 8,
        rank=s.rank,
        concepts=0,
        stages=("identity",),
        fp8_base=fp8,
        blocks_to_swap=swap,
        offload_activations=offload,
    )
    e = plan.estimate(model, Geometry(frames, height, width, 16.0), settings)
    return e.total / plan.GIB - plan.OVERHEAD_GIB


def big_rows(s: Setup, rows: list[dict], save) -> None:
    """The big model's checkpointed step with its base in float8 or not and N blocks swapped:
    weights kept on the device, seconds per step, peak memory."""
    for fp8, swap, offload in s.big_runs:
        free(s.device)
        row = {"geometry": s.big_geometry, "fp8_base": fp8, "blocks_to_swap": swap, "offload_activations": offload}
        row["plan_gib"] = planned(s, fp8, swap, offload)
        model = build(s.big, s)
        # the blocks that stay on the device are checkpointed too
        model.enable_gradient_checkpointing(memory.offloaded_checkpoint if offload else None)
        memory.place(model, s.device, fp8_base=fp8, blocks_to_swap=swap)
        params = setseq_adapters(model, s.rank)
        swapped = {
            id(t) for b in model.blocks if hasattr(b, "setseq_swap_copies") for t in (*b.parameters(), *b.buffers())
        }
        kept = [t for t in (*model.parameters(), *model.buffers(), *params) if id(t) not in swapped]
        row["kept_gib"] = sum(t.numel() * t.element_size() for t in {id(t): t for t in kept}.values()) / 2**30
        free(s.device)
        try:
            step = make_step(model, params, *inputs(s.big, s, s.big_geometry))
            step()  # the first step also makes the optimiser's state
            row["seconds"] = seconds_per_step(step, 1, s.device)
            row.update(peaks(s.device))
        except RuntimeError as e:
            if not out_of_memory(e):
                raise
            row["oom"] = True
        step = None
        del model, params
        rows.append(row)
        save(row)
    free(s.device)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def fmt(v, spec: str = ".2f", none: str = "n/a") -> str:
    return none if v is None else format(v, spec)


def markdown(result: dict) -> str:
    """The three tables, under a line naming the machine."""
    m, cfg = result["machine"], result["config"]
    sheet = f", {m['datasheet_tflops']:.0f} on the datasheet" if m.get("datasheet_tflops") else ""
    lines = [
        f"Machine: {m['device']}; torch {m['torch']}, diffusers {m['diffusers']}, peft {m['peft']}; {m['dtype']}; "
        f"matmul rate {m['matmul_tflops']:.3g} TFLOP/s measured{sheet}; times are {m['clock']}; "
        f"{result['seconds']:.0f} s of wall time in all.",
        "",
        f"Steps ({cfg['model']}, rank {cfg['rank']}, batch 1, {cfg['text_len']} text tokens):",
        "",
        "| geometry | tokens | checkpointing | s/step | TFLOP/step | MFU | peak GiB (reserved) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["steps"]:
        head = f"| {r['geometry']} | {r['tokens']:,} | {'yes' if r['checkpointing'] else 'no'} |"
        if r.get("oom"):
            lines.append(f"{head} out of memory | | | |")
            continue
        lines.append(
            f"{head} {r['seconds']:.3f} | {r['flops'] / 1e12:.3g} | {r['mfu']:.1%} | "
            f"{fmt(r['peak_gib'])} ({fmt(r['reserved_gib'])}) |"
        )
    lines += [
        "",
        f"setseq against PEFT (same base weights, rank, targets and compute dtype; checkpointing; {cfg['rounds']} "
        f"alternating rounds of {cfg['round_steps']} steps):",
        "",
        "| geometry | setseq s/step | PEFT s/step | setseq / PEFT: median (range) |",
        "|---|---|---|---|",
    ]
    for r in result["peft"]:
        if r.get("oom"):
            lines.append(f"| {r['geometry']} | out of memory | | |")
            continue
        lines.append(
            f"| {r['geometry']} | {r['setseq_seconds']:.3f} | {r['peft_seconds']:.3f} | "
            f"**{r['ratio_median']:.3f}** ({r['ratio_min']:.3f} - {r['ratio_max']:.3f}) |"
        )
    lines += [
        "",
        f"{cfg['big']}, checkpointed, rank {cfg['rank']}:",
        "",
        "| geometry | base | --blocks-to-swap | --offload-activations | weights kept on the device, GiB | s/step "
        "| peak GiB (reserved) | plan's estimate, GiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["big"]:
        cells = (
            "out of memory | |"
            if r.get("oom")
            else f"{r['seconds']:.2f} | {fmt(r['peak_gib'])} ({fmt(r['reserved_gib'])}) |"
        )
        base = "float8" if r["fp8_base"] else m["dtype"]
        offload = "yes" if r.get("offload_activations") else "no"
        lines.append(
            f"| {r['geometry']} | {base} | {r['blocks_to_swap']} | {offload} | {r['kept_gib']:.3g} | {cells} "
            f"{fmt(r.get('plan_gib'))} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu-small", action="store_true", help="a reduced configuration on the CPU")
    p.add_argument("--out", help="output prefix: writes OUT.json and OUT.md (default gpu-bench or gpu-bench-cpu-small)")
    p.add_argument("--parts", default="steps,peft,big", help="which parts to run (default: steps,peft,big)")
    p.add_argument("--rounds", type=int, help="alternating setseq / PEFT rounds (default 6 on a GPU, 7 on the CPU)")
    p.add_argument(
        "--swap", help="comma-separated --blocks-to-swap values of the float8 big-model rows (default 40,20,0)"
    )
    a = p.parse_args(argv)
    s = cpu_small_setup() if a.cpu_small else gpu_setup()
    if s.device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA GPU is visible to torch; run with --cpu-small for the reduced CPU configuration")
    s.rounds = a.rounds or s.rounds
    if a.swap:
        s.big_runs = [(True, int(v), False) for v in a.swap.split(",")] + [(False, 0, False)]
    if s.threads:
        torch.set_num_threads(s.threads)
    out = Path(a.out or ("gpu-bench-cpu-small" if a.cpu_small else "gpu-bench"))
    import diffusers
    import peft

    start = time.perf_counter()
    rate = matmul_rate(s)
    cuda = s.device.type == "cuda"
    name = torch.cuda.get_device_name(s.device) if cuda else f"CPU ({platform.processor() or platform.machine()})"
    sheet = next((v for k, v in DENSE_BF16.items() if k in name), None) if cuda else None
    small = f"Wan-like, width {s.model['num_attention_heads'] * s.model['attention_head_dim']}"
    result = {
        "machine": {
            "device": f"{name}, {torch.get_num_threads()} CPU threads",
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "peft": peft.__version__,
            "dtype": str(s.dtype).removeprefix("torch."),
            "clock": "wall time" if cuda else "CPU time of the process",
            "matmul_tflops": rate / 1e12,
            "datasheet_tflops": sheet / 1e12 if sheet else None,
        },
        "config": {
            "model": f"{small}, {s.model['num_layers']} blocks" if a.cpu_small else "Wan-1.3B-sized transformer",
            "big": f"{small}, {s.big['num_layers']} blocks" if a.cpu_small else "Wan-14B-sized transformer",
            "rank": s.rank,
            "text_len": s.text_len,
            "rounds": s.rounds,
            "round_steps": s.round_steps,
            "model_config": s.model,
            "big_config": s.big,
        },
        "steps": [],
        "peft": [],
        "big": [],
    }
    print(result["machine"], flush=True)

    def save(row: dict | None = None) -> None:
        """Both files after every row, so that a run cut short keeps what it measured."""
        result["seconds"] = time.perf_counter() - start
        for r in result["steps"]:
            if sheet and "mfu" in r:
                r["mfu_datasheet"] = r["flops"] / r["seconds"] / sheet
        out.with_suffix(".json").write_text(json.dumps(result, indent=1))
        out.with_suffix(".md").write_text(markdown(result))
        if row is not None:
            print(f"  {row}", flush=True)

    parts = a.parts.split(",")
    for part, run in (
        ("steps", lambda: step_rows(s, rate, result["steps"], save)),
        ("peft", lambda: peft_rows(s, result["peft"], save)),
        ("big", lambda: big_rows(s, result["big"], save)),
    ):
        if part in parts:
            run()
    save()
    print(markdown(result))
    for r in result["peft"]:
        if "ratio_median" in r:
            print(
                f"setseq / PEFT step time at {r['geometry']}: {r['ratio_median']:.3f} (range {r['ratio_min']:.3f} - {r['ratio_max']:.3f})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
