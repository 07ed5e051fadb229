"""`setseq bench ablation`: the paper's Tables 1-2 reproduced on the toy world.

Every row (LoRA-1, LoRA-8, Two-Stage, Set-and-Sequence, Textual Inversion, DreamMix) learns each
example concept from its video, then generates the reconstruction and four edits; the toy world's
metrics read identity, motion, edit adherence and coherence back from the pixels. The reconstruction
-vs-editability trade-off is the paper's claim under test.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from setseq import checkpoint
from setseq.backbones import load_backbone
from setseq.config import preset, toy_scale
from setseq.errors import SetseqError
from setseq.fileio import atomic_path
from setseq.generate import generate
from setseq.metrics.toy import toy_metrics
from setseq.report import table, video_cell, write_report
from setseq.toy import world
from setseq.toylab.examples import edit_prompts, example_spec
from setseq.train import Trainer
from setseq.video import write_video


@dataclass(frozen=True)
class Row:
    label: str
    method: str
    rank: int


ROWS = [
    Row("LoRA-1", "lora", 1),
    Row("LoRA-8", "lora", 8),
    Row("Two-Stage", "two-stage", 8),
    Row("Set-and-Sequence", "setseq", 8),
    Row("Textual Inversion", "textual-inversion", 8),
    Row("DreamMix", "dreammix", 8),
]
COLUMNS = ["recon_mse", "identity", "motion", "edit", "tc"]


SCALES = ("paper", "toy")


def _check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise SetseqError(f"unknown scale {scale!r}; choose paper or toy.")


def _config(method: str, rank: int | None, scale: str):
    """A row's training config: the method's preset with the row's rank, moved to the toy base's
    scale (`config.toy_scale`: rank x 8, lr x 10, 200 + 550 or 750 steps) when scale is "toy"."""
    cfg = preset(method)
    if rank is not None:
        cfg.lora.rank = rank
    return toy_scale(cfg) if scale == "toy" else cfg


def row_label(row: Row, scale: str) -> str:
    """The row's name in the paper, with the rank it trains at when the toy scale changes it."""
    return f"{row.label} (rank {row.rank * 8})" if scale == "toy" and row.method == "lora" else row.label


def _train(row: Row, concept: str, seed: int, base: str, step_scale: float, batch: int, out: Path, scale: str):
    bb = load_backbone(base)
    spec = example_spec(concept, bb.geometry)
    cfg = _config(row.method, row.rank, scale)
    cfg.seed, cfg.optim.batch_size = seed, batch
    for s in cfg.stages:
        s.steps = max(1, round(s.steps * step_scale))
    run_job(Trainer(bb, [spec], cfg, out / f"{concept}-{row.method}-r{row.rank}-s{seed}.safetensors", progress=False))
    return bb, spec.video


def run_job(trainer: Trainer) -> None:
    """A benchmark job's training, continued from the checkpoint a stopped run of it left when that
    was made with the same settings on the same base, else afresh: a benchmark stopped inside a
    job (SIGTERM, Ctrl-C) loses at most the steps since the job's last checkpoint."""
    config, fingerprint = trainer.cfg.to_dict(), trainer.backbone.fingerprint()
    trainer.resume_hint = "run the same benchmark command again to continue"
    trainer.run(resume=checkpoint.resumable(trainer.ckpt_path, config, fingerprint))


def _kept(done: Path, settings: dict, run) -> dict:
    """A benchmark job's result, saved as JSON in `done` once it has finished: read back when it was
    saved under the same settings (a stopped run goes on where it was), else `run()` (a dict) now."""
    saved = json.loads(done.read_text()) if done.is_file() else None
    if saved is None or saved["settings"] != settings:
        saved = {"settings": settings, **run()}
        done.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(done) as tmp:
            tmp.write_text(json.dumps(saved, indent=1))
    return saved


def _ablation_job(row, concept, seed, base, step_scale, batch_size, sample_steps, edits, scale, out):
    """Train one row on one concept and seed, generate the reconstruction and edits, score them.

    Returns {"records": one per output, "cells": the outputs' video cells for the page (the mp4s
    are written to OUT/videos/), "seconds": how long it took}."""
    t0 = time.time()
    bb, reference = _train(row, concept, seed, base, step_scale, batch_size, out / "concepts", scale)
    prompts = edit_prompts(concept)[: 1 + edits]
    clips = generate(bb, [p for _, p, _ in prompts], steps=sample_steps, seed=seed)
    records, cells = [], []
    for (label, prompt, _), clip in zip(prompts, clips):
        # both clips segmented the same way (background subtraction), so an identical clip scores 1
        m = toy_metrics(clip, reference, world.concept_scene(concept).kind, prompt=prompt)
        records.append(
            {
                "row": row.label,
                "concept": concept,
                "seed": seed,
                "output": label,
                "mse": m["mse"],
                "identity": m["toy_identity"],
                "motion": m["toy_motion"],
                "edit": m.get("toy_edit"),
                "tc": m["tc_pixel"],
            }
        )
        file = f"videos/{concept}-{row.method}-r{row.rank}-s{seed}-{len(cells)}.mp4"
        write_video(out / file, clip, bb.geometry.fps, scale=6)
        cells.append(video_cell(file, label, prompt))
    return {"records": records, "cells": cells, "seconds": time.time() - t0}


def run_ablation(
    out: str | Path,
    concepts=world.CONCEPTS,
    seeds=(0, 1),
    base: str = "toy",
    step_scale: float = 0.25,
    batch_size: int = 4,
    sample_steps: int = 20,
    edits: int = 4,
    rows=ROWS,
    progress: bool = True,
    scale: str = "paper",
) -> dict:
    """Train and evaluate every row on every concept and seed; write the table, plot and page.

    Args:
        out: output folder.
        concepts, seeds: example concepts and seeds to run.
        base: base model.
        step_scale: training steps as a share of each method's steps at `scale` (paper: 1.0 = 600
            + 900 for Set-and-Sequence, 550 for the one-stage rows; toy: 200 + 550 and 750).
        batch_size: training batch.
        sample_steps: sampler steps for the evaluated videos.
        edits: how many of the four edit prompts to use.
        rows: the methods to compare.
        scale: "paper" trains each row with its paper preset; "toy" moves every row to the toy
            base's scale with `config.toy_scale` (the same change that makes the toy preset).

    Resumable: each finished (concept, seed, row) job is saved in OUT/jobs/ and reused by a later
    run into the same OUT with the same settings; a job stopped inside its training continues from
    its checkpoint (`run_job`).

    Raises:
        SetseqError: for an unknown scale.
    """
    _check_scale(scale)
    rows = [Row(row_label(r, scale), r.method, r.rank) for r in rows]
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    settings = {"base": base, "scale": scale, "step_scale": step_scale, "batch_size": batch_size,
                "sample_steps": sample_steps, "edits": edits}  # fmt: skip
    records, cells, seconds = [], {}, 0.0
    jobs = [(c, s, r) for c in concepts for s in seeds for r in rows]
    for concept, seed, row in tqdm(jobs, desc="ablation", disable=not progress):
        # Each finished job is kept in OUT/jobs/, so a run that stopped (Ctrl-C, a lost machine)
        # goes on where it was; a job done under other settings is done again.
        job = (row, concept, seed, base, step_scale, batch_size, sample_steps, edits, scale, out)
        saved = _kept(
            out / "jobs" / f"{concept}-{row.method}-r{row.rank}-s{seed}.json", settings, partial(_ablation_job, *job)
        )
        records += saved["records"]
        if seed == seeds[0]:  # the page shows the first seed's videos
            cells[(concept, row.label)] = saved["cells"]
        seconds += saved["seconds"]
    summary = summarise(records, rows)
    meta = {
        "concepts": list(concepts),
        "seeds": list(seeds),
        "base": base,
        "scale": scale,
        "step_scale": step_scale,
        "batch_size": batch_size,
        "sample_steps": sample_steps,
        "seconds": round(seconds),  # training, sampling and scoring, summed over the jobs
    }
    _write(out, records, summary, meta, cells, rows)
    return {"summary": summary, "records": records, "meta": meta}


def summarise(records: list[dict], rows=ROWS) -> dict[str, dict[str, tuple[float, float]]]:
    """Per row: (mean, std over concept x seed runs) of reconstruction MSE and, over the edits,
    identity, motion, edit adherence and temporal coherence."""
    out = {}
    for row in rows:
        mine = [r for r in records if r["row"] == row.label]
        if not mine:
            continue
        runs = sorted({(r["concept"], r["seed"]) for r in mine})

        def per_run(key, edits_only, runs=runs, mine=mine):
            vals = []
            for run in runs:
                xs = [
                    r[key]
                    for r in mine
                    if (r["concept"], r["seed"]) == run
                    and r[key] is not None
                    and (r["output"] != "reconstruction") == edits_only
                ]
                if xs:
                    vals.append(float(np.mean(xs)))
            return (float(np.mean(vals)), float(np.std(vals))) if vals else (float("nan"), float("nan"))

        out[row.label] = {
            "recon_mse": per_run("mse", False),
            "identity": per_run("identity", True),
            "motion": per_run("motion", True),
            "edit": per_run("edit", True),
            "tc": per_run("tc", True),
        }
    return out


def markdown_table(summary) -> str:
    head = "| method | MSE (recon) | identity (edits) | motion (edits) | edit adherence | TC (pixel) |\n|---|---|---|---|---|---|\n"
    body = "".join(
        f"| {label} | " + " | ".join(f"{m:.4f} ± {s:.4f}" for m, s in (v[c] for c in COLUMNS)) + " |\n"
        for label, v in summary.items()
    )
    return head + body


Y_NAMES = {"edit": "edit adherence", "identity": "identity on the edits"}  # the scatter plots' y axes


def scatter_svg(summary, score: str = "edit", width: int = 520, height: int = 360) -> str:
    """Reconstruction (MSE, lower is better) against a 0..1 score of the edits: edit adherence
    (`score="edit"`) or identity kept under them (`score="identity"`)."""
    pts = [(label, v["recon_mse"][0], v[score][0]) for label, v in summary.items()]
    xs = [p[1] for p in pts]
    pad = 50
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1e-3
    sx = lambda x: pad + (width - 2 * pad) * (x - x0) / (x1 - x0)
    sy = lambda y: height - pad - (height - 2 * pad) * y
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#333"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#333"/>',
        f'<text x="{width / 2 - 90}" y="{height - 12}" font-size="12">reconstruction MSE (lower is better)</text>',
        f'<text x="8" y="{pad - 12}" font-size="12">{Y_NAMES[score]} (0..1, higher is better)</text>',
        f'<text x="{pad}" y="{height - pad + 16}" font-size="11">{x0:.4f}</text>',
        f'<text x="{width - pad - 40}" y="{height - pad + 16}" font-size="11">{x1:.4f}</text>',
    ]
    for label, x, y in pts:
        if np.isnan(y):
            continue
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" fill="#d62728"/>')
        parts.append(f'<text x="{sx(x) + 7:.1f}" y="{sy(y) + 4:.1f}" font-size="12">{label}</text>')
    return "\n".join(parts + ["</svg>"])


def _write(out: Path, records, summary, meta, cells, rows) -> None:
    md = markdown_table(summary)
    with atomic_path(out / "table.md") as tmp:
        tmp.write_text(md)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", *[f"{c}_{k}" for c in COLUMNS for k in ("mean", "std")]])
    for label, v in summary.items():
        w.writerow([label, *[f"{x:.6f}" for c in COLUMNS for x in v[c]]])
    with atomic_path(out / "table.csv") as tmp:
        tmp.write_text(buf.getvalue())
    with atomic_path(out / "records.json") as tmp:
        tmp.write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    svg = scatter_svg(summary)
    with atomic_path(out / "scatter.svg") as tmp:
        tmp.write_text(svg)
    _png(out / "scatter.png", summary)
    sections = [
        ("Setting", f"<pre>{json.dumps(meta, indent=1)}</pre>"),
        (
            "Table",
            table([{"method": k, **{c: v[c][0] for c in COLUMNS}} for k, v in summary.items()], ["method", *COLUMNS]),
        ),
        ("Reconstruction vs editability", svg),
        ("Reconstruction vs identity on the edits", scatter_svg(summary, score="identity")),
    ]
    for (concept, label), cs in cells.items():
        sections.append((f"{concept}: {label}", "<div class='row'>" + "".join(cs) + "</div>"))
    write_report(out / "index.html", "setseq ablation on the toy world", sections)


def _png(path: Path, summary) -> None:
    """The scatter plot as PNG, when matplotlib is installed (the `eval` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    # two panels: reconstruction against editability, and against identity kept under the edits
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (key, name) in zip(axes, Y_NAMES.items()):
        for label, v in summary.items():
            ax.errorbar(
                v["recon_mse"][0], v[key][0], xerr=v["recon_mse"][1], yerr=v[key][1], fmt="o", capsize=3, label=label
            )
        ax.set_xlabel("reconstruction MSE (lower is better)")
        ax.set_ylabel(f"{name} (higher is better)")
    axes[0].legend(fontsize=8)  # a legend, not labels at the points: rows often sit on top of each other
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Identity leakage between composed concepts: no stitching, stitching, stitching on one background
# --------------------------------------------------------------------------------------------

# (label, stitch_prob, remove backgrounds where masks are given): the arms compared
LEAKAGE_ARMS = [("no stitching", 0.0, False), ("stitched", 0.2, False), ("stitched + background removed", 0.2, True)]


def _leakage_job(arm, stitch, remove, seed, names, base, scale, step_scale, batch_size, sample_steps, path):
    """Train one arm of the leakage benchmark on the two concepts; each output scored against both.
    Returns {"records": [...]}."""
    bb = load_backbone(base)
    specs = [example_spec(n, bb.geometry, i) for i, n in enumerate(names, start=1)]
    cfg = _config("setseq", None, scale)
    cfg.seed, cfg.optim.batch_size, cfg.reg.stitch_prob = seed, batch_size, stitch
    cfg.reg.stitch_remove_background = remove
    for s in cfg.stages:
        s.steps = max(1, round(s.steps * step_scale))
    run_job(Trainer(bb, specs, cfg, path, progress=False))
    prompts = [(s.name, s.full_prompt) for s in specs] + [("both", f"{specs[0].full_prompt} {specs[1].full_prompt}")]
    clips = generate(bb, [p for _, p in prompts], steps=sample_steps, seed=seed)
    records = []
    for (label, _), clip in zip(prompts, clips):
        for s in specs:
            m = toy_metrics(clip, s.video, world.concept_scene(s.name).kind)
            records.append(
                {
                    "arm": arm,
                    "stitch_prob": stitch,
                    "background_removed": remove,
                    "seed": seed,
                    "output": label,
                    "against": s.name,
                    "identity": m["toy_identity"],
                    "motion": m["toy_motion"],
                }
            )
    return {"records": records}


def run_leakage(
    out: str | Path,
    names: tuple[str, str] = ("waves", "flicker"),
    seeds=(0,),
    base: str = "toy",
    step_scale: float = 0.25,
    batch_size: int = 4,
    sample_steps: int = 20,
    progress: bool = True,
    scale: str = "paper",
) -> dict:
    """Learn two concepts jointly without stitched clips, with them, and with them on one shared
    background (the examples' masks; see setseq.stitch); generate each alone and both together;
    score every output's identity and motion against both concepts.

    Leakage is a concept-alone output's identity score against the *other* concept; a clean
    composition keeps each concept's own scores high when both are prompted.

    `scale` and `step_scale` as in `run_ablation`: the Set-and-Sequence preset at the paper's scale
    or moved to the toy base's (`config.toy_scale`). Raises SetseqError for an unknown scale.
    Resumable as `run_ablation` is: finished (arm, seed) jobs are kept in OUT/jobs/, and a job stopped
    inside its training continues from its checkpoint (`run_job`).
    """
    _check_scale(scale)
    out = Path(out)
    settings = {"names": list(names), "base": base, "scale": scale, "step_scale": step_scale,
                "batch_size": batch_size, "sample_steps": sample_steps}  # fmt: skip
    records = []
    jobs = [(arm, seed) for arm in LEAKAGE_ARMS for seed in seeds]
    for (arm, stitch, remove), seed in tqdm(jobs, desc="leakage", disable=not progress):
        file = f"pair-stitch{stitch:g}{'-nobg' if remove else ''}-s{seed}"
        job = (arm, stitch, remove, seed, names, base, scale, step_scale, batch_size, sample_steps)
        saved = _kept(out / "jobs" / f"{file}.json", settings, partial(_leakage_job, *job, out / f"{file}.safetensors"))
        records += saved["records"]
    summary = []
    for arm, stitch, remove in LEAKAGE_ARMS:
        mine = [r for r in records if r["arm"] == arm]
        own = [r["identity"] for r in mine if r["output"] == r["against"]]
        other = [r["identity"] for r in mine if r["output"] in names and r["output"] != r["against"]]
        both = [r["identity"] for r in mine if r["output"] == "both"]
        summary.append(
            {
                "arm": arm,
                "stitch_prob": stitch,
                "background_removed": remove,
                "own_identity": float(np.mean(own)),
                "leaked_identity": float(np.mean(other)),
                "composed_identity": float(np.mean(both)),
                "own_motion": float(np.mean([r["motion"] for r in mine if r["output"] == r["against"]])),
            }
        )
    with atomic_path(out / "leakage.json") as tmp:
        tmp.write_text(
            json.dumps(
                {
                    "summary": summary,
                    "records": records,
                    "names": names,
                    "seeds": list(seeds),
                    "scale": scale,
                    "step_scale": step_scale,
                    "batch_size": batch_size,
                    "base": base,
                },
                indent=1,
            )
        )
    return {"summary": summary, "records": records}
