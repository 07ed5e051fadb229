"""`setseq demo`: the whole method on the embedded base, end to end, with a report to look at.

1. learn an example concept (stage 1 on its frames, stage 2 on its clip);
2. generate its reconstruction, edits by prompt (background, camera) and a restyle by
   reweighting the identity basis, and the base model's output for the same prompts;
3. read every output back with the toy world's checker and write metrics.json and report.html.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from setseq import concept as concept_io
from setseq import data, lora
from setseq.backbones import load_backbone
from setseq.config import preset
from setseq.errors import SetseqError
from setseq.fileio import atomic_path
from setseq.generate import generate
from setseq.log import note
from setseq.report import loss_svg, table, video_cell, write_report
from setseq.toy import checker, world
from setseq.toy.examples import example_path
from setseq.train import ConceptSpec, Trainer


@dataclass
class DemoPlan:
    stage1_steps: int
    stage2_steps: int
    batch_size: int
    prior_videos: int
    prior_steps: int
    sample_steps: int


FULL = DemoPlan(stage1_steps=600, stage2_steps=900, batch_size=8, prior_videos=8, prior_steps=20, sample_steps=25)
QUICK = DemoPlan(stage1_steps=40, stage2_steps=60, batch_size=4, prior_videos=4, prior_steps=10, sample_steps=15)


def strip_tokens(prompt: str) -> str:
    """The same prompt without the concept: drop "[v]" and "in [u] motion"."""
    prompt = re.sub(r"\s*in \[u\d*\] motion", "", prompt)
    return re.sub(r"\s*\[[uv]\d*\]", "", prompt)


def _edit_background(scene: world.Scene) -> str:
    used = {scene.background, scene.background2, scene.color, scene.color2, scene.color3}
    return next(c for c in ("green", "yellow", "white", "black", "red") if c not in used)


def run_demo(out: str | Path, concept: str = "sprite", quick: bool = False, base: str = "toy",
             seed: int = 0, progress: bool = True) -> dict:
    """Run the demo into folder `out`; returns the metrics it writes to metrics.json."""
    if concept not in world.CONCEPTS:
        raise SetseqError(f"unknown example concept {concept!r}; choose one of {', '.join(world.CONCEPTS)}.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = QUICK if quick else FULL
    t0 = time.time()
    bb = load_backbone(base)
    g = bb.geometry
    source = example_path(concept)
    video = data.load_video(source, fps=g.fps, size=(g.height, g.width), min_frames=g.frames)
    static, motion = data.read_prompt_file(source)
    scene = world.concept_scene(concept)

    # 1. learn the concept
    cfg = preset("setseq")
    cfg.seed = seed
    cfg.stages[0].steps, cfg.stages[1].steps = plan.stage1_steps, plan.stage2_steps
    cfg.optim.batch_size = plan.batch_size
    cfg.reg.prior_videos, cfg.reg.prior_steps = plan.prior_videos, plan.prior_steps
    cfg.checkpoint_every = 100
    concept_file = out / f"{concept}.safetensors"
    note(f"learning the example concept '{concept}' from {source.name}: {plan.stage1_steps} + {plan.stage2_steps} steps")
    spec = ConceptSpec(concept, video.frames[: g.frames], static, motion, source=str(source))
    Trainer(bb, [spec], cfg, concept_file, progress=progress).run()
    t_train = time.time() - t0

    # 2. generate: (name, prompt, identity scale, expected attributes)
    new_bg = _edit_background(scene)
    recon = f"{static} {motion}"
    runs = [
        ("reconstruction", recon, 1.0, {"background": scene.background}),
        (f"background: {new_bg}", recon.replace(f"{scene.background} background", f"{new_bg} background")
         .replace(f"{scene.background} to", f"{new_bg} to"), 1.0, {"background": new_bg}),
        ("camera: pans left", recon.removesuffix(".") + ", as the camera pans left.", 1.0, {"camera": "pan-left"}),
        ("restyle: identity x0.5", recon, 0.5, {"background": scene.background}),
    ]
    reference = video.frames[: g.frames]
    ref_found = checker.check(reference)
    base_bb = load_backbone(base)
    rows, cells_concept, cells_base = [], [], []
    data.write_video(out / "reference.mp4", reference, g.fps, scale=8)
    for i, (name, prompt, id_scale, expect) in enumerate(runs):
        lora.set_scales(bb.transformer, identity=id_scale, motion=1.0)
        for who, model, p in (("concept", bb, prompt), ("base", base_bb, strip_tokens(prompt))):
            clip = generate(model, [p], steps=plan.sample_steps, seed=seed)[0]
            file = f"{i}-{who}.mp4"
            data.write_video(out / file, clip, g.fps, scale=8)
            found = checker.check(clip)
            row = {"output": name, "model": who, "prompt": p, "identity_scale": id_scale if who == "concept" else None,
                   "mse_to_reference": float((clip - reference).pow(2).mean()),
                   "color": found["color"], "reference_color": ref_found["color"],
                   "background": found["background"], "camera": found["camera"]}
            row["identity_kept"] = found["color"] == ref_found["color"]
            row["edit_followed"] = all(found[k] == v for k, v in expect.items())
            rows.append(row)
            (cells_concept if who == "concept" else cells_base).append(video_cell(file, name, p))
    lora.set_scales(bb.transformer, identity=1.0)

    # 3. report
    losses = concept_io.load(concept_file).meta["losses"]
    metrics = {"concept": concept, "quick": quick, "base": base, "plan": plan.__dict__,
               "train_seconds": round(t_train), "total_seconds": round(time.time() - t0),
               "outputs": rows,
               "summary": {who: {k: sum(r[k] for r in rows if r["model"] == who) / len(runs)
                                 for k in ("identity_kept", "edit_followed")} for who in ("concept", "base")}}
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=1))
    cols = ["output", "model", "identity_scale", "color", "reference_color", "identity_kept", "background",
            "camera", "edit_followed", "mse_to_reference"]
    write_report(out / "report.html", f"setseq demo: the '{concept}' concept", [
        ("The concept", video_cell("reference.mp4", "training video", recon)
         + f"<p>Static prompt: <code>{static}</code><br>Motion prompt: <code>{motion}</code></p>"),
        ("With the concept", "<div class='row'>" + "".join(cells_concept) + "</div>"),
        ("Base model, same prompts without the concept", "<div class='row'>" + "".join(cells_base) + "</div>"),
        ("Metrics (read from the pixels by the toy world's checker)", table(rows, cols)
         + f"<p>Training took {t_train:.0f} s; the whole demo {time.time() - t0:.0f} s.</p>"),
        ("Training loss", loss_svg(losses)),
    ])
    note(f"wrote {out / 'report.html'}")
    return metrics
