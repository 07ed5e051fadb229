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

import numpy as np
import torch

from setseq import concept as concept_io
from setseq import lora
from setseq.backbones import load_backbone
from setseq.config import preset
from setseq.errors import SetseqError
from setseq.fileio import atomic_path
from setseq.generate import generate
from setseq.log import note
from setseq.metrics.toy import toy_metrics
from setseq.report import frame_strip, loss_svg, strip_cell, table, video_cell, write_report
from setseq.toy import checker, world
from setseq.toylab.examples import edit_prompts, example_spec
from setseq.train import Trainer
from setseq.video import write_video


@dataclass
class DemoPlan:
    stage1_steps: int | None  # None: the training preset's
    stage2_steps: int | None
    prior_videos: int | None
    prior_steps: int | None
    sample_steps: int
    shift: float | None = None  # the flow's timestep shift in training; None: the preset's


# The full demo trains with the toy preset as it is (config.preset_toy); the quick one is a smoke run.
FULL = DemoPlan(stage1_steps=None, stage2_steps=None, prior_videos=None, prior_steps=None, sample_steps=25)
QUICK = DemoPlan(stage1_steps=30, stage2_steps=40, prior_videos=4, prior_steps=10, sample_steps=15)
# toy-v2 costs about 2.5x toy's per step, so its plan moves steps from stage 2 (the clip, 8 frames a
# sample) to stage 1 (single frames, a third of the cost) and shifts training time towards noise
# (shift 3), where the clip's path is decided: with it 100 + 250 steps already reproduced the path
# (motion 1.00) that 200 + 550 at shift 1 reached (docs/demo.md, "On toy-v2"; 2026-12-08).
FULL_V2 = DemoPlan(stage1_steps=300, stage2_steps=200, prior_videos=None, prior_steps=None, sample_steps=25, shift=3.0)
QUICK_V2 = DemoPlan(stage1_steps=40, stage2_steps=30, prior_videos=4, prior_steps=10, sample_steps=15, shift=3.0)
PLANS = {"toy-v2": (FULL_V2, QUICK_V2)}  # other bases: (FULL, QUICK)


def demo_plan(base: str, quick: bool) -> DemoPlan:
    """The demo's training and sampling plan for `base`: its own where PLANS has one, else toy's."""
    full, short = PLANS.get(base, (FULL, QUICK))
    return short if quick else full


def demo_config(plan: DemoPlan, seed: int):
    """The toy training preset with the plan's step counts and shift where it sets them."""
    cfg = preset("toy")
    cfg.seed = seed
    for stage, steps in zip(cfg.stages, (plan.stage1_steps, plan.stage2_steps)):
        stage.steps = stage.steps if steps is None else steps
    cfg.reg.prior_videos = plan.prior_videos or cfg.reg.prior_videos
    cfg.reg.prior_steps = plan.prior_steps or cfg.reg.prior_steps
    cfg.flow.shift = plan.shift or cfg.flow.shift
    cfg.checkpoint_every = 100
    return cfg


def strip_tokens(prompt: str) -> str:
    """The same prompt without the concept: drop "[v]" and "in [u] motion"."""
    prompt = re.sub(r"\s*in \[u\d*\] motion", "", prompt)
    return re.sub(r"\s*\[[uv]\d*\]", "", prompt)


def run_demo(
    out: str | Path,
    concept: str = "sprite",
    quick: bool = False,
    base: str = "toy",
    seed: int = 0,
    progress: bool = True,
    compose: bool = False,
) -> dict:
    """Run the demo into folder `out`; returns the metrics it writes to metrics.json."""
    if concept not in world.CONCEPTS:
        raise SetseqError(f"unknown example concept {concept!r}; choose one of {', '.join(world.CONCEPTS)}.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = demo_plan(base, quick)
    t0 = time.time()
    bb = load_backbone(base)
    g = bb.geometry
    spec = example_spec(concept, g)
    static, motion = spec.prompt, spec.motion_prompt
    scene = world.concept_scene(concept)

    # 1. learn the concept
    cfg = demo_config(plan, seed)
    concept_file = out / f"{concept}.safetensors"
    note(
        f"learning the example concept '{concept}' with the toy preset: "
        f"{cfg.stages[0].steps} + {cfg.stages[1].steps} steps at lr {cfg.optim.lr:g}, timestep shift {cfg.flow.shift:g}"
    )
    Trainer(bb, [spec], cfg, concept_file, progress=progress).run()
    t_train = time.time() - t0

    # 2. generate: (name, prompt, identity scale, expected attributes)
    edits = {label: (prompt, expect) for label, prompt, expect in edit_prompts(concept)}
    recon = edits["reconstruction"][0]
    background = next(label for label in edits if label.startswith("background"))
    runs = [
        ("reconstruction", recon, 1.0, {"background": scene.background}),
        (background, edits[background][0], 1.0, edits[background][1]),
        ("camera: pans left", edits["camera: pans left"][0], 1.0, edits["camera: pans left"][1]),
        ("restyle: identity x0.5", recon, 0.5, {"background": scene.background}),
    ]
    reference = spec.video
    kind = scene.kind
    base_bb = load_backbone(base)
    rows, cells_concept, cells_base, strips, sheet = [], [], [], [], [reference]
    write_video(out / "reference.mp4", reference, g.fps, scale=8)
    for i, (name, prompt, id_scale, expect) in enumerate(runs):
        pair = []
        for who, model, p in (("concept", bb, prompt), ("base", base_bb, strip_tokens(prompt))):
            with lora.scales(model.transformer, identity=id_scale, motion=1.0):  # no-op on the base
                clip = generate(model, [p], steps=plan.sample_steps, seed=seed)[0]
            file = f"{i}-{who}.mp4"
            write_video(out / file, clip, g.fps, scale=8)
            rows.append(
                score(
                    clip,
                    reference,
                    kind,
                    expect,
                    output=name,
                    model=who,
                    prompt=p,
                    identity_scale=id_scale if who == "concept" else None,
                )
            )
            (cells_concept if who == "concept" else cells_base).append(video_cell(file, name, p))
            pair.append(clip)
        frame_strip(out / f"{i}-frames.png", [reference, *pair])
        strips.append(strip_cell(f"{i}-frames.png", f"{name}: training video, with the concept, base model"))
        sheet.append(pair[0])
    # Every frame of the training video and of each output with the concept, one row each.
    frame_strip(out / "frames.png", sheet)

    # 3. restyle sweep: the identity basis reweighted from off to double
    sweep, cells_sweep = [], []
    for k, s_id in enumerate(SWEEP):
        with lora.scales(bb.transformer, identity=s_id, motion=1.0):
            clip = generate(bb, [recon], steps=plan.sample_steps, seed=seed)[0]
        write_video(out / f"sweep-{k}.mp4", clip, g.fps, scale=8)
        sweep.append(
            score(
                clip,
                reference,
                kind,
                {},
                output=f"identity x{s_id:g}",
                model="concept",
                prompt=recon,
                identity_scale=s_id,
            )
        )
        cells_sweep.append(video_cell(f"sweep-{k}.mp4", f"identity x{s_id:g}", ""))
    sections_extra = [
        (
            "Restyling: the identity scale swept",
            "<div class='row'>"
            + "".join(cells_sweep)
            + "</div>"
            + table(sweep, ["output", "identity", "motion", "mse_to_reference"]),
        )
    ]
    composition = _compose(out, base, plan, seed, progress) if compose else None
    if composition:
        sections_extra.append(composition.pop("section"))

    # 4. report
    losses = concept_io.load(concept_file).meta["losses"]
    summary = {
        who: {
            k: float(np.mean([r[k] for r in rows if r["model"] == who]))
            for k in ("identity", "motion", "edit_followed", "grid")
        }
        for who in ("concept", "base")
    }
    metrics = {
        "concept": concept,
        "quick": quick,
        "base": base,
        "plan": plan.__dict__,
        "train_seconds": round(t_train),
        "total_seconds": round(time.time() - t0),
        "outputs": rows,
        "restyle_sweep": sweep,
        "composition": composition,
        "summary": summary,
    }
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=1))
    cols = [
        "output",
        "model",
        "identity_scale",
        "identity",
        "coverage",
        "motion",
        "background",
        "camera",
        "edit_followed",
        "mse_to_reference",
        "grid",
    ]
    write_report(
        out / "report.html",
        f"setseq demo: the '{concept}' concept",
        [
            (
                "The concept",
                video_cell("reference.mp4", "training video", recon)
                + f"<p>Static prompt: <code>{static}</code><br>Motion prompt: <code>{motion}</code></p>",
            ),
            ("With the concept", "<div class='row'>" + "".join(cells_concept) + "</div>"),
            ("Base model, same prompts without the concept", "<div class='row'>" + "".join(cells_base) + "</div>"),
            ("Every frame (rows: training video, with the concept, base model)", "".join(strips)),
            (
                "Metrics (read from the pixels with the toy world's metrics)",
                table(rows, cols)
                + "<p>identity: colour make-up of the object against the training video (1 = same); motion: its "
                "trajectory or texture dynamics against the training video (1 = same); edit_followed: the "
                "requested background or camera is what the checker reads; grid: how much stronger the "
                "background's gradient is across the model's 4 x 4 patch borders than inside patches "
                f"(the training video: {rows[0]['grid_truth']:.2f}; a render scores about 1.2, a blocky sample more). "
                f"Training took {t_train:.0f} s; the whole demo {time.time() - t0:.0f} s.</p>",
            ),
            *sections_extra,
            ("Training loss", loss_svg(losses)),
        ],
    )
    note(f"wrote {out / 'report.html'}")
    return metrics


SWEEP = (0.0, 0.5, 1.0, 1.5, 2.0)


def score(clip: torch.Tensor, reference: torch.Tensor, kind: str, expect: dict, **row) -> dict:
    """One output's row of the demo's table: `row`'s fields, then the toy metrics of `clip` (F, 3, H, W)
    against `reference` (a scene of `kind`), what the checker reads, and whether it reads every
    attribute of `expect` (e.g. {"background": "green"}) as asked (edit_followed 1.0 or 0.0)."""
    m = toy_metrics(clip, reference, kind)
    found = checker.check(clip)
    return {
        **row,
        "identity": m["toy_identity"],
        "coverage": m["toy_coverage"],
        "motion": m["toy_motion"],
        "mse_to_reference": m["mse"],
        "grid": m["grid"],
        "grid_truth": m["grid_truth"],
        "background": found["background"],
        "camera": found["camera"],
        "edit_followed": float(all(found[k] == v for k, v in expect.items())),
    }


def _compose(out: Path, base: str, plan: DemoPlan, seed: int, progress: bool) -> dict:
    """Two example concepts (waves and flicker, the paper's ocean and bonfire) learned jointly with
    stitched clips, then generated together and each alone."""
    bb = load_backbone(base)
    g = bb.geometry
    specs = [example_spec(name, g, i) for i, name in enumerate(("waves", "flicker"), start=1)]
    cfg = demo_config(plan, seed)
    note("learning waves and flicker jointly (one identity basis, two motion residuals, stitched clips)")
    Trainer(bb, specs, cfg, out / "waves+flicker.safetensors", progress=progress).run()
    prompts = [("together", f"{specs[0].full_prompt} {specs[1].full_prompt}")] + [
        (s.name, s.full_prompt) for s in specs
    ]
    cells, rows = [], []
    for k, (label, prompt) in enumerate(prompts):
        clip = generate(bb, [prompt], steps=plan.sample_steps, seed=seed)[0]
        write_video(out / f"compose-{k}.mp4", clip, g.fps, scale=8)
        cells.append(video_cell(f"compose-{k}.mp4", label, prompt))
        for s in specs:  # how much each concept's look and motion each output carries
            m = toy_metrics(clip, s.video, world.concept_scene(s.name).kind)
            rows.append({"output": label, "against": s.name, "identity": m["toy_identity"], "motion": m["toy_motion"]})
    section = (
        "Composition: waves and flicker learned jointly",
        "<div class='row'>" + "".join(cells) + "</div>" + table(rows, ["output", "against", "identity", "motion"]),
    )
    return {"rows": rows, "section": section}
