"""The toy world (scenes, rendering, captions, splits) and the pixel checker that scores clips."""

import itertools

import numpy as np
import pytest
import torch

from setseq.errors import SetseqError
from setseq.toy import checker, world
from setseq.toy.world import Scene


def scenes(n: int, split: str = "all", seed: int = 0) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [world.sample_scene(rng, split) for _ in range(n)]


def degrade(video: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """What a generator does to a clip: a slight [1, 2, 1] / 4 blur, then noise of std 0.1."""
    kernel = torch.tensor([0.25, 0.5, 0.25])
    x = torch.nn.functional.pad(video, (1, 1, 1, 1), mode="replicate")
    x = x[..., :, :-2] * kernel[0] + x[..., :, 1:-1] * kernel[1] + x[..., :, 2:] * kernel[2]
    x = x[..., :-2, :] * kernel[0] + x[..., 1:-1, :] * kernel[1] + x[..., 2:, :] * kernel[2]
    return x + 0.1 * torch.randn(x.shape, generator=generator)


def rgb_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pixel RGB distance in [0, 1] units between (F, 3, H, W) clips in [-1, 1]."""
    return ((a - b) / 2).norm(dim=1)


# ------------------------------------------------------------------------------------------
# determinism, shapes, speed


def test_same_scene_renders_identically_and_same_seed_samples_same_scenes():
    for scene in scenes(30) + [world.concept_scene(n) for n in world.CONCEPTS]:
        a, b = world.render(scene), world.render(scene)
        assert torch.equal(a.video, b.video) and torch.equal(a.mask, b.mask)
        assert torch.equal(a.trajectory.nan_to_num(-1), b.trajectory.nan_to_num(-1))
    assert scenes(50, seed=3) == scenes(50, seed=3)
    assert scenes(50, seed=3) != scenes(50, seed=4)


@pytest.mark.parametrize("size", [(8, 32, 32), (4, 16, 16), (3, 16, 24)])
def test_render_shapes_and_range(size):
    frames, height, width = size
    for scene in scenes(20):
        r = world.render(scene, frames, height, width)
        assert r.video.shape == (frames, 3, height, width) and r.video.dtype == torch.float32
        assert r.video.min() >= -1 and r.video.max() <= 1
        assert r.mask.shape == (frames, height, width) and r.mask.dtype == torch.bool
        assert r.trajectory.shape == (frames, 2)
        assert r.trajectory.isnan().all() == (scene.kind != "sprite")


# ------------------------------------------------------------------------------------------
# captions and vocabulary


def test_caption_mentions_the_scene_parameters():
    for scene in scenes(200):
        static, motion = world.caption(scene)
        words, motion_words = world.tokenize(static), world.tokenize(motion)
        assert static.endswith(".") and motion.endswith(".") and static == static.lower()
        assert world.caption_text(scene) == f"{static} {motion}"
        assert scene.color in words and scene.background in words
        if scene.background2 is not None:
            assert {scene.background2, "gradient"} <= set(words)
        if scene.kind == "sprite":
            assert scene.shape in words
            verb, rest = world.MOTION_PHRASES[scene.motion]
            assert verb in motion_words and set(world.tokenize(rest)) <= set(motion_words)
            camera = world.tokenize(world.CAMERA_PHRASES[scene.camera])
            assert set(camera) <= set(motion_words) and ("camera" in motion_words) == bool(camera)
        else:
            assert {"waves": "waves", "fire": "flames"}[scene.kind] in words
            assert scene.color2 in words
            if scene.kind == "waves":
                assert scene.motion in motion_words  # the direction they roll


def test_changing_a_parameter_changes_its_caption_part():
    scene = Scene(color="red", shape="triangle", texture="striped", background="blue",
                  motion="circle", camera="pan-left")  # fmt: skip
    assert world.caption(scene) == (
        "a red striped triangle on a blue background.",
        "it moves in a circle, as the camera pans left.",
    )
    recoloured = world.edit_scene(scene, color="green")
    assert world.caption(recoloured)[0] == "a green striped triangle on a blue background."
    assert world.caption(recoloured)[1] == world.caption(scene)[1]
    moved = world.edit_scene(scene, motion="left", camera="still")
    assert world.caption(moved) == (world.caption(scene)[0], "it moves to the left.")
    assert world.caption(world.edit_scene(scene, color="orange"))[0].startswith("an orange")


def test_vocabulary_is_exactly_the_tokens_of_captions_and_concept_prompts():
    vocab = world.vocabulary()
    assert vocab == sorted(set(vocab)) and {".", ","} <= set(vocab)
    texts = [world.caption_text(s) for s in scenes(500)]
    for name in world.CONCEPTS:
        texts += [world.caption_text(world.concept_scene(name)), *world.concept_prompts(name)]
    used = {tok for text in texts for tok in world.tokenize(text)} - set(world.CONCEPT_TOKENS)
    assert used <= set(vocab), used - set(vocab)
    assert set(vocab) <= used, set(vocab) - used  # no word the world never says


def test_tokenize_splits_off_punctuation():
    assert world.tokenize("it moves, as the camera pans left.") == [
        "it", "moves", ",", "as", "the", "camera", "pans", "left", ".",
    ]  # fmt: skip


def test_prior_prompts_are_seeded_training_captions():
    prompts = world.prior_prompts(6, seed=1)
    assert prompts == world.prior_prompts(6, seed=1) != world.prior_prompts(6, seed=2)
    assert prompts == [world.caption(s) for s in scenes(6, "train", seed=1)]


# ------------------------------------------------------------------------------------------
# splits and validation


def test_heldout_split_never_emits_train_scenes_and_vice_versa():
    train, heldout = scenes(300, "train"), scenes(300, "heldout")
    assert not any(world.is_heldout(s) for s in train)
    assert all(world.is_heldout(s) for s in heldout)
    # Both rules feed the held-out split.
    pairs = {(s.color, s.shape if s.kind == "sprite" else s.kind) for s in heldout}
    assert pairs & world.HELDOUT_COLOR_SHAPE
    assert {(s.motion, s.background) for s in heldout} & world.HELDOUT_MOTION_BACKGROUND
    # And the rule is about combinations: each part alone is seen in training.
    assert {s.color for s in train} == set(world.COLORS)
    assert {s.shape for s in train if s.kind == "sprite"} == set(world.SHAPES)
    assert world.is_heldout(Scene(color="red", shape="triangle", background="green"))
    assert world.is_heldout(Scene(color="red", motion="left", background="blue"))
    assert not world.is_heldout(Scene(color="red", shape="circle", background="blue"))


def test_edit_scene_validates():
    scene = Scene(color="red", background="blue")
    assert world.edit_scene(scene, camera="zoom-in").camera == "zoom-in"
    bad = [
        dict(colour="red"),  # unknown field
        dict(color="blue"),  # invisible on its own background
        dict(shape="hexagon"),
        dict(color="teal"),
        dict(texture="spots"),  # spots need color2 and color3
        dict(kind="waves", color2="white"),  # a sprite motion ("still") is not a wave motion
        dict(background2="blue"),
    ]
    for changes in bad:
        with pytest.raises(SetseqError):
            world.edit_scene(scene, **changes)
    with pytest.raises(SetseqError):
        world.sample_scene(np.random.default_rng(0), "test")


def test_palette_is_well_separated_and_tones_keep_their_colour_name():
    rgb = np.asarray([world.PALETTE[c] for c in world.COLORS])
    for i, j in itertools.combinations(range(len(rgb)), 2):
        assert np.linalg.norm(rgb[i] - rgb[j]) > 0.44, (world.COLORS[i], world.COLORS[j])
    for name in world.COLORS:
        tone = world._tone(name)
        assert world.COLORS[int(np.linalg.norm(rgb - tone, axis=1).argmin())] == name
        assert np.linalg.norm(tone - rgb[world.COLORS.index(name)]) > 0.15  # yet visibly different


# ------------------------------------------------------------------------------------------
# geometry: trajectories and masks


@pytest.mark.parametrize("motion,axis,sign", [("right", 0, 1), ("left", 0, -1), ("down", 1, 1), ("up", 1, -1)])
def test_linear_motion_moves_a_third_of_the_frame(motion, axis, sign):
    for speed in world.SPEED_RANGE:
        traj = world.render(Scene(motion=motion, speed=speed)).trajectory[:, axis]
        steps = sign * traj.diff()
        assert (steps > 0).all()
        assert steps.sum() > 0.25 * 32  # clearly visible: at least a quarter of the frame
    for camera in world.CAMERAS:  # a camera move can slow it down on screen, never reverse it
        traj = world.render(Scene(motion=motion, speed=0.75, camera=camera)).trajectory[:, axis]
        assert sign * (traj[-1] - traj[0]) > 1.0


def test_periodic_motions_return_to_their_start():
    for motion in ("circle", "figure-eight", "custom"):
        traj = world.render(Scene(motion=motion, phase=1.0)).trajectory
        assert (traj[-1] - traj[0]).norm() < 0.5  # pixels
        assert (traj - traj[0]).norm(dim=1).max() > 4.0  # ...after going somewhere
    still = world.render(Scene(motion="still", camera="still")).trajectory
    assert (still - still[0]).abs().max() < 1e-4


def test_trajectory_follows_the_mask():
    for scene in scenes(60):
        if scene.kind != "sprite" or scene.shape not in ("circle", "square", "cross", "ring"):
            continue
        r = world.render(scene)
        ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
        for f in range(8):
            m = r.mask[f]
            reach = scene.size * 32 + 1.0  # pixels from the centre to the shape's edge, and a rim
            inside = (r.trajectory[f] >= reach - 0.5).all() and (r.trajectory[f] <= 31.5 - reach).all()
            if inside:  # a symmetric shape fully in view: its centre is the mask's centroid
                centroid = torch.stack([xs[m].mean(), ys[m].mean()])
                assert (centroid - r.trajectory[f]).norm() < 1.0


def test_mask_pixels_differ_from_the_background():
    for scene in scenes(40):
        r = world.render(scene)
        background = world.render_background(scene)
        distance = rgb_distance(r.video, background)
        assert r.mask.any()
        # Colours contrast with the background by >= 0.45; only half-covered edge pixels and
        # stripes bring some of the mask closer.
        assert (distance[r.mask] > 0.2).float().mean() > 0.95 and distance[r.mask].mean() > 0.35
        if scene.kind == "sprite":
            assert r.mask.flatten(1).any(1).all()  # visible in every frame
            # Beyond a pixel around the mask the clip is the background.
            rim = torch.nn.functional.max_pool2d(r.mask[:, None].float(), 3, 1, 1)[:, 0] > 0
            assert distance[~rim].max() < 0.25  # at most a thin, partly covered tip


def test_camera_pan_shifts_the_background():
    def shift(camera: str) -> int:
        """Whole-pixel shift that best maps the first background frame onto the last."""
        bg = world.render_background(Scene(background="green", camera=camera))
        first, last = bg[0], bg[-1]
        errors = {d: (last[..., 12:20] - first[..., 12 - d : 20 - d]).abs().mean() for d in range(-12, 13)}
        return min(errors, key=errors.get)

    assert shift("still") == 0
    # A pan moves the camera by world.PAN of the frame (11 pixels of 32) over the clip.
    assert shift("pan-left") >= 9  # the camera moves left, so the world slides right
    assert shift("pan-right") <= -9
    bg = world.render_background(Scene(background="green", camera="pan-left"))
    assert not torch.equal(bg[0], bg[-1])


# ------------------------------------------------------------------------------------------
# checker


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_checker_reads_noisy_blurred_renders(split):
    generator = torch.Generator().manual_seed(0)
    batch = scenes(100, split, seed=11)
    videos = [degrade(world.render(s).video, generator) for s in batch]
    acc = checker.accuracy(videos, batch)
    assert acc["background"] >= 0.95, acc
    assert acc["color"] >= 0.95, acc
    assert acc["direction"] >= 0.90, acc
    assert acc["camera"] >= 0.90, acc
    assert sum(s.kind == "sprite" and s.motion in world.LINEAR_MOTIONS for s in batch) >= 20
    # The same clips scored against the wrong truth fail: the check is not vacuous.
    wrong = [world.edit_scene(s, color=_other(s)) for s in batch]
    assert checker.accuracy(videos[:30], wrong[:30])["color"] < 0.1


def _other(scene: Scene) -> str:
    """A colour the scene does not use anywhere."""
    used = {scene.color, scene.color2, scene.color3, scene.background, scene.background2}
    return next(c for c in world.COLORS if c not in used)


def test_checker_names_every_camera_and_direction():
    generator = torch.Generator().manual_seed(1)
    for camera in world.CAMERAS:
        scene = Scene(color="yellow", shape="square", background="blue", camera=camera)
        found = checker.check(degrade(world.render(scene).video, generator))
        assert found["camera"] == camera and found["direction"] == "still", (camera, found)
    for motion in ("left", "right", "up", "down"):
        for camera in ("still", "pan-left", "pan-right"):
            follow = {"pan-left": -world.PAN / 2, "pan-right": world.PAN / 2}.get(camera, 0.0)  # as sampled
            scene = Scene(color="white", background="purple", motion=motion, camera=camera, x=0.5 + follow)
            found = checker.check(degrade(world.render(scene).video, generator))
            assert found["direction"] == motion, (motion, camera, found)


def test_checker_reads_a_gradient_background_and_uses_the_mask_hint():
    scene = Scene(color="white", background="red", background2="blue", motion="right")
    r = world.render(scene)
    found = checker.check(r.video)
    assert (found["background_top"], found["background_bottom"]) == ("red", "blue")
    assert found["color"] == "white"
    assert checker.score(r.video, scene) == {
        "background": True, "color": True, "camera": True, "direction": True,
    }  # fmt: skip
    # A hint pointing at background pixels only makes the checker see no object colour.
    assert checker.check(r.video, mask_hint=torch.zeros_like(r.mask))["color"] is None
    with pytest.raises(SetseqError):
        checker.check(r.video[0])


# ------------------------------------------------------------------------------------------
# concepts


@pytest.mark.parametrize("name", world.CONCEPTS)
def test_concepts_render_and_their_prompts_carry_the_concept_tokens(name):
    scene = world.concept_scene(name)
    r = world.render(scene)
    assert r.video.isfinite().all() and r.mask.any()
    assert (r.video[1:] - r.video[:-1]).abs().mean() > 0.01  # it is dynamic
    static, dynamic = world.concept_prompts(name)
    assert "[v]" in world.tokenize(static) and "[u]" in world.tokenize(dynamic)
    assert "[u]" not in static and "[v]" not in dynamic
    assert scene.motion == world.CUSTOM  # a motion no caption names...
    assert all(s.motion != world.CUSTOM and s.texture != world.CUSTOM for s in scenes(300))
    if name == "sprite":
        assert world.caption(scene)[1] == "it moves."  # ...described only vaguely
    with pytest.raises(SetseqError):
        world.concept_scene("dragon")


def test_rendering_one_frame_gives_that_frame_of_the_clip():
    rng = np.random.default_rng(5)
    kinds = set()
    for i in range(40):
        s = world.sample_scene(rng, "all")
        kinds.add(s.kind)
        f = i % 8
        clip, one = world.render(s, 8, 24, 24), world.render(s, 8, 24, 24, only=f)
        assert one.video.shape == (1, 3, 24, 24)
        assert torch.equal(clip.video[f : f + 1], one.video) and torch.equal(clip.mask[f : f + 1], one.mask)
    assert kinds == {"sprite", "waves", "fire"}
    with pytest.raises(SetseqError):
        world.render(s, 8, 24, 24, only=8)


# ------------------------------------------------------------------------------------------
# the regime of a real video DiT: objects several patches wide, motion of most of a patch a frame


def test_sprites_are_several_patches_wide_and_linear_motion_crosses_the_frame():
    """At 32 x 32 with 4 x 4 patches: a sprite spans about three patches, and a linear mover's
    path, as the camera films it plus the pan, covers at least 40 % of the frame, most of a patch
    a frame, in the direction its caption names."""
    rng = np.random.default_rng(7)
    seen = 0
    while seen < 30:
        scene = world.sample_scene(rng, "all")
        if scene.kind != "sprite" or scene.motion not in ("left", "right", "up", "down"):
            continue
        seen += 1
        assert 2 * scene.size * 32 >= 10  # diameter in pixels: two and a half 4-pixel patches at least
        r = world.render(scene)
        zoom_free = scene.camera in ("still", "pan-left", "pan-right")
        pan = {"pan-left": -world.PAN, "pan-right": world.PAN}.get(scene.camera, 0.0) * 32
        travel = r.trajectory[-1] - r.trajectory[0]  # on screen, pixels (column, row)
        if zoom_free:
            travel[0] += pan  # back to the world: a pan drags the picture the other way
            axis, sign = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1)}[scene.motion]
            assert sign * travel[axis] >= 0.4 * 32, (scene, travel)
            assert scene.motion in world.caption(scene)[1].replace("to the ", "")
        # The path is centred on what the camera sees: the centre never leaves the frame.
        assert (r.trajectory > -0.5).all() and (r.trajectory < 31.5).all(), (scene, r.trajectory)
        assert r.mask.flatten(1).any(1).all()


def test_sampled_motions_favour_the_nameable_ones():
    """Half the sprites move in a straight line (the direction words get most of the signal)."""
    rng = np.random.default_rng(0)
    motions = [s.motion for s in (world.sample_scene(rng, "train") for _ in range(600)) if s.kind == "sprite"]
    linear = np.mean([m in ("left", "right", "up", "down") for m in motions])
    assert 0.4 < linear < 0.6
    assert set(motions) == set(world.SPRITE_MOTIONS)  # every motion is still seen
