"""Pretraining plans: a whole curriculum of `toylab.pretrain` recipes as one resumable command
(`setseq toy pretrain --plan NAME --out DIR`), each phase in DIR/<i>-<phase>/ from the weights of the
one before, the last phase's weights written as DIR/<model>.safetensors in bf16, the file to ship.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from setseq.backbones.toy import load_file_weights, save_weights
from setseq.errors import SetseqError
from setseq.toylab import pretrain as trainer
from setseq.toylab.pretrain import (
    CAMERA_CONSOLIDATION,
    CAMERA_FOCUS,
    CONSOLIDATION,
    CONTINUATION,
    MOTION_FOCUS,
    PretrainConfig,
)

# Base v2 (2026-12-07): 11.7 M parameters (width 256, 8 blocks of 8 heads, 4.3 x the 2.7 M v1):
# under bf16 autocast a pretraining step costs 2.4 x v1's and a stage-2 LoRA step 2.6 x (384 wide:
# 3.6 x and 3.4 x; docs/benchmarks.md), the demo's time being the limit. The frozen word table
# from the start (v1 learned its table and "left" and "right" drifted together), then v1's
# curriculum phase by phase with the learning rates scaled down for the width.
V2_ARCH = {"dim": 256, "depth": 8, "heads": 8, "frozen_words": True}
PLANS: dict[str, list[tuple[str, dict]]] = {
    "v2": [
        ("base", {**V2_ARCH, "steps": 3000, "lr": 6e-4}),
        ("continuation", {**V2_ARCH, **CONTINUATION, "lr": 3e-4}),
        ("motion-focus", {**V2_ARCH, **MOTION_FOCUS, "lr": 5e-4}),
        ("consolidation", {**V2_ARCH, **CONSOLIDATION, "lr": 3e-4}),
        ("camera-focus", {**V2_ARCH, **CAMERA_FOCUS, "lr": 5e-4}),
        ("camera-consolidation", {**V2_ARCH, **CAMERA_CONSOLIDATION, "lr": 3e-4}),
    ],
}


def plan_phases(name: str, out_dir: str | Path, model: str = "toy") -> list[tuple[Path, PretrainConfig]]:
    """The phases of plan `name`: (folder, config) each, every phase starting from the weights
    the one before it writes (`--init`).

    Raises:
        SetseqError: for an unknown plan.
    """
    if name not in PLANS:
        raise SetseqError(f"unknown pretraining plan {name!r}; choose one of {', '.join(PLANS)}.")
    out_dir, phases, init = Path(out_dir), [], None
    for i, (phase, overrides) in enumerate(PLANS[name]):
        folder = out_dir / f"{i}-{phase}"
        phases.append((folder, PretrainConfig(model=model, **{**overrides, "init": init})))
        init = str(folder / f"{model}.safetensors")
    return phases


def pretrain_plan(name: str, out_dir: str | Path, model: str = "toy", **kwargs) -> Path:
    """Run plan `name` into `out_dir/<i>-<phase>/`, resuming wherever it stopped: finished phases
    (their weights file written) are kept, the running one goes on from its checkpoint. Stop it
    at any time and run the same call again. kwargs go to `toylab.pretrain.pretrain` (threads,
    device, workers, compile).

    Returns `out_dir/<model>.safetensors`: the last phase's weights stored in bf16, the file to ship.
    """
    weights = None
    for folder, cfg in plan_phases(name, out_dir, model):
        weights = folder / f"{model}.safetensors"
        if not weights.is_file():
            trainer.pretrain(folder, cfg, resume=True, **kwargs)
    bb = load_file_weights(weights, model)
    with safe_open(str(weights), "pt") as f:
        info = json.loads((f.metadata() or {}).get("info", "{}"))
    shipped = Path(out_dir) / f"{model}.safetensors"
    save_weights(bb, shipped, {**info, "plan": name}, dtype=torch.bfloat16)
    return shipped
