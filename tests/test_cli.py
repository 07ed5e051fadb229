"""The command line: a tiny train -> generate round trip, and every bad input exits 2 cleanly."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from setseq import concept as cio
from setseq import data
from setseq.cli import main

TRAIN = [
    "--base",
    "toy-tiny",
    "--stage1-steps",
    "2",
    "--stage2-steps",
    "2",
    "--batch-size",
    "2",
    "--no-prior",
    "--quiet",
]
PROMPT = ["--prompt", "a [v] red square on a blue background.", "--motion-prompt", "it moves in [u] motion."]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("trained")
    video = data.make_test_video(d / "clip.mp4", frames=8, size=(16, 16))
    out = d / "sq.safetensors"
    # a high learning rate so that two steps move the adapters visibly past 8-bit video quantisation
    assert main(["train", str(video), *PROMPT, *TRAIN, "--lr", "2e-2", "--timestep-shift", "3", "--out", str(out)]) == 0
    return out


def test_train_writes_concept_and_stage_one(trained):
    assert trained.is_file() and trained.with_name("sq.stage1.safetensors").is_file()
    cs = cio.load(trained)
    assert cs.meta["method"] == "setseq" and cs.meta["base"]["name"] == "toy-tiny"
    assert cs.meta["config"]["optim"]["lr"] == 2e-2 and cs.meta["config"]["flow"]["shift"] == 3.0
    assert cs.concepts[0]["prompt"] == "a [v] red square on a blue background."
    assert not trained.with_name("sq.ckpt").exists()


def test_generate_warns_when_the_prompt_calls_up_none_of_the_concepts_tokens(trained, tmp_path, capsys):
    base = ["generate", str(trained), "--steps", "1"]
    assert main([*base, "--prompt", "a square on a green background.", "--out", str(tmp_path / "a.mp4")]) == 0
    assert "names none of the concept's tokens ([u], [v])" in capsys.readouterr().err
    assert main([*base, "--prompt", "a [v] on a green background.", "--out", str(tmp_path / "b.mp4")]) == 0
    assert "names none" not in capsys.readouterr().err


def test_generate_writes_a_playable_video(trained, tmp_path):
    out = tmp_path / "gen.mp4"
    args = [
        "generate",
        str(trained),
        "--prompt",
        "a [v] on a green background. it moves in [u] motion.",
        "--out",
        str(out),
        "--steps",
        "3",
        "--preview",
    ]
    assert main(args) == 0
    video = data.load_video(out)
    assert video.frames.shape[0] == 4 and video.frames.shape[-1] == 256  # 16 px upscaled to 256
    assert (tmp_path / "gen.gif").is_file()
    # the same seed gives the same video; the motion scale changes it
    again = tmp_path / "again.mp4"
    assert main([*args[:5], str(again), "--steps", "3"]) == 0
    assert torch.equal(data.load_video(again).frames, video.frames)
    still = tmp_path / "still.mp4"
    assert main([*args[:5], str(still), "--steps", "3", "--motion-scale", "0"]) == 0
    assert not torch.equal(data.load_video(still).frames, video.frames)


def test_info_describes_the_concept(trained, capsys):
    assert main(["info", str(trained)]) == 0
    out = capsys.readouterr().out
    assert "setseq" in out and "[v]" in out and "toy-tiny" in out and "sequence:" in out
    assert "identity basis" not in out  # only said of a concept trained with --train-basis


def test_train_basis_is_recorded_and_reported(tmp_path, capsys):
    video = data.make_test_video(tmp_path / "clip.mp4", frames=8, size=(16, 16))
    out = tmp_path / "free.safetensors"
    assert main(["train", str(video), *PROMPT, *TRAIN, "--train-basis", "--out", str(out)]) == 0
    stages = cio.load(out).meta["config"]["stages"]
    assert [st["train_basis"] for st in stages] == [False, True]
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert "also trained the identity basis" in capsys.readouterr().out


def test_prompts_come_from_the_txt_beside_the_video(tmp_path):
    video = data.make_test_video(tmp_path / "clip.mp4", frames=8, size=(16, 16))
    (tmp_path / "clip.txt").write_text("static: a [v] square.\nmotion: it moves in [u] motion.\n")
    assert main(["train", str(video), *TRAIN]) == 0
    assert cio.load(tmp_path / "clip.safetensors").concepts[0]["motion_prompt"] == "it moves in [u] motion."


def test_masks_come_from_beside_the_video_or_from_mask(tmp_path, monkeypatch):
    import setseq.run_checks

    seen = []
    real = setseq.run_checks.check_concepts
    monkeypatch.setattr(
        setseq.run_checks, "check_concepts", lambda cs, *a: (seen.append([c.mask for c in cs]), real(cs, *a))[1]
    )
    video = data.make_test_video(tmp_path / "clip.mp4", frames=8, size=(16, 16))
    frames = data.load_video(video).frames
    fg = (frames.mean(1, keepdim=True) > 0.3).float().expand_as(frames) * 2 - 1  # (F, 3, H, W) white on the square
    data.write_video(tmp_path / "fg.mp4", fg, 8)
    assert main(["train", str(video), *PROMPT, *TRAIN, "--mask", str(tmp_path / "fg.mp4")]) == 0
    data.write_video(tmp_path / "clip.mask.gif", fg, 8)
    assert main(["train", str(video), *PROMPT, *TRAIN]) == 0
    (explicit,), (beside,) = seen
    assert explicit.shape == beside.shape == (8, 16, 16) and torch.equal(explicit, beside)
    assert 0 < explicit.float().mean() < 0.5


def _bad_inputs(tmp: Path, trained: Path):
    video = data.make_test_video(tmp / "ok.mp4", frames=8, size=(16, 16))
    short = data.make_test_video(tmp / "short.mp4", frames=2, size=(16, 16))
    (tmp / "text.mp4").write_text("this is not a video")
    boxed = data.make_test_video(tmp / "boxed.mp4", frames=8, size=(16, 16))
    data.make_test_video(tmp / "boxed.mask.mp4", frames=8, size=(16, 32))  # found beside it; another shape
    (tmp / "junk.safetensors").write_bytes(b"\x00\x01 definitely not safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp / "foreign.safetensors"))
    damaged = _damaged_concepts(tmp, trained)
    (tmp / "named.toml").write_text(
        '[[concept]]\nvideo = "ok.mp4"\nname = "a.b"\n'
        'prompt = "a [v] square."\nmotion_prompt = "it moves in [u] motion."\n'
    )
    out = ["--out", str(tmp / "new.safetensors")]
    gen = ["--prompt", "a [v]", "--out", str(tmp / "new.mp4")]
    return {
        "missing video": ["train", str(tmp / "nope.mp4"), *PROMPT, *TRAIN, *out],
        "not a video": ["train", str(tmp / "text.mp4"), *PROMPT, *TRAIN, *out],
        "too few frames": ["train", str(short), *PROMPT, *TRAIN, *out],
        "prompt without token": [
            "train",
            str(video),
            "--prompt",
            "a red square",
            "--motion-prompt",
            "it moves [u].",
            *TRAIN,
            *out,
        ],
        "motion prompt without token": [
            "train",
            str(video),
            "--prompt",
            "a [v].",
            "--motion-prompt",
            "it moves.",
            *TRAIN,
            *out,
        ],
        "no prompt at all": ["train", str(video), *TRAIN, *out],
        "unknown method": ["train", str(video), *PROMPT, *TRAIN, *out, "--method", "magic"],
        "timestep shift of zero": ["train", str(video), *PROMPT, *TRAIN, *out, "--timestep-shift", "0"],
        "train basis without a motion stage": [
            "train",
            str(video),
            *PROMPT,
            *TRAIN,
            *out,
            "--method",
            "lora",
            "--train-basis",
        ],
        "bad output suffix": ["train", str(video), *PROMPT, *TRAIN, "--out", str(tmp / "new.bin")],
        "mask of another length": ["train", str(video), *PROMPT, *TRAIN, *out, "--mask", str(short)],
        "mask of another shape": ["train", str(boxed), *PROMPT, *TRAIN, *out],
        "missing mask": ["train", str(video), *PROMPT, *TRAIN, *out, "--mask", str(tmp / "nope.mask.mp4")],
        "mask given as the video": ["train", str(tmp / "boxed.mask.mp4"), *PROMPT, *TRAIN, *out],
        "missing concept": ["generate", str(tmp / "none.safetensors"), *gen],
        "corrupt concept": ["generate", str(tmp / "junk.safetensors"), *gen],
        "foreign concept": ["generate", str(tmp / "foreign.safetensors"), *gen],
        "concept for another base": ["generate", str(trained), "--base", "toy", *gen],
        "unknown token in prompt": ["generate", str(trained), "--prompt", "a [x]", "--out", str(tmp / "new.mp4")],
        "bad video suffix": ["generate", str(trained), "--prompt", "a [v]", "--out", str(tmp / "new.txt")],
        **{
            f"{how} concept to {cmd}": [cmd, str(file), *rest]
            for how, file in damaged.items()
            for cmd, rest in (
                ("generate", gen),
                ("info", []),
                ("export", ["--format", "diffusers", "--out", str(tmp / "l.safetensors")]),
            )
        },
        "negative --lr": ["train", str(video), *PROMPT, *TRAIN, *out, "--lr", "-1"],
        "--checkpoint-every 0": ["train", str(video), *PROMPT, *TRAIN, *out, "--checkpoint-every", "0"],
        "--frames 0": ["train", str(video), *PROMPT, *TRAIN, *out, "--frames", "0"],
        "--fps nan": ["train", str(video), *PROMPT, *TRAIN, *out, "--fps", "nan"],
        "--start -2": ["train", str(video), *PROMPT, *TRAIN, *out, "--start", "-2"],
        "--steps 0 to generate": ["generate", str(trained), *gen, "--steps", "0"],
        "--guidance inf to generate": ["generate", str(trained), *gen, "--guidance", "inf"],
        "--guidance-interval 0.7,0.2 to generate": ["generate", str(trained), *gen, "--guidance-interval", "0.7,0.2"],
        "concept name with a dot": ["train", "--concepts", str(tmp / "named.toml"), *TRAIN, *out],
    }


DAMAGES = [
    "adapter tensor removed",
    "extra tensor",
    "wrong shape",
    "non-finite value",
    "unreadable metadata",
    "bad geometry",
    "motion of an unknown concept",
]


def _damaged_concepts(tmp: Path, trained: Path) -> dict[str, Path]:
    """Copies of a good concept file, each damaged one way."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(trained), "pt") as f:
        header = f.metadata()
    tensors = load_file(str(trained))
    key = next(k for k in tensors if k.endswith(".identity"))
    motion = next(k for k in tensors if ".motion." in k)
    cases = {
        "adapter tensor removed": ({k: v for k, v in tensors.items() if k != key}, header),
        "extra tensor": ({**tensors, "optimizer.step": torch.zeros(1)}, header),
        "wrong shape": ({**tensors, key: tensors[key][:, :-1].contiguous()}, header),
        "non-finite value": ({**tensors, motion: torch.full_like(tensors[motion], float("nan"))}, header),
        "unreadable metadata": (tensors, {**header, "setseq": '{"base": {"name": "toy-tiny"}, "rank": "eight"}'}),
        "bad geometry": (
            tensors,
            {**header, "setseq": json.dumps({**json.loads(header["setseq"]), "geometry": {"frames": 0, "depth": 3}})},
        ),
        "motion of an unknown concept": (
            {**tensors, motion.rsplit(".", 1)[0] + ".stranger": tensors[motion].clone()},
            header,
        ),
    }
    out = {}
    for i, (how, (t, h)) in enumerate(cases.items()):
        out[how] = tmp / f"damaged{i}.safetensors"
        save_file(t, str(out[how]), metadata=h)
    return out


BAD_CASES = [
    "missing video",
    "not a video",
    "too few frames",
    "prompt without token",
    "motion prompt without token",
    "no prompt at all",
    "unknown method",
    "timestep shift of zero",
    "train basis without a motion stage",
    "bad output suffix",
    "mask of another length",
    "mask of another shape",
    "missing mask",
    "mask given as the video",
    "missing concept",
    "corrupt concept",
    "foreign concept",
    "concept for another base",
    "unknown token in prompt",
    "bad video suffix",
    *[f"{how} concept to {cmd}" for how in DAMAGES for cmd in ("generate", "info", "export")],
    "negative --lr",
    "--checkpoint-every 0",
    "--frames 0",
    "--fps nan",
    "--start -2",
    "--steps 0 to generate",
    "--guidance inf to generate",
    "--guidance-interval 0.7,0.2 to generate",
    "concept name with a dot",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_exits_2_with_one_sentence_and_leaves_nothing(case, trained, tmp_path):
    args = _bad_inputs(tmp_path, trained)[case]
    before = set(tmp_path.iterdir())
    proc = subprocess.run(
        [sys.executable, "-m", "setseq.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "SETSEQ_CACHE": str(tmp_path / "cache")},
    )
    assert proc.returncode == 2, proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("setseq: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert set(tmp_path.iterdir()) == before
    if case.startswith("-"):  # a flag's range: the sentence names the flag and what it takes
        assert case.split()[0] in errors[0] and "takes" in errors[0], errors[0]


def test_sigkilled_run_resumes_to_the_same_result(tmp_path):
    video = data.make_test_video(tmp_path / "clip.mp4", frames=8, size=(16, 16))
    steps = ["--stage1-steps", "30", "--stage2-steps", "30", "--checkpoint-every", "5"]
    common = [
        sys.executable,
        "-m",
        "setseq.cli",
        "train",
        str(video),
        *PROMPT,
        "--base",
        "toy-tiny",
        "--batch-size",
        "2",
        "--no-prior",
        "--quiet",
        *steps,
    ]
    env = {**os.environ, "SETSEQ_CACHE": str(tmp_path / "cache")}
    subprocess.run([*common, "--out", str(tmp_path / "full.safetensors")], check=True, env=env, capture_output=True)
    proc = subprocess.Popen(
        [*common, "--out", str(tmp_path / "cut.safetensors")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpt = tmp_path / "cut.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ckpt.is_file() and torch.load(ckpt, weights_only=False)["stage"] == 1:  # killed inside stage 2
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "cut.safetensors").exists()
    subprocess.run(
        [*common, "--out", str(tmp_path / "cut.safetensors"), "--resume"], check=True, env=env, capture_output=True
    )
    full, cut = cio.load(tmp_path / "full.safetensors"), cio.load(tmp_path / "cut.safetensors")
    assert full.tensors.keys() == cut.tensors.keys()
    assert all(torch.equal(full.tensors[k], cut.tensors[k]) for k in full.tensors)


# -------------------------------------------------------------------------- inputs from the field (2026-11-30)


def test_names_are_data_a_clip_named_train(tmp_path):
    # concept names once were nn.ParameterDict keys: "train" collided with Module.train
    video = data.make_test_video(tmp_path / "train.mp4", frames=8, size=(16, 16))
    assert main(["train", str(video), *PROMPT, *TRAIN]) == 0
    cs = cio.load(tmp_path / "train.safetensors")
    assert cs.concepts[0]["name"] == "train" and any(k.endswith(".motion.train") for k in cs.tensors)
    out = tmp_path / "gen.gif"
    assert (
        main(
            [
                "generate",
                str(tmp_path / "train.safetensors"),
                "--prompt",
                "a [v]. it moves in [u] motion.",
                "--out",
                str(out),
                "--steps",
                "2",
                "--scale",
                "train=0.5",
            ]
        )
        == 0
    )


def test_resume_after_a_non_finite_loss_with_a_lower_lr(tmp_path, monkeypatch, capsys):
    from setseq import flow

    video = data.make_test_video(tmp_path / "clip.mp4", frames=8, size=(16, 16))
    args = [
        "train",
        str(video),
        *PROMPT,
        *TRAIN[:-4],
        "--stage1-steps",
        "6",
        "--no-prior",
        "--quiet",
        "--checkpoint-every",
        "2",
        "--lr",
        "1e-2",
    ]
    real, calls = flow.loss_per_sample, []

    def blows_up(*a):
        calls.append(1)
        loss = real(*a)
        return loss * float("nan") if len(calls) > 5 else loss  # step 6 of 2-sample steps (batch 2, one pass)

    monkeypatch.setattr(flow, "loss_per_sample", blows_up)
    assert main(args) == 2
    advice = capsys.readouterr().err
    assert "--resume" in advice and "lower --lr" in advice and (tmp_path / "clip.ckpt").is_file()
    monkeypatch.setattr(flow, "loss_per_sample", real)
    assert main([*args[:-1], "1e-3", "--resume"]) == 0  # the advice works
    err = capsys.readouterr().err
    assert "resuming with --lr 0.001; the checkpoint was made at 0.01" in err
    assert cio.load(tmp_path / "clip.safetensors").meta["config"]["optim"]["lr"] == 1e-3
    # a change other than the rates still refuses
    calls.clear()
    monkeypatch.setattr(flow, "loss_per_sample", blows_up)
    assert main(args) == 2
    monkeypatch.setattr(flow, "loss_per_sample", real)
    capsys.readouterr()
    assert main([*args[:-1], "1e-3", "--resume", "--rank", "4"]) == 2
    assert "another configuration" in capsys.readouterr().err


def _seen_specs(monkeypatch):
    import setseq.run_checks

    seen = []
    real = setseq.run_checks.check_concepts
    monkeypatch.setattr(setseq.run_checks, "check_concepts", lambda cs, *a: (seen.append(list(cs)), real(cs, *a))[1])
    return seen


def test_alpha_is_the_mask_and_uppercase_sidecars_are_read(tmp_path, monkeypatch, capsys):
    import av
    import numpy as np

    seen = _seen_specs(monkeypatch)
    with av.open(str(tmp_path / "MATTE.WEBM"), "w") as c:  # a matted subject: left half opaque
        s = c.add_stream("libvpx-vp9", rate=8, options={"crf": "20", "b": "0"})
        s.width, s.height, s.pix_fmt = 16, 16, "yuva420p"
        for _ in range(8):
            img = np.zeros((16, 16, 4), np.uint8)
            img[:, :8] = (200, 30, 30, 255)
            img[:, 8:] = (0, 255, 0, 0)
            c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgba")))
        c.mux(s.encode(None))
    (tmp_path / "MATTE.TXT").write_text("static: a [v] square.\nmotion: it moves in [u] motion.\n")
    assert main(["train", str(tmp_path / "MATTE.WEBM"), *TRAIN]) == 0
    assert "its alpha channel" in capsys.readouterr().err
    (spec,) = seen[0]
    assert spec.mask is not None and spec.mask[:, :, :6].all() and not spec.mask[:, :, 10:].any()


def test_excerpt_flags_and_settings(tmp_path, monkeypatch):
    seen = _seen_specs(monkeypatch)
    video = data.make_test_video(tmp_path / "long.mp4", frames=40, size=(16, 16))  # 5 s at 8 fps; toy-tiny: 4 frames
    assert main(["train", str(video), *PROMPT, *TRAIN, "--select", "windows", "--windows", "3"]) == 0
    (tmp_path / "long.txt").write_text("a [v] square. it moves in [u] motion.\nstart: 1\nduration: 2\n")
    assert main(["train", str(video), *TRAIN]) == 0
    assert main(["train", str(video), *TRAIN, "--select", "head"]) == 0  # flags and the .txt's settings combine
    (windowed,), (cut,), (head,) = seen
    assert windowed.video.shape[0] == 12 and windowed.windows == [0, 4, 8]
    assert cut.video.shape[0] == 16 and cut.windows is None  # 1 s to 3 s at 8 fps
    full = data.load_video(video, fps=8, size=(16, 16)).frames
    assert torch.equal(cut.video, full[8:24]) and torch.equal(head.video, full[8:12])


def test_base_toy_trains_with_the_toy_preset_and_says_so(tmp_path, capsys):
    """`--base toy` without --method takes the toy preset (the paper's method at the toy scale) and
    says so; --method setseq keeps the paper's numbers."""
    video = data.make_test_video(tmp_path / "clip.mp4", frames=8, size=(32, 32))
    common = [*PROMPT, "--base", "toy", "--stage1-steps", "1", "--stage2-steps", "1", "--no-prior"]
    out = tmp_path / "toy.safetensors"
    assert main(["train", str(video), *common, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "'toy' preset" in err and "--method setseq" in err
    assert "1 + 1 steps" in err  # the numbers the run uses, flags included
    config = cio.load(out).meta["config"]
    assert config["method"] == "toy" and config["optim"]["lr"] == 1e-3
    assert [s["train"] for s in config["stages"]] == ["identity", "motion"]
    assert not any(s["train_basis"] for s in config["stages"])  # stage 2 trains B2 only
    paper = tmp_path / "paper.safetensors"
    assert main(["train", str(video), *common, "--method", "setseq", "--out", str(paper)]) == 0
    assert "'toy' preset" not in capsys.readouterr().err
    assert cio.load(paper).meta["config"]["optim"]["lr"] == 1e-4
