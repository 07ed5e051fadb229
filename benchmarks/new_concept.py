"""A concept that none of the shipped examples contains, learned, edited and scored on the toy base.

    python benchmarks/new_concept.py --out runs/new-concept            # the demo's full toy preset
    python benchmarks/new_concept.py --out runs/new-concept --quick    # the demo's smoke-run steps
    python benchmarks/new_concept.py --out runs/new-concept-v2 --base toy-v2   # toy-v2 and its demo plan

The clip is drawn here, by this script's own code, not by the toy world's renderer: a square split
into a yellow and a cyan half (colours no example uses together) on a red background, running once
round a triangle (a path no world motion draws) over faint stripes of its own, 8 frames at 64 x 64 like the examples. It is
written as a video with its caption file and mask, loaded the way `setseq train` loads a user's
clip, learned with the demo's plan of the toy preset, then generated: its reconstruction, a green
background and a pan to the left. Each output is scored against the training clip with the
demo's measures (identity, motion, edit followed, patch grid) and with this script's own path
score: the correlation of the object's centroid path with the drawn one (1 = the same path; on
the pan, the path relative to the background is not comparable and is left out).

SETSEQ_TOY_WEIGHTS picks another toy base (e.g. a `setseq toy pretrain` output). Writes
OUT/metrics.json and OUT/frames.png (rows: training clip, reconstruction, green, pan).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from setseq import demo
from setseq.backbones import PRETRAINED_TOYS, load_backbone
from setseq.generate import generate
from setseq.report import frame_strip
from setseq.specs import ConceptSource, concept_specs
from setseq.toy.world import PALETTE
from setseq.train import Trainer
from setseq.video import write_video

FRAMES, SIZE, FPS = 8, 64, 8.0
BACKGROUND, TOP, BOTTOM = "red", "yellow", "cyan"
CORNERS = np.array([[0.28, 0.70], [0.72, 0.70], [0.50, 0.28]])  # (x, y) in frame units, y down
HALF = 0.09  # half the square's side, frame units
STRIPE_MIX = 0.2
STATIC, MOTION = "a [v] square on a red background.", "it moves in [u] motion."


def path(t: np.ndarray) -> np.ndarray:
    """The square's centre (len(t), 2) at clip times t in [0, 1): once round the triangle at an even pace."""
    legs = np.diff(np.vstack([CORNERS, CORNERS[:1]]), axis=0)
    share = np.cumsum(np.r_[0.0, np.linalg.norm(legs, axis=1)])
    share /= share[-1]
    leg = np.clip(np.searchsorted(share, t, side="right") - 1, 0, 2)
    frac = (t - share[leg]) / (share[leg + 1] - share[leg])
    return CORNERS[leg] + frac[:, None] * legs[leg]


def draw(frames: int = FRAMES, size: int = SIZE, supersample: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """The clip (F, 3, H, W) in [-1, 1] and the square's mask (F, H, W) bool, anti-aliased by supersampling."""
    n = size * supersample
    grid = (np.arange(n) + 0.5) / n
    gx, gy = np.meshgrid(grid, grid)
    centres = path(np.arange(frames) / frames)
    video, masks = [], []
    for cx, cy in centres:
        inside = (np.abs(gx - cx) <= HALF) & (np.abs(gy - cy) <= HALF)
        # The background: the named colour with faint vertical stripes towards white, as the toy
        # world's backgrounds have (their drift is how the checker reads a pan), of another period.
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * gx / 0.37 + 1.0)
        base = np.asarray(PALETTE[BACKGROUND], np.float32)
        rgb = (base + STRIPE_MIX * stripes[..., None] * (1.0 - base)).astype(np.float32)
        rgb[inside & (gy < cy)] = PALETTE[TOP]
        rgb[inside & (gy >= cy)] = PALETTE[BOTTOM]
        rgb = rgb.reshape(size, supersample, size, supersample, 3).mean((1, 3))
        cover = inside.reshape(size, supersample, size, supersample).mean((1, 3))
        video.append(rgb)
        masks.append(cover >= 0.5)
    video = torch.from_numpy(np.stack(video)).permute(0, 3, 1, 2) * 2 - 1
    return video.contiguous(), torch.from_numpy(np.stack(masks))


def centroid_path(video: torch.Tensor) -> np.ndarray:
    """Per frame, the (x, y) centroid in frame units of the pixels that differ most from the frame's
    median colour (the object on a flat background); (F, 2)."""
    f, _, h, w = video.shape
    rgb = video.float()
    diff = (rgb - rgb.flatten(2).median(-1).values[..., None, None]).norm(dim=1)  # (F, H, W)
    out = []
    for d in diff:
        weight = (d >= d.flatten().quantile(0.94)).float() * d  # about the square's share of the frame
        ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
        total = weight.sum().clamp_min(1e-8)
        out.append([float((weight * xs).sum() / total), float((weight * ys).sum() / total)])
    return np.array(out)


def path_score(video: torch.Tensor, truth: np.ndarray) -> float:
    """Pearson correlation of the clip's centred centroid path with the drawn one, x and y together."""
    a = centroid_path(video)
    a, b = (a - a.mean(0)).ravel(), (truth - truth.mean(0)).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-8))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/new-concept")
    ap.add_argument("--quick", action="store_true", help="the demo's smoke-run plan")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--base", default="toy", choices=PRETRAINED_TOYS, help="the toy base; the demo's plan for it")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    video, mask = draw()
    clip_file = write_video(out / "triangle.mp4", video, FPS)
    write_video(out / "triangle.mask.mp4", mask[:, None].expand(-1, 3, -1, -1).float() * 2 - 1, FPS)
    (out / "triangle.txt").write_text(f"static: {STATIC}\nmotion: {MOTION}\n")

    bb = load_backbone(args.base)
    g = bb.geometry
    spec = concept_specs([ConceptSource(clip_file)], g)[0]
    plan = demo.demo_plan(args.base, args.quick)
    cfg = demo.demo_config(plan, args.seed)
    Trainer(bb, [spec], cfg, out / "triangle.safetensors", progress=True).run()
    t_train = time.time() - t0

    truth = path(np.arange(g.frames) / g.frames)
    recon = f"{STATIC} {MOTION}"
    runs = [
        ("reconstruction", recon, {"background": BACKGROUND}),
        ("background: green", recon.replace("red background", "green background"), {"background": "green"}),
        ("camera: pans left", f"{STATIC} {MOTION.removesuffix('.')}, as the camera pans left.", {"camera": "pan-left"}),
    ]
    rows, sheet = [], [spec.video]
    for name, prompt, expect in runs:
        clip = generate(bb, [prompt], steps=plan.sample_steps, seed=args.seed)[0]
        row = demo.score(clip, spec.video, "sprite", expect, output=name, prompt=prompt)
        if not name.startswith("camera"):
            row["path"] = path_score(clip, truth)
        rows.append(row)
        sheet.append(clip)
    frame_strip(out / "frames.png", sheet)
    metrics = {
        "base": bb.fingerprint(),
        "plan": plan.__dict__,
        "train_seconds": round(t_train),
        "total_seconds": round(time.time() - t0),
        "training_clip_path_score": path_score(spec.video, truth),
        "outputs": rows,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    print("| output | identity | coverage | motion | path | followed | grid (truth) | MSE |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        p = f"{r['path']:.2f}" if "path" in r else "-"
        print(
            f"| {r['output']} | {r['identity']:.2f} | {r['coverage']:.2f} | {r['motion']:.2f} | {p} | {r['edit_followed']:.0f} | "
            f"{r['grid']:.2f} ({r['grid_truth']:.2f}) | {r['mse_to_reference']:.4f} |"
        )
    print(
        f"training {t_train:.0f} s, all {time.time() - t0:.0f} s; training clip's own path score "
        f"{metrics['training_clip_path_score']:.2f}; wrote {out / 'frames.png'}"
    )


if __name__ == "__main__":
    main()
