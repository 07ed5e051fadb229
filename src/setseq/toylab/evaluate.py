"""Base-model quality on the toy world: generate from held-out captions, read the pixels back.

The held-out split holds attribute combinations never seen in pretraining, so this measures
whether the model composes attributes from text rather than recalling clips.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from setseq import flow
from setseq.backbones.base import Backbone
from setseq.generate import generate
from setseq.toy import checker, world


def attribute_accuracy(
    backbone: Backbone,
    n: int = 100,
    seed: int = 0,
    batch: int = 25,
    steps: int | None = None,
    guidance: float | None = None,
    progress: bool = True,
) -> dict:
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
        videos.append(generate(backbone, captions[i : i + batch], steps=steps, guidance=guidance, seed=seed + i))
    videos = torch.cat(videos)
    acc = checker.accuracy(videos, scenes)
    samples = []
    for cap, video, scene in zip(captions, videos, scenes):
        found = checker.check(video)
        samples.append(
            {
                "caption": cap,
                "correct": checker.score(video, scene),
                "found": {k: found[k] for k in ("background", "color", "direction", "camera")},
            }
        )
    return {"n": n, "accuracy": acc, "mean": float(np.mean(list(acc.values()))), "samples": samples}


OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def motion_words(
    backbone: Backbone,
    n: int = 32,
    start: float = 0.7,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
) -> dict:
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
        "opposite": (
            [world.caption_text(world.edit_scene(s, motion=OPPOSITE[s.motion])) for s in scenes],
            [OPPOSITE[s.motion] for s in scenes],
        ),
        "appearance only": ([world.caption(s)[0] for s in scenes], None),
    }
    rows = {}
    for name, (captions, said) in variants.items():
        # The same seed for every caption: the three runs start from the very same noised clips.
        videos = generate(backbone, captions, steps=steps, guidance=guidance, seed=seed, init=clips, start=start)
        found = [checker.check(v)["direction"] for v in videos]
        rows[name] = {
            "true": float(np.mean([f == s.motion for f, s in zip(found, scenes)])),
            "captioned": None if said is None else float(np.mean([f == d for f, d in zip(found, said)])),
            "still": float(np.mean([f == "still" for f in found])),
        }
    return {"n": n, "start": start, "rows": rows}


_UNIT = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}


def _travel(videos: torch.Tensor, said: list[str]) -> np.ndarray:
    """Per clip, the least-squares speed (pixels a frame) of its foreground centroid along the
    direction `said` names. videos: (B, F, 3, H, W) in [-1, 1]. The foreground is soft: each
    pixel's distance from its row's median colour, so a faint, blurred estimate still counts."""
    out = []
    for video, d in zip(videos, said):
        rgb, backs = checker.row_backgrounds(video.clamp(-1, 1))
        weight = np.linalg.norm(rgb - backs, axis=-1)  # (F, H, W)
        f, h, w = weight.shape
        total = weight.sum((1, 2)) + 1e-8
        centre = np.stack(
            [(weight * np.arange(w)).sum((1, 2)) / total, (weight * np.arange(h)[:, None]).sum((1, 2)) / total], 1
        )  # (F, 2)
        slope = np.polyfit(np.arange(f), centre, 1)[0]  # (2,)
        out.append(float(slope @ np.array(_UNIT[d])))
    return np.array(out)


def direction_probe(backbone: Backbone, n: int = 16, t: float = 0.99, seed: int = 0) -> dict:
    """A one-step check of whether the model moves things the way their words say, from noise.

    n training-split sprites moving left, right, up and down (camera still, n / 4 each) are
    rendered and noised to t (0.99: almost pure noise); the model's clean estimate x0 is read under
    each clip's own caption and under the caption with the opposite direction, from the same noised
    clips. Motion is the foreground centroid's speed along the captioned direction (`_travel`).
    Cheap enough to log while pretraining; the full measure is `attribute_accuracy`.

    Returns:
        {"t", "n", "truth": mean speed of the rendered clips (pixels a frame),
         "own": of the estimates under their own captions, "opposite": under the opposite captions
         (along the opposite caption's direction), "follows": (own + opposite) / (2 truth):
         1 when the estimate moves as far as the truth the way the words say, 0 when the words do
         not move it (or, at high noise, when it does not move at all)}.
    """
    if n < 4 or n % 4:
        raise ValueError(f"n must be a positive multiple of 4, got {n}")
    rng = np.random.default_rng(seed)
    g = backbone.geometry
    scenes = []
    for d in [*_UNIT] * (n // 4):
        while True:
            s = world.sample_scene(rng, "train")
            if s.kind == "sprite":
                break
        scenes.append(world.edit_scene(s, motion=d, camera="still"))
    clips = torch.stack([world.render(s, g.frames, g.height, g.width).video for s in scenes])
    noise = torch.randn(clips.shape, generator=torch.Generator().manual_seed(seed))
    tt = torch.full((n,), float(t))
    x_t = flow.interpolate(clips, noise, tt)
    opposite = [OPPOSITE[s.motion] for s in scenes]
    result = {"t": float(t), "n": n, "truth": float(_travel(clips, [s.motion for s in scenes]).mean())}
    with torch.no_grad():
        for name, caps, said in (
            ("own", [world.caption_text(s) for s in scenes], [s.motion for s in scenes]),
            (
                "opposite",
                [world.caption_text(world.edit_scene(s, motion=o)) for s, o in zip(scenes, opposite)],
                opposite,
            ),
        ):
            x0 = flow.predict_x0(x_t, backbone.velocity(x_t, tt, backbone.encode_text(caps), None), tt)
            result[name] = float(_travel(x0, said).mean())
    result["follows"] = (result["own"] + result["opposite"]) / (2 * result["truth"])
    return result
