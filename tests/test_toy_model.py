"""The shipped toy base model: its weights load, and the demo runs on it end to end."""

import json

import pytest
import torch

from setseq.backbones import load_backbone
from setseq.backbones.toy import WEIGHTS_DIR
from setseq.cli import main
from setseq.generate import generate
from setseq.toy import checker, world

WEIGHTS = WEIGHTS_DIR / "toy.safetensors"
pytestmark = pytest.mark.skipif(not WEIGHTS.is_file(), reason="no pretrained toy weights in this checkout")


def test_shipped_weights_load_without_warning_and_fit_the_budget(capsys):
    bb = load_backbone("toy")
    assert "warning" not in capsys.readouterr().err
    assert WEIGHTS.stat().st_size <= 25 * 2**20
    assert bb.fingerprint() == load_backbone("toy").fingerprint()
    n = sum(p.numel() for p in bb.parameters())
    assert 1e6 < n < 1e7  # "a few million parameters"
    assert not any(p.requires_grad for p in bb.parameters())


def test_shipped_model_follows_simple_captions():
    """A pretrained model, unlike a random one, draws the background it is asked for."""
    bb = load_backbone("toy")
    scenes = [
        world.Scene(color=c, shape=s, background=b, motion=m)
        for c, s, b, m in [
            ("red", "square", "blue", "right"),
            ("yellow", "circle", "black", "left"),
            ("white", "diamond", "green", "up"),
            ("green", "cross", "white", "down"),
        ]
    ]
    videos = generate(bb, [world.caption_text(s) for s in scenes], steps=20, seed=0)
    found = [checker.check(v)["background"] for v in videos]
    assert sum(f == s.background for f, s in zip(found, scenes)) >= 3, found


def test_demo_quick_writes_report_metrics_and_videos(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--compose", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {r["model"] for r in metrics["outputs"]} == {"concept", "base"}
    assert len(metrics["outputs"]) == 8
    html = (out / "report.html").read_text()
    for i in range(4):
        for who in ("concept", "base"):
            assert (out / f"{i}-{who}.mp4").stat().st_size > 0
            assert f"{i}-{who}.mp4" in html
    assert (out / "sprite.safetensors").is_file() and "<svg" in html
    assert len(metrics["restyle_sweep"]) == 5 and "sweep-4.mp4" in html
    assert {r["against"] for r in metrics["composition"]["rows"]} == {"waves", "flicker"}
    assert (out / "waves+flicker.safetensors").is_file() and "compose-0.mp4" in html
    # every frame of every output, as images: one strip per output and one sheet of all of them
    from PIL import Image

    for i in range(4):
        assert f"{i}-frames.png" in html
        assert Image.open(out / f"{i}-frames.png").size[0] > 8 * 32  # eight frames side by side
    assert Image.open(out / "frames.png").size[1] > 5 * 32  # the training video and four outputs


V2 = WEIGHTS_DIR / "toy-v2.safetensors"


@pytest.mark.skipif(not V2.is_file(), reason="no toy-v2 weights in this checkout")
def test_v2_weights_are_the_last_phase_of_their_plan_on_the_presets_architecture(capsys):
    """`--base toy-v2` loads the shipped file of `setseq toy pretrain --plan v2`: bf16 storage within
    the 40 MB budget, the preset's architecture, and the plan's last phase recorded as its recipe."""
    from dataclasses import asdict

    from safetensors import safe_open

    from setseq.backbones.toy import PRESETS
    from setseq.toylab.plans import plan_phases

    bb = load_backbone("toy-v2")
    assert "warning" not in capsys.readouterr().err
    assert V2.stat().st_size <= 40 * 2**20
    assert 1e7 < sum(p.numel() for p in bb.parameters()) < 2e7
    assert bb.fingerprint() != load_backbone("toy").fingerprint()
    with safe_open(str(V2), "pt") as f:
        meta = f.metadata()
        assert {f.get_slice(k).get_dtype() for k in f.keys()} <= {"BF16", "I64"}
    arch = {k: v for k, v in json.loads(meta["config"]).items() if k != "vocab"}
    preset = PRESETS["toy-v2"][0].to_dict()
    assert {k: preset[k] for k in arch} == arch
    info = json.loads(meta["info"])
    last = json.loads(json.dumps(asdict(plan_phases("v2", "out")[-1][1])))
    assert info["plan"] == "v2" and info["pretrain"]["init"].endswith("4-camera-focus/toy.safetensors")
    assert {k: v for k, v in info["pretrain"].items() if k != "init"} == {k: v for k, v in last.items() if k != "init"}


def test_pretrain_defaults_are_the_recipe_of_the_shipped_weights():
    """The shipped model is six runs, each `--init` the one before: the defaults, then
    pretrain.CONTINUATION, MOTION_FOCUS, CONSOLIDATION, CAMERA_FOCUS and CAMERA_CONSOLIDATION
    (`setseq toy pretrain --recipe`, docs/toy-model.md). The weights file records the last one:
    the preset's architecture and the config's defaults with its changes."""
    from dataclasses import asdict

    from safetensors import safe_open

    from setseq.backbones.toy import PRESETS
    from setseq.toylab.pretrain import ARCH_OVERRIDES, CAMERA_CONSOLIDATION, PretrainConfig

    with safe_open(str(WEIGHTS), "pt") as f:
        meta = f.metadata()
    recorded = json.loads(meta["info"])["pretrain"]
    arch = {k: v for k, v in json.loads(meta["config"]).items() if k != "vocab"}
    preset = PRESETS["toy"][0].to_dict()
    assert {k: preset[k] for k in arch} == arch
    defaults = json.loads(json.dumps(asdict(PretrainConfig(**CAMERA_CONSOLIDATION))))  # tuples as JSON lists
    assert recorded["init"] is not None  # a continuation of the runs before it
    recorded["init"] = None
    overrides = set(ARCH_OVERRIDES)  # None means: the preset's
    assert all(defaults[k] is None for k in overrides)
    assert recorded["loss"] in (None, arch["prediction"]) and defaults["loss"] is None  # None: what it predicts
    # a field added after the run (e.g. one_mover) must sit at its default: it cannot have changed the run
    plain = json.loads(json.dumps(asdict(PretrainConfig())))
    later = {k for k in defaults if k not in recorded}
    assert all(defaults[k] == plain[k] for k in later)
    assert {k: v for k, v in defaults.items() if k not in overrides | {"loss"} | later} == {
        k: recorded[k] for k in defaults if k not in overrides | {"loss"} | later
    }


def test_motion_words_keeps_nearly_clean_clips_whatever_the_caption():
    """From t = 0.05 the clip decides: every caption, even the opposite direction's, must give the
    true direction back (this is what separates reading the clip from reading the words)."""
    from setseq.toylab.evaluate import motion_words

    r = motion_words(load_backbone("toy"), n=6, start=0.05, steps=2)
    assert set(r["rows"]) == {"true", "opposite", "appearance only"}
    for name, row in r["rows"].items():
        assert row["true"] >= 5 / 6, (name, row)
    assert r["rows"]["opposite"]["captioned"] <= 1 / 6  # it says the other way, the clip wins


def test_attribute_accuracy_confusion_agrees_with_accuracy(capsys, tmp_path):
    """The confusion table counts every clip an attribute applies to once, and its diagonal is the
    accuracy (a rough 2-step sample is enough: the check is bookkeeping, not quality)."""
    from setseq.toylab.evaluate import GRID_TOLERANCE, attribute_accuracy, sample_strip

    r = attribute_accuracy(load_backbone("toy"), n=12, steps=2, progress=False)
    for attr, rows in r["confusion"].items():
        applies = [s for s in r["samples"] if attr in s["correct"]]
        assert sum(sum(found.values()) for found in rows.values()) == len(applies)
        if applies:
            right = sum(found.get(truth, 0) for truth, found in rows.items())
            assert right / len(applies) == pytest.approx(r["accuracy"][attr])
    # Still, pans and zooms apart: weighted by their clips they make up the camera accuracy.
    counts = {k: sum("camera" in s["correct"] and s["caption"].count(w) > 0 for s in r["samples"])
              for k, w in (("pan", "pans"), ("zoom", "zooms"))}  # fmt: skip
    cameras = sum("camera" in s["correct"] for s in r["samples"])
    counts["still"] = cameras - counts["pan"] - counts["zoom"]
    assert set(r["by_camera"]) == {k for k, c in counts.items() if c}
    weighted = sum(share * counts[k] for k, share in r["by_camera"].items()) / cameras
    assert weighted == pytest.approx(r["accuracy"]["camera"])
    grids, truths = [s["grid"] for s in r["samples"]], [s["grid_truth"] for s in r["samples"]]
    sharp = sum(g <= GRID_TOLERANCE * t for g, t in zip(grids, truths)) / len(grids)
    assert r["grid"]["sharp"] == pytest.approx(sharp, abs=0.01) and min(truths) > 0
    args = [
        "toy",
        "eval",
        "-n",
        "4",
        "--steps",
        "2",
        "--guidance-interval",
        "0.3,1",
        "--frames",
        str(tmp_path / "f.png"),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "camera in the caption -> read from the clip:" in out and "patch grid" in out
    # The strip shows the same first captions, truth over sample: 8 rows of 32 px, 4 x, 2 px gaps.
    from PIL import Image

    assert Image.open(tmp_path / "f.png").size == ((8 * 34 - 2) * 4, (8 * 34 - 2) * 4)
    strip = sample_strip(load_backbone("toy"), tmp_path / "g.png", n=2, steps=2)
    assert [s["caption"] for s in strip] == [s["caption"] for s in r["samples"][:2]]
    assert [round(s["grid_truth"], 3) for s in strip] == [s["grid_truth"] for s in r["samples"][:2]]


def test_toy_eval_motion_words_cli(capsys):
    assert main(["toy", "eval", "--motion-words", "-n", "4", "--start", "0.05", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "opposite" in out and "appearance only" in out
    assert main(["toy", "eval", "--motion-words", "--start", "1.5"]) == 2
    assert main(["toy", "eval", "-n", "0"]) == 2


class _Painter:
    """A stand-in model whose clean estimate is a sprite drawn from the caption's direction word
    (or, with `deaf`, a sprite that stays still whatever the words say)."""

    def __init__(self, deaf: bool):
        from setseq.backbones.base import Geometry

        self.geometry, self.deaf = Geometry(frames=8, height=32, width=32, fps=8.0), deaf

    def encode_text(self, captions):
        return captions

    def velocity(self, x_t, t, captions, self_cond=None):
        from setseq.toy import world

        x0 = []
        for c in captions:
            motion = c.split(".")[1].split()  # the motion clause: "it moves to the left"
            said = next(d for d in ("left", "right", "up", "down") if d in motion)
            scene = world.edit_scene(world.Scene(), motion="still" if self.deaf else said, camera="still")
            x0.append(world.render(scene, 8, 32, 32).video)
        return (x_t - torch.stack(x0)) / t.view(-1, 1, 1, 1, 1)


def test_the_direction_probe_tells_a_model_that_follows_its_words_from_one_that_does_not():
    from setseq.toylab.evaluate import direction_probe

    follows = direction_probe(_Painter(deaf=False), n=8)
    deaf = direction_probe(_Painter(deaf=True), n=8)
    assert follows["truth"] > 0.5  # pixels a frame along the way the caption says
    assert follows["follows"] > 0.7
    assert abs(deaf["follows"]) < 0.1 and abs(deaf["own"]) < 0.1


def test_toy_eval_probe_cli(tmp_path, capsys):
    assert main(["toy", "eval", "--probe", "-n", "4", "--json", str(tmp_path / "p.json")]) == 0
    out = capsys.readouterr().out
    # per probe a title and a header (the camera's on two lines), then one row per noise level (camera:
    # one each for pans and zooms)
    assert "follows" in out and out.count("\n") == 2 + 3 + 3 + 6
    result = json.loads((tmp_path / "p.json").read_text())
    assert [p["t"] for p in result["probes"]] == [0.99, 0.9, 0.7] == [p["t"] for p in result["camera"]]
    assert main(["toy", "eval", "--probe", "-n", "6"]) == 2


class _CameraPainter(_Painter):
    """Paints, for each caption, a clean clip filmed by the camera its words name (deaf: always a
    still camera): a model whose estimate follows the camera words exactly, or not at all."""

    def velocity(self, x_t, t, captions, self_cond=None):
        from setseq.toy import world

        words = {"pans left": "pan-left", "pans right": "pan-right", "zooms in": "zoom-in", "zooms out": "zoom-out"}
        x0 = []
        for c in captions:
            said = next((cam for w, cam in words.items() if w in c), "still")
            scene = world.with_camera(world.Scene(), "still" if self.deaf else said)
            x0.append(world.render(scene, 8, 32, 32).video)
        return (x_t - torch.stack(x0)) / t.view(-1, 1, 1, 1, 1)


def test_the_camera_probe_tells_a_model_that_follows_its_camera_words_from_one_that_does_not():
    from setseq.toylab.evaluate import camera_probe

    follows = camera_probe(_CameraPainter(deaf=False), n=8)
    deaf = camera_probe(_CameraPainter(deaf=True), n=8)
    assert follows["pan"]["truth"] > 0.2 and follows["zoom"]["truth"] > 0.2  # frame widths; log ratio
    assert follows["follows"] > 0.7
    assert abs(deaf["follows"]) < 0.1 and abs(deaf["pan"]["own"]) < 0.05


def test_each_base_has_a_demo_plan_and_the_config_carries_it():
    """toy-v2 runs the demo on its own plan (steps moved to stage 1, timestep shift 3); every other
    base on the toy preset's; the training config is the preset with the plan's numbers in it."""
    from setseq import demo
    from setseq.config import preset

    assert demo.demo_plan("toy", False) is demo.FULL and demo.demo_plan("toy-tiny", True) is demo.QUICK
    toy = preset("toy")
    for quick in (False, True):
        plan = demo.demo_plan("toy-v2", quick)
        cfg = demo.demo_config(plan, seed=3)
        assert [s.steps for s in cfg.stages] == [plan.stage1_steps, plan.stage2_steps]
        assert cfg.flow.shift == plan.shift == 3.0 and cfg.seed == 3
        assert cfg.lora.rank == toy.lora.rank and cfg.optim.lr == toy.optim.lr  # the preset otherwise
    cfg = demo.demo_config(demo.FULL, seed=0)
    assert cfg.flow.shift == toy.flow.shift and [s.steps for s in cfg.stages] == [s.steps for s in toy.stages]
