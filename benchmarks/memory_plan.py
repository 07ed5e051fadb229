"""The memory table of docs/memory.md: `setseq.plan`'s estimate (arithmetic, not a measurement) of a
training step's peak GPU memory for the Wan models at two geometries, with the memory flags.

    python benchmarks/memory_plan.py

Builds each model on the meta device from its diffusers configuration (the ones tests/test_plan.py
writes into config-only folders); rank 32, one concept, micro-batch 1, bf16, gradient checkpointing.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from setseq import plan
from setseq.backbones.base import Geometry

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from test_plan import FOLDERS, WAN_14B, write_folder  # noqa: E402

ROWS = [  # (label, fp8, swap, offload, optimizer)
    ("bf16", False, 0, False, "adamw"),
    ("`--fp8-base`", True, 0, False, "adamw"),
    ("`--fp8-base --blocks-to-swap N`", True, "half", False, "adamw"),
    ("`--fp8-base --blocks-to-swap N`", True, "all", False, "adamw"),
    ("`--fp8-base --offload-activations`", True, 0, True, "adamw"),
    ("`--fp8-base --offload-activations --blocks-to-swap N`", True, "all", True, "adamw"),
    ("... and `--optimizer adamw8bit`", True, "all", True, "adamw8bit"),
]


def cell(model: plan.Model, g: Geometry, s: plan.Settings) -> str:
    gib = plan.estimate(model, g, s).total / plan.GIB
    cards = [c for c in (24, 48, 80) if gib <= plan.HEADROOM * c]
    return f"{gib:.1f}: {cards[0]} GB" if cards else f"{gib:.0f}: more than 80 GB"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folders = {name: plan.read_model(write_folder(Path(tmp) / name, name)) for name in FOLDERS}
    small = folders["wan2.1-1.3b"]  # Wan 2.1 14B has the same text encoder and VAE
    big = plan.transformer_model(WAN_14B, name="Wan 2.1 T2V-14B")
    big = replace(big, text_encoder=small.text_encoder, vae=small.vae)
    models = {"wan2.1-1.3b": small, "wan2.1-14b": big, **folders}
    geometries = {
        "wan2.1-1.3b": [Geometry(49, 320, 576, 16.0), Geometry(81, 480, 832, 16.0)],
        "wan2.1-14b": [Geometry(49, 320, 576, 16.0), Geometry(81, 480, 832, 16.0)],
        "wan2.2-a14b": [Geometry(49, 320, 576, 16.0), Geometry(81, 480, 832, 16.0)],
        "wan2.2-ti2v-5b": [Geometry(49, 384, 640, 24.0), Geometry(121, 704, 1280, 24.0)],
    }
    for name, model in models.items():
        gs = geometries[name]
        heads = " | ".join(f"{g.height}x{g.width}x{g.frames} ({plan.tokens(model, g):,} tokens)" for g in gs)
        print(f"\n{model.name}: {model.experts * model.blocks} blocks\n\n| flags | {heads} |\n|---|---|---|")
        n = model.experts * model.blocks
        for label, fp8, swap, offload, opt in ROWS:
            blocks = {"half": n // 2, "all": n}.get(swap, swap)
            s = plan.Settings(rank=32, fp8_base=fp8, blocks_to_swap=blocks, offload_activations=offload, optimizer=opt)
            shown = label.replace(" N`", f" {blocks}`")
            print(f"| {shown} | " + " | ".join(cell(model, g, s) for g in gs) + " |")
        e = plan.estimate(model, gs[-1], plan.Settings(rank=32, keep_encoders=True))
        print(
            f"\n`--keep-encoders` adds {e.encoders / plan.GIB:.1f} GiB (text encoder "
            f"{model.text_encoder * 2 / plan.GIB:.1f} GiB in bf16, VAE {model.vae * 4 / plan.GIB:.1f} GiB in float32)"
        )


if __name__ == "__main__":
    main()
