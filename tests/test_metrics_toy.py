"""Toy-world metrics on hand-made clips of the three example concepts: an identical clip scores
perfectly, a recoloured one loses identity but keeps motion, a time-reversed one loses motion but
keeps identity, and a background edit keeps both and is detected as the edit it is."""

import numpy as np
import pytest
import torch

from setseq.errors import SetseqError
from setseq.metrics import pixel_coherence
from setseq.metrics.toy import (
    _rgb_and_backs,
    concept_metrics,
    coverage,
    edit_adherence,
    identity_score,
    motion_score,
    requested_edits,
    segment,
    toy_metrics,
)
from setseq.toy import world

CONCEPTS = {  # concept -> (a recolour, a new background), both visible on the concept's colours
    "sprite": ("green", "black"),
    "waves": ("green", "black"),
    "flicker": ("green", "white"),
}


def _render(scene):
    return world.render(scene, 8, 32, 32)


@pytest.fixture(scope="module", params=list(CONCEPTS))
def concept(request):
    name = request.param
    scene = world.concept_scene(name)
    colour, background = CONCEPTS[name]
    truth = _render(scene)
    clips = {
        "identical": truth.video,
        "recoloured": _render(world.edit_scene(scene, color=colour)).video,
        "reversed": truth.video.flip(0),
        "background": _render(world.edit_scene(scene, background=background, background2=None)).video,
    }
    scores = {k: toy_metrics(v, truth.video, scene.kind, reference_mask=truth.mask) for k, v in clips.items()}
    return name, scene, truth, clips, scores


def test_segmentation_finds_the_rendered_object(concept):
    _, _, truth, _, _ = concept
    found, mask = segment(truth.video), truth.mask.numpy()
    assert (found & mask).sum() / (found | mask).sum() > 0.85


def test_an_identical_clip_scores_perfectly(concept):
    _, scene, truth, _, scores = concept
    s = scores["identical"]
    assert s["toy_identity"] > 0.98 and s["toy_motion"] > 0.97
    assert s["mse"] == 0.0 and s["toy_edits"] == {}
    assert s["tc_pixel"] == pixel_coherence(truth.video)
    # segmented the same way as the reference, the clip matches it exactly
    assert identity_score(truth.video, truth.video) == pytest.approx(1.0, abs=1e-9)
    assert motion_score(truth.video, truth.video, scene.kind) == pytest.approx(1.0, abs=1e-6)


def test_a_recoloured_clip_loses_identity_but_keeps_motion(concept):
    _, _, _, _, scores = concept
    s = scores["recoloured"]
    assert s["toy_identity"] < 0.75 < scores["identical"]["toy_identity"]
    assert s["toy_motion"] > 0.95


def test_a_reversed_clip_loses_motion_but_keeps_identity(concept):
    _, _, _, _, scores = concept
    s = scores["reversed"]
    assert s["toy_motion"] < scores["identical"]["toy_motion"] - 0.1
    assert s["toy_identity"] > 0.98


def test_a_background_edit_keeps_identity_and_motion_and_is_detected(concept):
    name, scene, truth, clips, scores = concept
    s = scores["background"]
    new = CONCEPTS[name][1]
    # 0.93 for the sprite on black: its stripes (world.STRIPE_MIX 0.25) are brighter there and leak into the unmixing
    assert s["toy_identity"] > 0.9 and s["toy_motion"] > 0.95
    assert s["toy_edits"] == {"background": new}
    prompt = f"a [v] thing on a {new} background. it moves in [u] motion."
    assert requested_edits(prompt, truth.video) == {"background": new}
    with_prompt = toy_metrics(clips["background"], truth.video, scene.kind, reference_mask=truth.mask, prompt=prompt)
    assert with_prompt["toy_edit"] == 1.0
    assert edit_adherence(truth.video, {"background": new}) == 0.0  # the unedited clip did not follow it


def test_a_camera_edit_is_requested_and_followed():
    scene = world.concept_scene("sprite")
    reference = _render(scene).video
    panned = _render(world.edit_scene(scene, camera="pan-left")).video
    prompt = "a [v] diamond on a blue background. it moves in [u] motion, as the camera pans left."
    requested = requested_edits(prompt, reference)
    assert requested == {"camera": "pan-left"}  # the background is the reference's: no edit
    assert edit_adherence(panned, requested) == 1.0 and edit_adherence(reference, requested) == 0.0


def test_requested_edits_reads_colour_gradient_and_zoom():
    reference = _render(world.concept_scene("sprite")).video
    prompt = "a green [v] diamond on a black to pink gradient background. it moves, as the camera zooms in."
    assert requested_edits(prompt, reference) == {"color": "green", "background": "black to pink", "camera": "zoom-in"}
    with pytest.raises(SetseqError, match="background, color or camera"):
        edit_adherence(reference, {"size": "large"})


def test_concept_metrics_use_the_render_and_reject_another_reference():
    scene = world.concept_scene("waves")
    reference = _render(scene).video
    edited = _render(world.edit_scene(scene, background="black")).video
    m = concept_metrics(edited, reference, "waves")
    assert m["toy_edits"] == {"background": "black"} and m["toy_identity"] > 0.95
    with pytest.raises(SetseqError, match="not the example concept 'sprite'"):
        concept_metrics(edited, reference, "sprite")
    with pytest.raises(SetseqError, match="unknown scene kind"):
        motion_score(edited, reference, "dancer")


def test_motion_of_a_clip_without_any_object_is_zero():
    truth = _render(world.concept_scene("sprite"))
    blank = torch.full_like(truth.video, -1.0)
    assert motion_score(blank, truth.video, "sprite", truth.mask) == 0.0
    assert motion_score(blank, truth.video, "waves", truth.mask) == 0.0
    assert np.isclose(identity_score(blank, truth.video, truth.mask), 0.0)


def test_coverage_sees_an_object_drawn_in_a_few_frames_where_identity_does_not(concept):
    """Erasing the object from six of the eight frames leaves its colours' proportions, so identity
    stays; coverage drops to about the quarter that is left. The identical clip covers as much."""
    _, _, truth, _, scores = concept
    assert scores["identical"]["toy_coverage"] == pytest.approx(1.0, abs=0.15)
    rgb, backs = _rgb_and_backs(truth.video)
    erased = rgb.copy()
    mask = truth.mask.numpy().copy()
    mask[:2] = False  # the first two frames keep their object
    erased[mask] = backs[mask]
    erased = torch.from_numpy(erased).permute(0, 3, 1, 2).float() * 2 - 1
    assert identity_score(erased, truth.video, truth.mask) > 0.8
    assert coverage(erased, truth.video, truth.mask) < 0.4
    assert coverage(torch.full_like(truth.video, -1.0), truth.video, truth.mask) == 0.0
