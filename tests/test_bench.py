"""`setseq bench ablation --quick`: every paper row trains, is scored, and lands in the table."""

import csv
import json

import pytest

from setseq.bench import ROWS, summarise
from setseq.cli import main


def test_quick_ablation_writes_table_plot_and_page(tmp_path):
    out = tmp_path / "abl"
    assert main(["bench", "ablation", "--quick", "--base", "toy-tiny", "--out", str(out)]) == 0
    with open(out / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == [r.label for r in ROWS]
    records = json.loads((out / "records.json").read_text())["records"]
    assert len(records) == len(ROWS) * 3  # reconstruction + 2 edits per row
    assert all(0.0 <= r["mse"] for r in records)
    assert "<svg" in (out / "scatter.svg").read_text()
    page = (out / "index.html").read_text()
    assert page.count("<video") == len(records)
    assert page.count("<svg") == 2 and "identity on the edits (0..1" in page  # both scatter plots


def test_ablation_resumes_from_its_finished_jobs_and_redoes_jobs_of_other_settings(tmp_path, monkeypatch):
    import setseq.bench as bench

    out, rows = tmp_path / "abl", ROWS[:2]
    kw = dict(concepts=["sprite"], seeds=[0], base="toy-tiny", step_scale=0.005, batch_size=2, sample_steps=2, edits=1)
    first = bench.run_ablation(out, rows=rows, progress=False, **kw)
    assert len(list((out / "jobs").glob("*.json"))) == len(rows)
    trained = []
    real = bench._train
    monkeypatch.setattr(bench, "_train", lambda row, *a: trained.append(row.label) or real(row, *a))
    again = bench.run_ablation(out, rows=rows, progress=False, **kw)
    assert trained == [] and again["records"] == first["records"]  # nothing trained again, same table
    assert again["meta"]["seconds"] == first["meta"]["seconds"]
    bench.run_ablation(out, rows=rows[:1], progress=False, **{**kw, "sample_steps": 3})
    assert trained == [rows[0].label]  # other settings: that job is done again


def test_a_benchmark_stopped_inside_a_job_continues_it_from_its_checkpoint(tmp_path, monkeypatch):
    """SIGTERM in the middle of a job's training writes its checkpoint; running the benchmark again
    trains only the steps that were left, where a fresh start would train them all again."""
    import os
    import signal

    import setseq.bench as bench
    from setseq.preempt import Preempted
    from setseq.train import Trainer

    out = tmp_path / "abl"
    kw = dict(concepts=["sprite"], seeds=[0], base="toy-tiny", step_scale=0.012, batch_size=2, sample_steps=2, edits=1)
    real, steps = Trainer._step, []

    def step_then_stop(self, *a):
        loss = real(self, *a)
        steps.append(1)
        if len(steps) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    monkeypatch.setattr(Trainer, "_step", step_then_stop)
    with pytest.raises(Preempted, match="run the same benchmark command again to continue"):
        bench.run_ablation(out, rows=ROWS[:1], progress=False, **kw)
    assert len(list(out.rglob("*.ckpt"))) == 1 and not list((out / "jobs").glob("*.json"))
    steps.clear()
    monkeypatch.setattr(Trainer, "_step", lambda self, *a: steps.append(1) or real(self, *a))
    result = bench.run_ablation(out, rows=ROWS[:1], progress=False, **kw)
    stages = bench._config(ROWS[0].method, ROWS[0].rank, "paper").stages  # toy-tiny trains at the paper's scale
    total = sum(max(1, round(s.steps * kw["step_scale"])) for s in stages)
    assert total > 3 and len(steps) == total - 3  # only what was left
    assert result["records"] and not list(out.rglob("*.ckpt"))


def test_summary_averages_runs_and_separates_reconstruction_from_edits():
    rec = lambda seed, out, mse, edit: {
        "row": "LoRA-1",
        "concept": "sprite",
        "seed": seed,
        "output": out,
        "mse": mse,
        "identity": 1.0,
        "motion": 1.0,
        "edit": edit,
        "tc": 1.0,
    }
    records = [
        rec(0, "reconstruction", 0.1, None),
        rec(0, "background: green", 0.9, 1.0),
        rec(1, "reconstruction", 0.3, None),
        rec(1, "background: green", 0.9, 0.0),
    ]
    s = summarise(records, ROWS[:1])["LoRA-1"]
    assert s["recon_mse"] == pytest.approx((0.2, 0.1))  # the edits' MSE does not count as reconstruction
    assert s["edit"] == pytest.approx((0.5, 0.5))


def test_quick_leakage_compares_no_stitching_stitching_and_one_background(tmp_path):
    out = tmp_path / "leak"
    assert main(["bench", "leakage", "--quick", "--base", "toy-tiny", "--out", str(out)]) == 0
    result = json.loads((out / "leakage.json").read_text())
    summary = result["summary"]
    assert result["scale"] == "paper"  # not the toy base: the paper's presets
    assert [s["arm"] for s in summary] == ["no stitching", "stitched", "stitched + background removed"]
    assert [(s["stitch_prob"], s["background_removed"]) for s in summary] == [(0.0, False), (0.2, False), (0.2, True)]
    # each of 3 outputs (waves alone, flicker alone, both) scored against both concepts, per arm
    assert len(result["records"]) == 3 * 3 * 2
    assert (out / "pair-stitch0.2-s0.safetensors").is_file() and (out / "pair-stitch0.2-nobg-s0.safetensors").is_file()
    assert len(list((out / "jobs").glob("*.json"))) == 3  # one kept job per arm: a stopped run goes on


def test_toy_scale_rows_name_their_ranks_and_train_the_toy_presets_numbers():
    from setseq.bench import _config, row_label
    from setseq.config import preset

    assert [row_label(r, "toy") for r in ROWS][:2] == ["LoRA-1 (rank 8)", "LoRA-8 (rank 64)"]
    assert [row_label(r, "toy") for r in ROWS][2:] == [r.label for r in ROWS[2:]]
    assert [row_label(r, "paper") for r in ROWS] == [r.label for r in ROWS]
    # the Set-and-Sequence row at toy scale trains what `setseq train --base toy` does
    assert _config("setseq", 8, "toy").to_dict() == {**preset("toy").to_dict(), "method": "setseq"}
    paper = _config("lora", 1, "paper")
    assert paper.lora.rank == 1 and [s.steps for s in paper.stages] == [550]


def test_bench_scale_defaults_to_toy_on_the_toy_base_and_refuses_unknown_scales(capsys):
    import argparse

    from setseq.bench import run_leakage
    from setseq.cli.bench import _scales
    from setseq.errors import SetseqError

    ns = lambda **kw: argparse.Namespace(**{"scale": None, "step_scale": None, **kw})
    assert _scales(ns(base="toy")) == _scales(ns(base="toy-v2")) == ("toy", 1.0)
    assert _scales(ns(base="toy-tiny")) == ("paper", 0.25)
    assert _scales(ns(base="toy", scale="paper", step_scale=0.5)) == ("paper", 0.5)
    with pytest.raises(SetseqError, match="unknown scale"):
        run_leakage("unused", scale="huge")
    with pytest.raises(SystemExit) as exit:  # argparse: usage and one sentence, exit code 2
        main(["bench", "ablation", "--scale", "huge", "--out", "unused"])
    assert exit.value.code == 2 and "invalid choice" in capsys.readouterr().err
