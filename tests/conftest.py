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


def random_concept(bb, targets=None, rank=4, scale=0.5, seed=0):
    """Adapters with random (non-zero) basis, identity and two concepts' motion (named a and b), injected
    into `bb` and returned as a concept set."""
    import torch

    from setseq import concept as cio
    from setseq import lora

    layers = lora.inject(bb.transformer, targets or bb.lora_targets, rank, scale)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in layers.values():
            for c in ("a", "b"):
                layer.add_motion(c)
            for p in (layer.basis, layer.identity, *layer.motion.values()):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    bb.transformer.eval()
    meta = {
        "base": {"name": bb.name, "fingerprint": bb.fingerprint(), **cio.base_model(bb)},
        "rank": rank,
        "scale": scale,
        "concepts": [{"name": c, "identity_token": "[v]", "motion_token": f"[u{i}]"} for i, c in enumerate("ab")],
    }
    if getattr(bb, "experts", None):  # two experts (Wan 2.2 T2V-A14B): which module prefix is which
        meta["experts"] = bb.experts
    return cio.collect(bb, meta)
