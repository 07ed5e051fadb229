"""The web UI's handlers as plain functions (no browser, no server): the workspace's fences, the
prompt checks' sentences, the job queue, and a tiny run trained, stopped, resumed, sampled and exported."""

import os
import threading
import time

import pytest

from setseq.cli import main
from setseq.errors import SetseqError
from setseq.ui import handlers as h
from setseq.ui.jobs import Job, Jobs, read_record, write_record
from setseq.ui.workspace import Workspace

STEPS = {"base": "toy-tiny", "stage1_steps": 2, "stage2_steps": 2}


@pytest.fixture
def ctx(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.add_examples()
    return h.Context(ws, Jobs())


def _argv(ctx, run, clips=("sprite.mp4",), **kw):
    static, motion = h.captions(ctx, list(clips))
    return h.train_argv(ctx, run, list(clips), static, motion, **{**STEPS, **kw})


def _wait(cond, timeout=300.0):  # a guard against hangs, generous for a loaded machine
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workspace with one run trained through the UI's handlers (2 + 2 steps on the tiny toy base)."""
    ws = Workspace(tmp_path_factory.mktemp("trained") / "ws")
    ws.add_examples()
    ctx = h.Context(ws, Jobs())
    job = h.start_training(ctx, "sprite", _argv(ctx, "sprite", validate_every=2))
    h.job_result(job, timeout=600)
    return ctx


# ============================================================================================
# safety: the address, the log-in, the workspace's fences
# ============================================================================================


def test_listen_without_auth_exits_2_with_one_sentence(capsys):
    assert main(["ui", "--listen", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--auth" in err and "Traceback" not in err


def test_the_servers_own_entry_refuses_too(tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "setseq.ui", "--listen", "0.0.0.0", "--workspace", str(tmp_path / "ws")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--auth" in done.stderr
    assert not (tmp_path / "ws").exists()  # refused before anything is written


@pytest.mark.parametrize("auth", ["nopassword", ":pw", "env"])
def test_a_bad_auth_exits_2(auth, capsys, monkeypatch):
    monkeypatch.delenv("SETSEQ_UI_TOKEN", raising=False)
    assert main(["ui", "--listen", "0.0.0.0", "--auth", auth]) == 2
    assert "--auth" in capsys.readouterr().err


def test_auth_from_the_environment(monkeypatch):
    from setseq.cli.ui import credentials

    monkeypatch.setenv("SETSEQ_UI_TOKEN", "s3cret")
    assert credentials("env") == ("setseq", "s3cret") and credentials("me:pw:x") == ("me", "pw:x")


def test_paths_outside_the_workspace_are_refused(ctx, tmp_path):
    ws = ctx.ws
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"x")
    (ws.root / "link").symlink_to(tmp_path)
    for path in ("../secret.mp4", str(outside), "/etc/passwd", "link/secret.mp4", "clips/../../secret.mp4"):
        with pytest.raises(SetseqError, match="outside the workspace"):
            ws.inside(path)
    with pytest.raises(SetseqError, match="outside the workspace"):
        ws.add_clips([outside])  # an "upload" from elsewhere
    with pytest.raises(SetseqError):
        ws.clip("../secret.mp4")
    for name in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(SetseqError, match="run name"):
            ws.run_dir(name)
    with pytest.raises(SetseqError):
        ws.base("../../etc")
    assert ws.inside("clips/sprite.mp4") == ws.root / "clips" / "sprite.mp4"


def test_the_models_folder_is_readable_and_lists_model_folders(tmp_path):
    models = tmp_path / "models"
    (models / "wan").mkdir(parents=True)
    (models / "wan" / "model_index.json").write_text("{}")
    (models / "notes").mkdir()
    ws = Workspace(tmp_path / "ws", models)
    assert ws.bases() == ["toy", "toy-v2", "toy-tiny", "wan"]
    assert ws.base("wan") == str(models / "wan") and ws.inside(models / "wan") == models / "wan"
    with pytest.raises(SetseqError, match="no model folder"):
        ws.base("notes")


def test_device_flags_go_to_model_folders_only(tmp_path):
    models = tmp_path / "models"
    (models / "wan").mkdir(parents=True)
    (models / "wan" / "model_index.json").write_text("{}")
    ws = Workspace(tmp_path / "ws", models)
    ws.add_examples()
    ctx = h.Context(ws, Jobs(), ["--device", "cuda", "--dtype", "bfloat16"])
    on_wan = _argv(ctx, "w", base="wan")
    assert on_wan[on_wan.index("--base") + 1] == str(models / "wan") and "--device" in on_wan and "bfloat16" in on_wan
    assert "--device" not in _argv(ctx, "t", base="toy-tiny")


def test_uploads_are_limited_in_size_and_kind(ctx):
    ws = ctx.ws
    up = ws.uploads_dir / "abc"
    up.mkdir()
    (up / "big.mp4").write_bytes(b"\0" * 2048)
    (up / "run.sh").write_text("echo")
    (up / "clip.mp4").write_bytes((ws.clips_dir / "sprite.mp4").read_bytes())
    (up / "clip.txt").write_text("a [v] thing. it moves in [u] motion.")
    small = Workspace(ws.root, max_upload=1024)
    with pytest.raises(SetseqError, match="over the upload limit"):
        small.add_clips([up / "big.mp4"])
    with pytest.raises(SetseqError, match="neither a video"):
        ws.add_clips([up / "run.sh"])
    assert ws.add_clips([up / "clip.mp4", up / "clip.txt"]) == ["clip.mp4"]
    assert "clip.mp4" in ws.clips() and "sprite.mask.mp4" not in ws.clips()
    (up / "my clip (2).mp4").write_bytes(b"x")
    (up / "my clip (2).txt").write_text("a [v].")
    assert ws.add_clips([up / "my clip (2).mp4", up / "my clip (2).txt"]) == ["my-clip-2.mp4"]
    assert (ws.clips_dir / "my-clip-2.txt").is_file()  # the caption keeps its clip's name


# ============================================================================================
# prompts: the CLI's sentences as the user types
# ============================================================================================


def test_prompt_check_says_what_the_cli_says(ctx, capsys):
    bad = "a diamond on a blue background."
    sentence = h.check_prompts(["sprite.mp4"], bad, "it moves in [u] motion.")
    assert "must contain its concept token [v]" in sentence
    clip = str(ctx.ws.clip("sprite.mp4"))
    args = ["train", clip, "--prompt", bad, "--motion-prompt", "it moves in [u] motion.", "--base", "toy-tiny"]
    assert main([*args, "--out", str(ctx.ws.root / "x.safetensors")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"setseq: error: {sentence}"
    assert "motion token [u]" in h.check_prompts(["sprite.mp4"], "a [v].", "it moves.")
    assert h.check_prompts(["sprite.mp4"], "a [v].", "", "lora") == ""  # one stage: no motion prompt needed
    assert h.check_prompts(["sprite.mp4"], *h.captions(ctx, ["sprite.mp4"])) == ""


def test_a_concept_set_numbers_the_captions_tokens(ctx):
    static, motion = h.captions(ctx, ["waves.mp4", "flicker.mp4"])
    assert "[v1]" in static.splitlines()[0] and "[v2]" in static.splitlines()[1]
    assert "[u1]" in motion.splitlines()[0] and "[u2]" in motion.splitlines()[1]
    assert h.check_prompts(["waves.mp4", "flicker.mp4"], static, motion) == ""
    assert "one static prompt per clip" in h.check_prompts(["waves.mp4", "flicker.mp4"], "a [v1] x.", motion)


def test_bad_numbers_get_the_cli_parsers_sentence(ctx):
    argv = _argv(ctx, "bad", stage1_steps="two")
    with pytest.raises(SetseqError, match="--stage1-steps: takes a whole number >= 0, got 'two'"):
        h.start_training(ctx, "bad", argv)
    assert not (ctx.ws.runs_dir / "bad").exists()


# ============================================================================================
# the queue
# ============================================================================================


def test_one_job_runs_at_a_time_and_the_others_wait_in_order():
    jobs, release, order = Jobs(), threading.Event(), []

    def work(tag):
        def run(stop):
            order.append(tag)
            release.wait(10)
            return tag

        return run

    first, second = jobs.submit(Job("train", "a", work("a"))), jobs.submit(Job("generate", "b", work("b")))
    _wait(lambda: first.state == "running")
    assert second.state == "queued" and jobs.ahead(second) == 1 and order == ["a"]
    release.set()
    _wait(second.finished.is_set)
    assert order == ["a", "b"] and (first.state, first.result, second.result) == ("done", "a", "b")


def test_a_failing_job_says_one_sentence(capsys):
    jobs = Jobs()

    def broken(stop):
        raise ValueError("deep inside")

    def refused(stop):
        raise SetseqError("the clip is too short.")

    a, b = jobs.submit(Job("train", "a", broken)), jobs.submit(Job("train", "b", refused))
    _wait(b.finished.is_set)
    assert a.state == "failed" and "unexpected ValueError" in a.message and "\n" not in a.message
    assert "Traceback" in capsys.readouterr().err  # the console, not the page, gets the traceback
    with pytest.raises(SetseqError, match="the clip is too short"):
        h.job_result(b)


# ============================================================================================
# a run: train, stop, resume, generate, export
# ============================================================================================


def test_a_run_stops_with_a_checkpoint_and_resumes_to_the_end(ctx):
    run = "long"
    job = h.start_training(ctx, run, _argv(ctx, run, stage1_steps=40, stage2_steps=2))
    record = ctx.ws.run_dir(run) / f"{run}.job.json"
    _wait(lambda: read_record(record).get("done", 0) >= 1)
    assert "step" in h.run_status(ctx, run)["text"] and h.run_status(ctx, run)["active"]
    assert "stopping" in h.stop_training(ctx, run)
    _wait(job.finished.is_set)
    status = h.run_status(ctx, run)
    assert job.state == "stopped" and status["state"] == "stopped" and "Resume" in status["text"]
    assert (ctx.ws.run_dir(run) / f"{run}.ckpt").is_file() and status["concept"] is None
    with pytest.raises(SetseqError, match="exists already"):
        h.start_training(ctx, run, _argv(ctx, run))
    stopped_at = read_record(record)["done"]
    # a restarted server (a new queue on the same folder) resumes it from the checkpoint
    ctx2 = h.Context(Workspace(ctx.ws.root), Jobs())
    h.job_result(h.resume_training(ctx2, run), timeout=600)
    status = h.run_status(ctx2, run)
    assert status["state"] == "done" and status["concept"] is not None
    assert len(status["losses"]["set"]) == 40 and len(status["losses"]["sequence"]) == 2
    assert 1 <= stopped_at < 40


def test_a_run_the_server_lost_reads_as_interrupted(ctx):
    d = ctx.ws.run_dir("lost")
    d.mkdir()
    write_record(d / "lost.job.json", {"run": "lost", "state": "running", "stage": "set"})
    st = h.run_status(ctx, "lost")
    assert st["state"] == "interrupted" and "Resume" in st["text"] and "lost" in ctx.ws.runs()


def test_status_losses_and_samples_of_a_finished_run(trained):
    st = h.run_status(trained, "sprite")
    assert st["state"] == "done" and st["concept"] == trained.ws.concept_file("sprite")
    assert [len(v) for v in st["losses"].values()] == [2, 2]
    assert [p.name for p in st["samples"]] == ["set-00002.mp4", "sequence-00002.mp4"]
    assert h.training_clip(trained, "sprite") == trained.ws.clip("sprite.mp4")
    assert h.concept_prompt(trained, "sprite") == "a [v] diamond on a blue background. it moves in [u] motion."


def test_generate_writes_a_result_that_stays_listed(trained):
    from setseq import data

    prompt = h.concept_prompt(trained, "sprite")
    out = h.job_result(h.submit_generate(trained, "sprite", prompt, seed=1, steps=2), timeout=600)
    assert out == trained.ws.run_dir("sprite") / "results" / "0001.mp4"
    assert data.load_video(out).frames.shape[0] == 4 and out.with_suffix(".png").is_file()
    still = h.job_result(h.submit_generate(trained, "sprite", prompt, 1.0, 0.0, seed=1, steps="2"), timeout=600)
    assert still.name == "0002.mp4"
    listed = h.results(h.Context(Workspace(trained.ws.root), Jobs()), "sprite")  # as a reloaded page sees it
    assert [r["video"].name for r in listed] == ["0002.mp4", "0001.mp4"]
    assert listed[0]["settings"]["motion_scale"] == 0.0
    with pytest.raises(SetseqError, match="--steps: takes a whole number >= 1"):
        h.submit_generate(trained, "sprite", prompt, steps="0")
    job = h.submit_generate(trained, "sprite", "a [x] thing.", steps=2)
    with pytest.raises(SetseqError, match=r"\[x\]"):
        h.job_result(job, timeout=600)


def test_export_writes_a_lora_in_the_run_folder(trained):
    from safetensors import safe_open

    (path,) = h.export(trained, "sprite", "diffusers", "identity")
    assert path == trained.ws.run_dir("sprite") / "exports" / "sprite-diffusers-identity.safetensors"
    with safe_open(str(path), "pt") as f:
        assert any(k.endswith("lora_A.weight") for k in f.keys())
    with pytest.raises(SetseqError, match="ComfyUI format is for Wan, LTX-Video"):
        h.export(trained, "sprite", "comfyui", "full")
    with pytest.raises(SetseqError, match="no concept file yet"):
        h.export(trained, "nothing", "diffusers", "full")


def test_a_run_the_cli_trained_shows_in_the_ui(trained, capsys):
    ws = trained.ws
    out = ws.run_dir("cli") / "cli.safetensors"
    out.parent.mkdir()
    clip = str(ws.clip("waves.mp4"))
    assert (
        main(
            [
                "train",
                clip,
                "--base",
                "toy-tiny",
                "--stage1-steps",
                "1",
                "--stage2-steps",
                "1",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "cli" in ws.runs()
    st = h.run_status(trained, "cli")
    assert st["state"] == "done" and [len(v) for v in st["losses"].values()] == [1, 1]
    assert os.path.samefile(h.training_clip(trained, "cli"), clip)


def test_a_concept_set_trains_together_and_composes_with_per_concept_scales(ctx):
    clips = ["waves.mp4", "flicker.mp4"]
    h.job_result(h.start_training(ctx, "pair", _argv(ctx, "pair", clips)), timeout=600)
    prompt = h.concept_prompt(ctx, "pair")
    assert all(t in prompt for t in ("[v1]", "[u1]", "[v2]", "[u2]"))
    out = h.job_result(h.submit_generate(ctx, "pair", prompt, scales="u1=1,u2=0", steps=2), timeout=600)
    assert h.results(ctx, "pair")[0]["settings"]["scales"] == "u1=1,u2=0" and out.is_file()
    job = h.submit_generate(ctx, "pair", prompt, scales="u3=1", steps=2)
    with pytest.raises(SetseqError, match="--scale names 'u3', which this concept set does not have"):
        h.job_result(job, timeout=600)
