"""Milliseconds to render one pretraining batch of the toy world (prints figures; no pass/fail).

    python benchmarks/pretrain_data.py [--steps 60] [--workers 0,2]

Two figures, side by side in one run:
  * a single-frame batch (128 frames), drawn as whole clips cut to one frame each, against only
    the frame that is kept (`world.render(..., only=f)`, what pretraining does);
  * the default recipe's batches (70 % of 16 clips, 30 % of 128 frames) as `setseq toy pretrain` gets
    them, with 0 or more rendering worker processes (`--workers`).
On a GPU the model's step is short, so this is what sets the pace of `setseq toy pretrain`.
"""

import argparse
import time

import numpy as np
import torch

from setseq.backbones.toy import PRESETS
from setseq.toy import world
from setseq.toylab.pretrain import Batches, PretrainConfig


def frame_batch_ms(n: int, whole: bool, g, seed: int = 0, repeats: int = 3) -> float:
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for _ in range(repeats):
        for _ in range(n):
            s, f = world.sample_scene(rng, "train"), int(rng.integers(g.frames))
            if whole:
                world.render(s, g.frames, g.height, g.width).video[f : f + 1]
            else:
                world.render(s, g.frames, g.height, g.width, only=f)
    return 1000 * (time.perf_counter() - t0) / repeats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--workers", default="0,2")
    a = ap.parse_args()
    g = PRESETS["toy"][1]
    print(
        f"single-frame batch of 128: whole clips cut {frame_batch_ms(128, True, g):.0f} ms, "
        f"one frame rendered {frame_batch_ms(128, False, g):.0f} ms"
    )
    cfg = PretrainConfig(steps=a.steps)
    for w in (int(x) for x in a.workers.split(",")):
        loader = torch.utils.data.DataLoader(
            Batches(cfg, g),
            batch_size=None,
            sampler=range(a.steps),
            num_workers=w,
            prefetch_factor=4 if w else None,
            generator=torch.Generator(),
        )
        t0 = time.perf_counter()
        n = sum(1 for _ in loader)
        print(f"default recipe, {w} workers: {1000 * (time.perf_counter() - t0) / n:.0f} ms a batch ({n} batches)")


if __name__ == "__main__":
    main()
