"""The web UI's page (Gradio): three tabs over `handlers`, and `serve`, which starts it offline.

Train: clips (uploaded or from the workspace), their prompts checked as typed, base, method, steps,
rank; a run's stage, step, loss, time left, loss curve and latest validation sample, refreshed each
second from its record on disk. Generate: prompt, scales, seed, steps and guidance; the result plays
beside the training clip, with its frame strip, and earlier results stay listed. Export: a LoRA file
to download. A handler's SetseqError shows as its one sentence; anything else as one sentence too,
with the traceback on the server's console only.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sys
import traceback
from pathlib import Path

from setseq.errors import SetseqError
from setseq.ui import handlers as h
from setseq.ui.jobs import Jobs
from setseq.ui.workspace import TOY_BASES, VIDEO_SUFFIXES, Workspace

OFFLINE_ENV = {  # nothing phones home: no analytics, no hub, no version check
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_SSR_MODE": "False",
}
CSS = """
#status { font-size: 1.05em; }
#loss-plot svg { overflow: visible; max-width: 100%; height: auto; }
.setseq-note { color: var(--body-text-color-subdued); font-size: 0.9em; }
video { image-rendering: pixelated; }
"""


def _sentences(fn):
    """Show a handler's failure as one sentence in the page (a Gradio error), never a traceback;
    a generator handler (one that reports as it goes) stays a generator."""
    import gradio as gr

    @contextlib.contextmanager
    def one_sentence():
        try:
            yield
        except SetseqError as e:
            raise gr.Error(str(e), print_exception=False) from None
        except gr.Error:
            raise
        except Exception as e:
            traceback.print_exc(file=sys.stderr)
            raise gr.Error(
                f"an unexpected {type(e).__name__} stopped this; the server's console shows why.", print_exception=False
            ) from None

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def stream(*args, **kwargs):
            with one_sentence():
                yield from fn(*args, **kwargs)

        return stream

    @functools.wraps(fn)
    def call(*args, **kwargs):
        with one_sentence():
            return fn(*args, **kwargs)

    return call


def _caption(settings: dict) -> str:
    """A result's settings in a line: its prompt, then the scales and the seed."""
    scales = f"identity {settings.get('identity_scale')}, motion {settings.get('motion_scale')}"
    extra = f", {settings['scales']}" if settings.get("scales") else ""
    return f"{settings.get('prompt', '')} ({scales}{extra}, seed {settings.get('seed')})"


def build(ctx: h.Context):
    """The page's Blocks, wired to the handlers of `ctx`."""
    import gradio as gr

    from setseq.report import loss_svg

    ws = ctx.ws
    safe = _sentences

    with gr.Blocks(title="setseq") as page:
        gr.Markdown(
            "## setseq: learn a dynamic concept from a clip\n"
            "Set-and-Sequence: stage 1 learns the look (`[v]`) from the clip's frames as a set, stage 2 "
            f"its motion (`[u]`) from the clip as a sequence. Workspace: `{ws.root}`."
        )
        with gr.Row():
            run = gr.Dropdown(ws.runs(), value=None, label="Run", elem_id="run", allow_custom_value=False, scale=3)
            refresh = gr.Button("Refresh lists", scale=1)
        with gr.Tabs():
            with gr.Tab("Train", id="train"):
                with gr.Row():
                    with gr.Column():
                        upload = gr.File(
                            file_count="multiple",
                            file_types=[*VIDEO_SUFFIXES, ".txt"],
                            label="Upload clips (with NAME.txt captions and NAME.mask.mp4 masks)",
                            elem_id="upload",
                        )
                        clips = gr.Dropdown(
                            ws.clips(), multiselect=True, label="Clips (several: a concept set)", elem_id="clips"
                        )
                        prompt = gr.Textbox(
                            label="Static prompt, one line per clip ([v], or [v1], [v2], ...)",
                            lines=2,
                            elem_id="prompt",
                        )
                        motion = gr.Textbox(
                            label="Motion prompt, one line per clip ([u], or [u1], [u2], ...)",
                            lines=2,
                            elem_id="motion-prompt",
                        )
                        check = gr.Markdown(elem_id="prompt-check")
                        with gr.Row():
                            name = gr.Textbox(label="Run name", elem_id="run-name")
                            base = gr.Dropdown(ws.bases(), value="toy", label="Base", elem_id="base")
                            method = gr.Dropdown(list(h.METHODS), value="toy", label="Method preset", elem_id="method")
                        with gr.Row():
                            steps1 = gr.Textbox(label="Stage 1 steps", placeholder="the preset's", elem_id="steps1")
                            steps2 = gr.Textbox(label="Stage 2 steps", placeholder="the preset's", elem_id="steps2")
                            rank = gr.Textbox(label="Rank", placeholder="the preset's", elem_id="rank")
                            every = gr.Textbox(label="Sample every N steps", value="50", elem_id="every")
                        train_btn = gr.Button("Train", variant="primary", elem_id="train-button")
                    with gr.Column():
                        status = gr.Markdown(elem_id="status")
                        with gr.Row():
                            stop_btn = gr.Button("Stop", elem_id="stop-button")
                            resume_btn = gr.Button("Resume", elem_id="resume-button")
                        plot = gr.HTML(elem_id="loss-plot")
                        sample = gr.Video(
                            label="Latest validation sample",
                            elem_id="sample",
                            autoplay=True,
                            loop=True,
                            interactive=False,
                        )
            with gr.Tab("Generate", id="generate") as gen_tab:
                with gr.Row():
                    with gr.Column():
                        gen_prompt = gr.Textbox(label="Prompt (the concept's tokens)", lines=2, elem_id="gen-prompt")
                        with gr.Row():
                            id_scale = gr.Slider(
                                -1, 2, value=1, step=0.05, label="Identity scale", elem_id="identity-scale"
                            )
                            mo_scale = gr.Slider(
                                -1, 2, value=1, step=0.05, label="Motion scale", elem_id="motion-scale"
                            )
                        scales = gr.Textbox(label="Per-concept scales, e.g. u1=1,u2=0.5 (a set)", elem_id="scales")
                        with gr.Row():
                            seed = gr.Textbox(value="0", label="Seed", elem_id="seed")
                            steps = gr.Textbox(label="Steps", placeholder="the base's", elem_id="gen-steps")
                            guidance = gr.Textbox(label="Guidance", placeholder="the base's", elem_id="guidance")
                        gen_btn = gr.Button("Generate", variant="primary", elem_id="generate-button")
                        gen_status = gr.Markdown(elem_id="gen-status")
                    with gr.Column():
                        with gr.Row():
                            result = gr.Video(
                                label="Result", elem_id="result", autoplay=True, loop=True, interactive=False
                            )
                            source = gr.Video(
                                label="Training clip", elem_id="source", autoplay=True, loop=True, interactive=False
                            )
                        strip = gr.Image(label="Frame strip", elem_id="strip", interactive=False)
                history = gr.Gallery(
                    label="Earlier results, newest first (pick one to play it)",
                    columns=2,
                    height=260,
                    object_fit="contain",
                    allow_preview=False,
                    elem_id="history",
                )
            with gr.Tab("Export", id="export"):
                fmt = gr.Radio(list(h.FORMATS), value="diffusers", label="Format", elem_id="format")
                part = gr.Radio(list(h.PARTS), value="full", label="Part", elem_id="part")
                gr.Markdown(
                    "ComfyUI files are for Wan and LTX-Video concepts; diffusers files load with "
                    "`pipe.load_lora_weights(...)` on any base.",
                    elem_classes="setseq-note",
                )
                export_btn = gr.Button("Export", variant="primary", elem_id="export-button")
                exported = gr.File(label="LoRA file", elem_id="exported", interactive=False)
        timer = gr.Timer(1.0)

        # ---- train -----------------------------------------------------------------------------
        @safe
        def on_upload(files, picked):
            added = ws.add_clips([f if isinstance(f, str) else f.name for f in files or []])
            chosen = list(dict.fromkeys([*(picked or []), *added]))
            return gr.update(choices=ws.clips(), value=chosen)

        @safe
        def on_clips(picked):
            if not picked:
                return "", "", gr.update()
            static, moving = h.captions(ctx, picked)
            stem = Path(picked[0]).stem.split(".")[0]
            taken = set(ws.runs())
            default = (
                stem
                if stem not in taken
                else next(f"{stem}-{i}" for i in range(2, 10**4) if f"{stem}-{i}" not in taken)
            )
            return static, moving, default

        def on_check(picked, static, moving, preset):
            sentence = h.check_prompts(picked or [], static, moving, preset)
            return f"⚠ {sentence}" if sentence else ("✓ the prompts carry their tokens." if picked else "")

        @safe
        def on_train(picked, static, moving, run_name, base_choice, preset, s1, s2, r, n):
            run_name = (run_name or "").strip()
            sentence = h.check_prompts(picked or [], static, moving, preset)
            if sentence:
                raise SetseqError(sentence)
            argv = h.train_argv(ctx, run_name, picked, static, moving, base_choice, preset, s1, s2, r, n)
            h.start_training(ctx, run_name, argv)
            return gr.update(choices=ws.runs(), value=run_name)

        def on_tick(name, shown):
            if not name:
                return gr.update(), gr.update(), gr.update(), shown
            st = h.run_status(ctx, name)
            newest = str(st["samples"][-1]) if st["samples"] else None
            video = gr.update(value=newest) if newest != shown else gr.update()
            return st["text"], loss_svg(st["losses"]) if st["losses"] else "", video, newest

        @safe
        def on_stop(name):
            if not name:
                raise SetseqError("pick a run to stop.")
            return h.stop_training(ctx, name)

        @safe
        def on_resume(name):
            if not name:
                raise SetseqError("pick a run to resume.")
            h.resume_training(ctx, name)
            return f"{name}: queued to resume."

        # ---- generate --------------------------------------------------------------------------
        def gallery(name):  # each earlier result as its frame strip; picking one plays it
            rows = h.results(ctx, name) if name else []
            return [
                (str(r["strip"]), f"{r['video'].stem}: {_caption(r['settings'])}") for r in rows if r["strip"].is_file()
            ]

        def pick(name, evt):
            rows = [r for r in h.results(ctx, name) if r["strip"].is_file()] if name else []
            if not 0 <= evt.index < len(rows):
                return gr.update(), gr.update(), gr.update()
            r = rows[evt.index]
            return str(r["video"]), str(r["strip"]), f"{r['video'].relative_to(ws.root)}: {_caption(r['settings'])}"

        # Gradio passes the picked item to a parameter hinted SelectData; a class, not this module's string
        pick.__annotations__["evt"] = gr.SelectData
        on_pick = safe(pick)

        @safe
        def on_run(name):
            if not name or h.run_status(ctx, name)["concept"] is None:
                return gr.update(), None, gallery(name)
            clip = h.training_clip(ctx, name)
            return h.concept_prompt(ctx, name), str(clip) if clip else None, gallery(name)

        @safe
        def on_gen_tab(name, text):
            if (text or "").strip():
                return gr.update(), gr.update(), gallery(name)
            return on_run(name)

        @safe
        def on_generate(name, text, s_id, s_mo, per, sd, n, cfg):
            if not name:
                raise SetseqError("pick a trained run to generate with.")
            job = h.submit_generate(ctx, name, text, s_id, s_mo, per, sd, n, cfg)
            while not job.finished.wait(0.5):
                ahead = ctx.jobs.ahead(job)
                yield (
                    (f"waiting: {ahead} job(s) ahead." if ahead else "generating..."),
                    gr.update(),
                    gr.update(),
                    gr.update(),
                )
            out = h.job_result(job)
            yield f"wrote {out.relative_to(ws.root)}.", str(out), str(out.with_suffix(".png")), gallery(name)

        # ---- export ----------------------------------------------------------------------------
        @safe
        def on_export(name, f, p):
            if not name:
                raise SetseqError("pick a trained run to export.")
            return [str(x) for x in h.export(ctx, name, f, p)]

        @safe
        def on_refresh(name):
            return (
                gr.update(choices=ws.runs(), value=name),
                gr.update(choices=ws.clips()),
                gr.update(choices=ws.bases()),
            )

        shown = gr.State(None)
        upload.upload(on_upload, [upload, clips], [clips])
        clips.change(on_clips, [clips], [prompt, motion, name])
        # the toy preset for the toy bases, the paper's for a model folder
        base.change(lambda b: "toy" if b in TOY_BASES else "setseq", [base], [method])
        for box in (clips, prompt, motion, method):
            box.change(on_check, [clips, prompt, motion, method], [check])
        train_btn.click(on_train, [clips, prompt, motion, name, base, method, steps1, steps2, rank, every], [run])
        timer.tick(on_tick, [run, shown], [status, plot, sample, shown], show_progress="hidden")
        stop_btn.click(on_stop, [run], [status])
        resume_btn.click(on_resume, [run], [status])
        run.change(on_run, [run], [gen_prompt, source, history])
        gen_tab.select(on_gen_tab, [run, gen_prompt], [gen_prompt, source, history])
        gen_btn.click(
            on_generate,
            [run, gen_prompt, id_scale, mo_scale, scales, seed, steps, guidance],
            [gen_status, result, strip, history],
        )
        history.select(on_pick, [run], [result, strip, gen_status])
        export_btn.click(on_export, [run, fmt, part], [exported])
        refresh.click(on_refresh, [run], [run, clips, base])
    return page


def serve(
    workspace: str | Path,
    models: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 7860,
    auth: tuple[str, str] | None = None,
    max_upload_mib: int = 200,
    examples: bool = True,
    model_flags: list[str] | None = None,
    block: bool = True,
):
    """Serve the UI on `workspace` at http://HOST:PORT (offline: no analytics, fonts from this machine).

    Args:
        workspace, models: see `Workspace`; max_upload_mib: the largest upload, in MiB.
        auth: (user, password) the page asks for, or None; examples: copy the example clips in.
        model_flags: device flags for runs and generations on a model folder, e.g. ["--device", "cuda"].
        block: serve until interrupted (False: return the running app, for tests).

    Raises:
        SetseqError: a models folder that does not exist.
    """
    ws = Workspace(Path(workspace), Path(models) if models else None, max_upload=max_upload_mib * 2**20)
    if examples:
        ws.add_examples()
    # uploads and caches stay in the workspace; set before gradio is imported, which reads them
    os.environ["GRADIO_TEMP_DIR"] = str(ws.uploads_dir)
    os.environ["SETSEQ_CACHE"] = str(ws.root / ".cache")
    os.environ.update(OFFLINE_ENV)
    import gradio as gr

    font = ["ui-sans-serif", "system-ui", "sans-serif"]  # no web fonts: the page works offline
    theme = gr.themes.Default(font=font, font_mono=["ui-monospace", "monospace"])
    page = build(h.Context(ws, Jobs(), model_flags or []))
    print(f"setseq ui: serving {ws.root} at http://{host}:{port}", file=sys.stderr, flush=True)
    return page.queue(default_concurrency_limit=4).launch(
        server_name=host,
        server_port=port,
        auth=auth,
        max_file_size=max_upload_mib * 2**20,
        allowed_paths=[str(ws.root)],
        theme=theme,
        css=CSS,
        quiet=True,
        ssr_mode=False,
        footer_links=[],
        prevent_thread_lock=not block,
        inbrowser=False,
    )
