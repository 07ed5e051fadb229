"""Base-model quality on the toy world: generate from held-out captions, read the pixels back.

The held-out split holds attribute combinations never seen in pretraining, so this measures
whether the model composes attributes from text rather than recalling clips.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from setseq.backbones.base import Backbone
from setseq.generate import generate
from setseq.toy import checker, world


def attribute_accuracy(backbone: Backbone, n: int = 100, seed: int = 0, batch: int = 25,
                       steps: int | None = None, guidance: float | None = None,
                       progress: bool = True) -> dict:
    """Accuracy of background, colour, camera and direction over `n` held-out captions.

    Returns:
        {"n": n, "accuracy": {attribute: share correct}, "mean": mean over attributes,
         "samples": [{caption, found, correct}, ...]}.
    """
    rng = np.random.default_rng(seed)
    scenes = [world.sample_scene(rng, "heldout") for _ in range(n)]
    captions = [world.caption_text(s) for s in scenes]
    videos = []
    for i in tqdm(range(0, n, batch), desc="held-out captions", disable=not progress):
        videos.append(generate(backbone, captions[i:i + batch], steps=steps, guidance=guidance, seed=seed + i))
    videos = torch.cat(videos)
    acc = checker.accuracy(videos, scenes)
    samples = []
    for cap, video, scene in zip(captions, videos, scenes):
        found = checker.check(video)
        samples.append({"caption": cap, "correct": checker.score(video, scene),
                        "found": {k: found[k] for k in ("background", "color", "direction", "camera")}})
    return {"n": n, "accuracy": acc, "mean": float(np.mean(list(acc.values()))), "samples": samples}


OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def motion_words(backbone: Backbone, n: int = 32, start: float = 0.7, seed: int = 0,
                 steps: int | None = None, guidance: float | None = None) -> dict:
    """Does the model read a caption's motion words, or only the clip in front of it?

    n training-split sprites moving left, right, up or down (camera still) are rendered, noised to
    `start` with one noise draw, and denoised three times: under their own caption, under the
    caption with the opposite direction, and under the appearance caption alone. The checker reads
    each result's direction. A model that reads the words turns part of the clips round under the
    opposite caption; one that does not gives the same shares under all three captions.

    Returns:
        {"n", "start", "rows": {caption: {"true": share moving the true way, "captioned": share
         moving the way the caption says (None for the appearance caption, which says none),
         "still": share read as still}}}.
    """
    rng = np.random.default_rng(seed)
    scenes = []
    while len(scenes) < n:
        s = world.sample_scene(rng, "train")
        if s.kind == "sprite" and s.motion in OPPOSITE:
            scenes.append(world.edit_scene(s, camera="still"))
    g = backbone.geometry
    clips = torch.stack([world.render(s, g.frames, g.height, g.width).video for s in scenes])
    # (captions, the direction each says; None: the caption names no motion)
    variants = {
        "true": ([world.caption_text(s) for s in scenes], [s.motion for s in scenes]),
        "opposite": ([world.caption_text(world.edit_scene(s, motion=OPPOSITE[s.motion])) for s in scenes],
                     [OPPOSITE[s.motion] for s in scenes]),
        "appearance only": ([world.caption(s)[0] for s in scenes], None),
    }
    rows = {}
    for name, (captions, said) in variants.items():
        # The same seed for every caption: the three runs start from the very same noised clips.
        videos = generate(backbone, captions, steps=steps, guidance=guidance, seed=seed, init=clips, start=start)
        found = [checker.check(v)["direction"] for v in videos]
        rows[name] = {"true": float(np.mean([f == s.motion for f, s in zip(found, scenes)])),
                      "captioned": None if said is None else float(np.mean([f == d for f, d in zip(found, said)])),
                      "still": float(np.mean([f == "still" for f in found]))}
    return {"n": n, "start": start, "rows": rows}
