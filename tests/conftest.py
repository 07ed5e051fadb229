import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub; models are built in code

from setseq.config import preset


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Prior-preservation videos go to a per-session cache, never the user's home."""
    monkeypatch.setenv("SETSEQ_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def tiny_backbone():
    from setseq.backbones import load_backbone

    return load_backbone("toy-tiny")


def tiny_config(method="setseq", steps=(3, 3), batch=2, prior=False, **reg):
    """A paper preset cut down to a few tiny steps."""
    cfg = preset(method)
    for stage, n in zip(cfg.stages, steps):
        stage.steps = n
    cfg.optim.batch_size = batch
    cfg.reg.prior_preservation = prior
    cfg.reg.prior_videos = 2
    cfg.reg.prior_steps = 2
    for k, v in reg.items():
        setattr(cfg.reg, k, v)
    cfg.checkpoint_every = 2
    return cfg
