"""`setseq toy pretrain`: trains from scratch, resumes, writes loadable weights."""

import torch

from setseq.backbones import load_backbone
from setseq.backbones.toy import load_file_weights
from setseq.cli import main


def test_pretraining_command_trains_resumes_and_writes_weights(tmp_path):
    args = ["toy", "pretrain", "--model", "toy-tiny", "--out", str(tmp_path), "--steps", "4", "--batch-size", "2"]
    assert main(args) == 0
    first = torch.load(tmp_path / "ckpt.pt", weights_only=False)["step"]
    assert main([*args[:-4], "--steps", "6", "--batch-size", "2", "--resume"]) == 0
    assert first == 4 and torch.load(tmp_path / "ckpt.pt", weights_only=False)["step"] == 6
    bb = load_backbone("toy-tiny")
    trained = load_file_weights(tmp_path / "toy-tiny.safetensors", "toy-tiny")
    assert trained.fingerprint() != bb.fingerprint()
