"""What each control of the web UI does, as plain functions of plain values (tested without a browser).

Training, generation and export build the very flags `setseq train`, `setseq generate` and `setseq
export` take and run them through the CLI's own parser and commands, so the UI checks what the CLI
checks, says it in the same sentence, and writes the same files. Every path from the page goes
through `Workspace.inside`. Errors are `SetseqError`s; `app.py` shows their sentence.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from setseq.errors import SetseqError
from setseq.ui.jobs import ACTIVE, Job, Jobs, RecordMonitor, read_record, write_record
from setseq.ui.workspace import TOY_BASES, Workspace, check_name

FORMATS = ("comfyui", "diffusers")
PARTS = ("full", "identity")
METHODS = ("toy", "setseq", "two-stage", "lora", "dreammix", "textual-inversion")


@dataclass
class Context:
    """What every handler works on: the workspace, the job queue, and the device flags for runs and
    generations on a model folder (e.g. ["--device", "cuda", "--dtype", "bfloat16"]; the toy base
    takes none)."""

    ws: Workspace
    jobs: Jobs
    model_flags: list[str] = field(default_factory=list)


def cli_args(argv: list[str]) -> argparse.Namespace:
    """`argv` parsed by the `setseq` parser; a flag it refuses raises its one sentence.

    Raises:
        SetseqError: the parser's message, as the CLI would print it, less the "setseq: error: ".
    """
    from setseq.cli import build_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(argv)
    except SystemExit:
        raise SetseqError(err.getvalue().strip().removeprefix("setseq: error: ").rstrip(".") + ".") from None


# ============================================================================================
# train
# ============================================================================================


def tokens(i: int, n: int) -> tuple[str, str]:
    """The (identity, motion) tokens of clip `i` of `n`: [v] and [u] alone, [v1], [u1], ... in a set."""
    k = "" if n == 1 else str(i + 1)
    return f"[v{k}]", f"[u{k}]"


def captions(ctx: Context, clips: list[str]) -> tuple[str, str]:
    """The prompts of the picked clips, from their caption sidecars (NAME.txt), one line per clip;
    in a set of several, [v] and [u] become each clip's numbered tokens."""
    from setseq import data

    static, motion = [], []
    for i, name in enumerate(clips):
        s, m = data.read_prompt_file(ctx.ws.clip(name))
        v, u = tokens(i, len(clips))
        static.append((s or "").replace("[v]", v))
        motion.append((m or "").replace("[u]", u))
    return "\n".join(static), "\n".join(motion)


def _lines(text: str, n: int, what: str) -> list[str]:
    lines = [line.strip() for line in (text or "").strip().splitlines()]
    if n > 1 and len(lines) != n:
        raise SetseqError(f"give one {what} per clip, one per line: {n} clips and {len(lines)} lines.")
    return lines if n > 1 else [" ".join(lines)]


def check_prompts(clips: list[str], prompts: str, motion_prompts: str, method: str = "toy") -> str:
    """The sentence the CLI would say of these prompts, or "" when they carry their tokens.

    Args:
        clips: the picked clips' file names; prompts, motion_prompts: one line per clip.
        method: the method preset (whether it learns motion, and so needs the motion prompts).
    """
    from setseq.config import preset
    from setseq.train import check_prompts as check

    if not clips:
        return "pick or upload a clip to train on."
    try:
        needs_motion = any(s.train == "motion" for s in preset(method).stages)
        static = _lines(prompts, len(clips), "static prompt")
        motion = _lines(motion_prompts, len(clips), "motion prompt") if (motion_prompts or "").strip() else []
        for i, clip in enumerate(clips):
            name = Path(clip).stem
            check(name, static[i], motion[i] if motion else None, tokens(i, len(clips)), method, needs_motion)
    except SetseqError as e:
        return str(e)
    return ""


def _given(value) -> bool:
    return value is not None and str(value).strip() != ""


def train_argv(
    ctx: Context,
    run: str,
    clips: list[str],
    prompts: str,
    motion_prompts: str,
    base: str = "toy",
    method: str = "toy",
    stage1_steps: int | str | None = None,
    stage2_steps: int | str | None = None,
    rank: int | str | None = None,
    validate_every: int | str | None = None,
    extra: list[str] | None = None,
) -> list[str]:
    """The `setseq train` command line for a run picked on the page (clip paths inside the workspace).
    Numbers may come as the page's text; empty (or None) leaves the preset's, and the CLI's parser
    checks the rest.

    Raises:
        SetseqError: a bad run name, clip, prompt count or base.
    """
    check_name(run, "run name")
    if not clips:
        raise SetseqError("pick or upload a clip to train on.")
    paths = [str(ctx.ws.clip(c)) for c in clips]
    static = _lines(prompts, len(clips), "static prompt")
    motion = _lines(motion_prompts, len(clips), "motion prompt") if (motion_prompts or "").strip() else []
    argv = ["train", *paths, "--base", ctx.ws.base(base), "--method", method, "--quiet"]
    argv += [] if base in TOY_BASES else ctx.model_flags
    argv += [f for p in static for f in ("--prompt", p)] + [f for p in motion for f in ("--motion-prompt", p)]
    for flag, value in (
        ("--stage1-steps", stage1_steps),
        ("--stage2-steps", stage2_steps),
        ("--rank", rank),
        ("--validate-every", validate_every),
    ):
        if _given(value):
            argv += [flag, str(value).strip()]
    return [*argv, *(extra or []), "--out", str(ctx.ws.concept_file(run))]


def start_training(ctx: Context, run: str, argv: list[str], resume: bool = False) -> Job:
    """Queue `setseq train ARGV` as run `run`, recording it in RUN.job.json.

    Raises:
        SetseqError: a flag the CLI refuses; a run of that name that exists (without `resume`), is
            already queued or running, or has no checkpoint to resume.
    """
    from setseq.cli.train import train_from_args

    d = ctx.ws.run_dir(run)
    concept, ckpt = ctx.ws.concept_file(run), d / f"{run}.ckpt"
    if ctx.jobs.holds(run):
        raise SetseqError(f"run {run!r} is already queued or running; stop it first.")
    if resume and not ckpt.is_file():
        raise SetseqError(f"run {run!r} has no checkpoint to resume; start it afresh.")
    if not resume and (concept.exists() or ckpt.exists()):
        raise SetseqError(f"a run named {run!r} exists already; resume it or give the new run another name.")
    args = cli_args([*argv, *(["--resume"] if resume else [])])
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{run}.job.json"
    record = {**read_record(path), "run": run, "argv": argv, "state": "queued", "message": ""}
    write_record(path, record)

    def work(stop: threading.Event):
        return train_from_args(args, RecordMonitor(path, record, stop))

    def on_end(job: Job):
        record.update(state=job.state, message=job.message, eta_s=None)
        write_record(path, record)

    return ctx.jobs.submit(Job("train", run, work, on_end))


def resume_training(ctx: Context, run: str) -> Job:
    """Continue run `run` from its checkpoint, with the flags it was started with."""
    record = read_record(ctx.ws.run_dir(run) / f"{run}.job.json")
    if not record.get("argv"):
        raise SetseqError(f"run {run!r} was not started from the UI; resume it with `setseq train ... --resume`.")
    return start_training(ctx, run, record["argv"], resume=True)


def stop_training(ctx: Context, run: str) -> str:
    """Stop run `run` (it checkpoints first) or take it out of the queue; returns what happened."""
    check_name(run, "run name")
    if ctx.jobs.stop(run):
        return f"stopping {run}; it writes a checkpoint, and Resume continues from there."
    return f"{run} is not running."


# ============================================================================================
# where a run stands
# ============================================================================================


def run_status(ctx: Context, run: str) -> dict[str, Any]:
    """What the page shows of run `run`: a one-line status, its losses by stage, its validation samples
    (newest last), its concept file when written, and whether it is queued or running."""
    d = ctx.ws.run_dir(run)
    record = read_record(d / f"{run}.job.json")
    concept = ctx.ws.concept_file(run)
    job = ctx.jobs.holds(run)
    state = record.get("state") or ("done" if concept.is_file() else "unknown")
    if state in ACTIVE and job is None:
        state = "interrupted"  # the server that held it stopped
    losses = record.get("losses") or {}
    if not losses and concept.is_file():  # a run the CLI trained
        losses = concept_meta(concept).get("losses", {})
    samples = sorted((d / f"{run}.samples").glob("*.mp4"), key=lambda p: p.stat().st_mtime_ns)
    return {
        "state": state,
        "text": _status_text(run, state, record, job, ctx.jobs),
        "losses": losses,
        "samples": samples,
        "concept": concept if concept.is_file() else None,
        "active": job is not None,
    }


def _status_text(run: str, state: str, r: dict, job: Job | None, jobs: Jobs) -> str:
    if state == "queued" and job is not None:
        return f"{run}: queued, {jobs.ahead(job)} job(s) ahead."
    if state == "running":
        if "stage" not in r:
            return f"{run}: setting up (loading the base and the clips)."
        eta = r.get("eta_s")
        left = f", about {_duration(eta)} left" if eta is not None else ""
        return (
            f"{run}: stage {r['stage_index'] + 1}/{r['stages']} ({r['stage']}), step {r['step']}/{r['stage_steps']}, "
            f"loss {r['loss']:.4f}{left}."
        )
    if state == "done":
        return f"{run}: done; its concept file is {run}.safetensors."
    if state == "stopped":
        return (
            f"{run}: stopped at step {r.get('done', 0)} of {r.get('total', '?')}; Resume continues from its checkpoint."
        )
    if state == "interrupted":
        return f"{run}: interrupted when the server stopped; Resume continues from its last checkpoint."
    if state in ("failed", "cancelled"):
        return f"{run}: {state}" + (f": {r.get('message')}" if r.get("message") else ".")
    return f"{run}: no concept file yet."


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


# ============================================================================================
# generate and edit
# ============================================================================================


@functools.lru_cache(maxsize=64)
def _header(path: str, mtime_ns: int) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(path, "pt") as f:
            return json.loads((f.metadata() or {}).get("setseq", "{}"))
    except Exception:  # any unreadable header: the page shows nothing of it, `concept.load` says why
        return {}


def concept_meta(path: Path) -> dict[str, Any]:
    """A concept file's setseq metadata, read from its header only (the page asks every second), or
    {} when it cannot be read."""
    try:
        return _header(str(path), path.stat().st_mtime_ns)
    except OSError:
        return {}


def concept_prompt(ctx: Context, run: str) -> str:
    """The full prompt of the run's concepts (static then motion, each concept in turn), to edit."""
    concepts = concept_meta(_concept(ctx, run)).get("concepts", [])
    return " ".join(" ".join(p for p in (c.get("prompt"), c.get("motion_prompt")) if p) for c in concepts)


def training_clip(ctx: Context, run: str) -> Path | None:
    """The first clip run `run` trained on, when it is a file in the workspace (None otherwise)."""
    with contextlib.suppress(SetseqError):
        video = (concept_meta(_concept(ctx, run)).get("concepts") or [{}])[0].get("video")
        path = ctx.ws.inside(video, "the training clip") if video else None
        return path if path is not None and path.is_file() else None
    return None


def _concept(ctx: Context, run: str) -> Path:
    path = ctx.ws.concept_file(run)
    if not path.is_file():
        raise SetseqError(f"run {run!r} has no concept file yet; train it (or let it finish) first.")
    return path


def submit_generate(
    ctx: Context,
    run: str,
    prompt: str,
    identity_scale: float = 1.0,
    motion_scale: float = 1.0,
    scales: str = "",
    seed: int | str = 0,
    steps: int | str | None = None,
    guidance: float | str | None = None,
) -> Job:
    """Queue `setseq generate` with run `run`'s concept set; the job's result is the video's path.
    Writes results/NNNN.mp4, its frame strip NNNN.png and its settings NNNN.json.

    Args:
        scales: per-concept scales as `--scale` takes them, e.g. "u1=1,u2=0.5" (empty: none).
        seed, steps, guidance: numbers or the page's text; empty (or None) leaves the base's default.

    Raises:
        SetseqError: a run without a concept file, or a flag the CLI refuses.
    """
    from setseq.cli.generate import cmd_generate

    concept = _concept(ctx, run)
    results = ctx.ws.run_dir(run) / "results"
    results.mkdir(exist_ok=True)
    n = 1 + max((int(p.stem) for p in results.glob("[0-9][0-9][0-9][0-9].json")), default=0)
    out = results / f"{n:04d}.mp4"
    argv = ["generate", str(concept), "--prompt", prompt, "--out", str(out)]
    argv += [] if _base_name(concept) in TOY_BASES else ctx.model_flags
    argv += ["--identity-scale", str(identity_scale), "--motion-scale", str(motion_scale)]
    for flag, value in (("--seed", seed), ("--scale", scales), ("--steps", steps), ("--guidance", guidance)):
        if _given(value):
            argv += [flag, str(value).strip()]
    args = cli_args(argv)
    settings = {
        "prompt": prompt,
        "identity_scale": identity_scale,
        "motion_scale": motion_scale,
        "scales": scales,
        "seed": seed,
        "steps": steps,
        "guidance": guidance,
    }

    def work(stop: threading.Event) -> Path:
        from setseq import data
        from setseq.report import frame_strip

        cmd_generate(args)
        frame_strip(out.with_suffix(".png"), [data.load_video(out).frames], scale=1)
        write_record(out.with_suffix(".json"), settings)
        return out

    return ctx.jobs.submit(Job("generate", run, work))


def _base_name(concept: Path) -> str:
    return concept_meta(concept).get("base", {}).get("name", "")


def job_result(job: Job, timeout: float | None = None) -> Any:
    """The job's result once it ends.

    Raises:
        SetseqError: the job failed (its sentence), was stopped or cancelled, or did not end in time.
    """
    if not job.finished.wait(timeout):
        raise SetseqError(f"the {job.kind} job of {job.run!r} did not end within {timeout:g} s.")
    if job.state != "done":
        raise SetseqError(job.message or f"the {job.kind} job of {job.run!r} was {job.state}.")
    return job.result


def results(ctx: Context, run: str) -> list[dict[str, Any]]:
    """Run `run`'s generated videos, newest first: {video, strip, settings}."""
    out = []
    for meta in sorted((ctx.ws.run_dir(run) / "results").glob("[0-9][0-9][0-9][0-9].json"), reverse=True):
        video = meta.with_suffix(".mp4")
        if video.is_file():
            out.append({"video": video, "strip": meta.with_suffix(".png"), "settings": json.loads(meta.read_text())})
    return out


# ============================================================================================
# export
# ============================================================================================


def export(ctx: Context, run: str, fmt: str = "comfyui", part: str = "full") -> list[Path]:
    """Run `run`'s concept set as a standard LoRA (`setseq export`) in RUN/exports/; returns the files.

    Raises:
        SetseqError: a run without a concept file, or a format or part the CLI refuses.
    """
    from setseq import concept as concept_io
    from setseq.export import export as export_lora

    if fmt not in FORMATS or part not in PARTS:
        raise SetseqError(
            f"export takes a format of {', '.join(FORMATS)} and a part of {', '.join(PARTS)}; got {fmt!r}, {part!r}."
        )
    cs = concept_io.load(_concept(ctx, run))
    return export_lora(cs, ctx.ws.run_dir(run) / "exports" / f"{run}-{fmt}-{part}.safetensors", fmt, part=part)
