"""Training configuration: stages addressable by name in a config file, --dropout on the command line."""

import pytest

from setseq.cli import build_parser, main
from setseq.cli.train import config_from_args
from setseq.config import load_config, preset
from setseq.errors import SetseqError


def _toml(tmp_path, text):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_a_stage_table_changes_only_that_stage(tmp_path):
    cfg = load_config(_toml(tmp_path, "[stages.sequence]\ncoef_dropout = 0.3\nsteps = 1200\n"), "setseq")
    ref = preset("setseq")
    assert cfg.stages[1].coef_dropout == 0.3 and cfg.stages[1].steps == 1200
    assert cfg.stages[0] == ref.stages[0]  # the set stage is the preset's
    assert (cfg.stages[1].data, cfg.stages[1].prompt, cfg.stages[1].train) == ("clip", "full", "motion")
    cfg = load_config(_toml(tmp_path, 'method = "lora"\n[stages.lora]\nsteps = 7\n'))
    assert [(s.name, s.steps) for s in cfg.stages] == [("lora", 7)]


def test_a_stages_list_still_replaces_the_whole_list(tmp_path):
    text = '[[stages]]\nname = "only"\ndata = "clip"\nprompt = "full"\ntrain = "identity"\nsteps = 5\n'
    cfg = load_config(_toml(tmp_path, text), "setseq")
    assert [(s.name, s.steps, s.coef_dropout) for s in cfg.stages] == [("only", 5, 0.0)]


@pytest.mark.parametrize(
    "text, message",
    [
        ("[stages.sequnce]\ncoef_dropout = 0.3\n", r"has no stage 'sequnce'; its stages are set, sequence\."),
        ("[stages.sequence]\ncoef_dropuot = 0.3\n", r"unknown setting stages\.sequence\.'coef_dropuot'"),
        ('[stages.sequence]\ncoef_dropout = "high"\n', r"'stages\.sequence\.coef_dropout' .* takes a number"),
        ("[stages.sequence]\nsteps = 1.5\n", r"'stages\.sequence\.steps' .* takes a whole number, got 1\.5"),
        ("[stages]\nsequence = 3\n", r"stages\.sequence must be a table"),
        ("compile = 1\n", r"'compile' .* takes true or false"),
    ],
)
def test_bad_stage_settings_are_one_sentence(tmp_path, text, message):
    with pytest.raises(SetseqError, match=message):
        load_config(_toml(tmp_path, text), "setseq")


def test_a_dropout_out_of_range_in_a_stage_table_is_refused_by_validate(tmp_path):
    cfg = load_config(_toml(tmp_path, "[stages.set]\ncoef_dropout = 1.5\n"), "setseq")
    with pytest.raises(SetseqError, match=r"stage 'set' has dropout 1\.5; use a value in \[0, 1\)"):
        cfg.validate()


def _config(*flags):
    return config_from_args(build_parser().parse_args(["train", "x.mp4", "--method", "setseq", *flags]))


def test_dropout_flag_sets_each_stage_and_wins_over_the_file(tmp_path):
    cfg = _config("--dropout", "0.3,0.1")
    assert [s.coef_dropout for s in cfg.stages] == [0.3, 0.1]
    assert [s.coef_dropout for s in _config().stages] == [0.8, 0.5]  # the paper's, untouched without the flag
    path = _toml(tmp_path, "[stages.sequence]\ncoef_dropout = 0.2\n")
    assert [s.coef_dropout for s in _config("--config", str(path)).stages] == [0.8, 0.2]
    assert [s.coef_dropout for s in _config("--config", str(path), "--dropout", "0,0.4").stages] == [0.0, 0.4]
    cfg = config_from_args(build_parser().parse_args(["train", "x.mp4", "--method", "lora", "--dropout", "0.25"]))
    assert cfg.stages[0].coef_dropout == 0.25


def test_dropout_flag_errors_exit_2_with_one_sentence(tmp_path, capsys):
    video = tmp_path / "x.mp4"
    video.write_bytes(b"")  # never read: the flags are refused first
    for value in ("0.3,1.0", "a,b", "-0.1", ""):
        with pytest.raises(SystemExit) as e:
            main(["train", str(video), "--dropout", value])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "argument --dropout: takes one number in [0, 1) per stage" in err and err.count("\n") == 1
    assert main(["train", str(video), "--method", "setseq", "--dropout", "0.3"]) == 2
    err = capsys.readouterr().err
    assert "--dropout takes one value per stage and method 'setseq' has 2 (set, sequence); got 1." in err
    assert "Traceback" not in err
    path = _toml(tmp_path, "[stages.sequnce]\ncoef_dropout = 0.3\n")
    assert main(["train", str(video), "--method", "setseq", "--config", str(path)]) == 2
    assert "has no stage 'sequnce'" in capsys.readouterr().err


def test_gradient_checkpointing_is_on_by_default_and_set_by_file_or_flag(tmp_path):
    assert _config().gradient_checkpointing is True
    path = _toml(tmp_path, "gradient_checkpointing = false\n")
    assert _config("--config", str(path)).gradient_checkpointing is False
    assert _config("--config", str(path), "--gradient-checkpointing").gradient_checkpointing is True
    assert _config("--no-gradient-checkpointing").gradient_checkpointing is False
    with pytest.raises(SetseqError, match="takes true or false"):
        _config("--config", str(_toml(tmp_path, "gradient_checkpointing = 1\n")))


def test_a_checkpoint_from_before_the_expert_setting_resumes():
    from setseq.checkpoint import learning
    from setseq.config import preset

    now = preset("setseq").to_dict()
    before = {**now, "flow": {k: v for k, v in now["flow"].items() if k != "experts"}}
    assert learning(before) == learning(now)
    assert learning({**now, "flow": {**now["flow"], "experts": "shared"}}) != learning(now)


@pytest.mark.parametrize(("base", "method"), [("toy", "toy"), ("toy-v2", "toy"), ("toy-tiny", "setseq")])
def test_each_pretrained_toy_base_defaults_to_the_toy_preset(base, method, capsys):
    """The pretrained embedded bases train at the toy scale unless --method says otherwise, and say
    so naming the base; the random toy-tiny (tests) keeps the paper's preset."""
    cfg = config_from_args(build_parser().parse_args(["train", "x.mp4", "--base", base]))
    assert cfg.method == method
    assert cfg.to_dict() == preset(method).to_dict()
    said = capsys.readouterr().err
    assert (f"--base {base} trains with the 'toy' preset" in said) == (method == "toy")
