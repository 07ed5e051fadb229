"""Concept specs from files (setseq.specs): the fallbacks `setseq train` uses, written once."""

import pytest
import torch

from setseq import data
from setseq.backbones.base import Geometry
from setseq.errors import SetseqError
from setseq.specs import ConceptSource, concept_name, concept_specs, read_concept_list

G = Geometry(frames=4, height=16, width=16, fps=8.0)


@pytest.fixture()
def clips(tmp_path):
    """Two clips: a.mp4 with a prompt file and a mask beside it, b.mp4 with nothing beside it."""
    a = data.make_test_video(tmp_path / "a.mp4", frames=8, size=(16, 16))
    (tmp_path / "a.txt").write_text("static: a [v] square.\nmotion: it moves in [u] motion.\n")
    mask = torch.full((8, 3, 16, 16), -1.0)
    mask[:, :, 4:12, 4:12] = 1.0  # white on the subject
    data.write_video(tmp_path / "a.mask.mp4", mask, 8.0)
    b = data.make_test_video(tmp_path / "b clip.mp4", frames=8, size=(16, 16))
    return a, b


def test_prompts_and_mask_come_from_the_files_beside_the_video(clips):
    (spec,) = concept_specs([ConceptSource(clips[0])], G)
    assert (spec.name, spec.identity_token, spec.motion_token) == ("a", "[v]", "[u]")
    assert (spec.prompt, spec.motion_prompt) == ("a [v] square.", "it moves in [u] motion.")
    assert spec.video.shape == (8, 3, 16, 16) and spec.source == str(clips[0])
    assert spec.mask is not None and spec.mask.shape == (8, 16, 16)
    assert spec.mask[:, 8, 8].all() and not spec.mask[:, 0, 0].any()


def test_given_prompts_win_and_a_set_numbers_its_tokens_and_names(clips):
    a, b = clips
    specs = concept_specs(
        [ConceptSource(a, prompt="a [v1] cube."), ConceptSource(b, prompt="a [v2] ring.", name=None)], G
    )
    assert [s.prompt for s in specs] == ["a [v1] cube.", "a [v2] ring."]
    assert specs[0].motion_prompt == "it moves in [u] motion."  # the .txt still fills what was not given
    assert [(s.identity_token, s.motion_token) for s in specs] == [("[v1]", "[u1]"), ("[v2]", "[u2]")]
    assert [s.name for s in specs] == ["a", "b_clip"]
    assert specs[1].mask is None  # no mask file, no alpha channel
    # prompt files written for one clip: number_prompts rewrites their tokens for the set
    specs = concept_specs(
        [ConceptSource(a), ConceptSource(a, name="again", prompt="a [v] cube.")], G, number_prompts=True
    )
    assert [s.prompt for s in specs] == ["a [v1] square.", "a [v2] cube."]
    assert specs[0].motion_prompt == "it moves in [u1] motion." and specs[1].name == "again"


def test_names_are_unique_within_a_set(tmp_path):
    taken: set[str] = set()
    assert [concept_name(tmp_path / p, taken) for p in ("x y.mp4", "x_y.mp4", "x y.gif", "!!.mp4")] == [
        "x_y",
        "x_y_2",
        "x_y_3",
        "_",
    ]


def test_excerpt_settings_layer_the_txt_then_the_source_then_the_flags(clips):
    a = clips[0]
    (tmp := a.with_suffix(".txt")).write_text(tmp.read_text() + "select: head\n")
    (spec,) = concept_specs([ConceptSource(a)], G)
    assert spec.video.shape[0] == 4  # the .txt's head: the first 4 frames
    (spec,) = concept_specs([ConceptSource(a, excerpt={"select": "all"})], G)
    assert spec.video.shape[0] == 8
    (spec,) = concept_specs([ConceptSource(a, excerpt={"select": "all"})], G, excerpt={"select": "head"})
    assert spec.video.shape[0] == 4


def test_bad_sources_are_one_sentence(clips, tmp_path):
    a, b = clips
    with pytest.raises(SetseqError, match="no prompt for"):
        concept_specs([ConceptSource(b)], G)
    with pytest.raises(SetseqError, match="does not exist"):
        concept_specs([ConceptSource(tmp_path / "missing.mp4")], G)
    with pytest.raises(SetseqError, match="named like a mask"):
        concept_specs([ConceptSource(tmp_path / "a.mask.mp4")], G)
    with pytest.raises(SetseqError, match="mask .* does not exist"):
        concept_specs([ConceptSource(a, mask=tmp_path / "nope.mp4")], G)
    with pytest.raises(SetseqError, match="8 frames at 8 fps but 20 are needed"):
        concept_specs([ConceptSource(a)], Geometry(frames=20, height=16, width=16, fps=8.0))


def test_a_concept_list_reads_paths_relative_to_its_file(clips, tmp_path):
    listing = tmp_path / "sub" / "set.toml"
    listing.parent.mkdir()
    listing.write_text(
        '[[concept]]\nvideo = "../a.mp4"\nname = "first"\nstart = 0.25\n\n'
        '[[concept]]\nvideo = "../b clip.mp4"\nprompt = "a [v2] ring."\nmask = "../a.mask.mp4"\n'
    )
    first, second = read_concept_list(listing)
    assert first.video == str(listing.parent / "../a.mp4") and first.name == "first"
    assert first.excerpt == {"start": 0.25} and "set.toml" in first.origin
    assert second.prompt == "a [v2] ring." and second.mask == str(listing.parent / "../a.mask.mp4")
    listing.write_text('[[concept]]\nvideo = "a.mp4"\ncolour = "red"\n')
    with pytest.raises(SetseqError, match="needs a video and may have"):
        read_concept_list(listing)
    listing.write_text("seed = 1\n")
    with pytest.raises(SetseqError, match="lists no concepts"):
        read_concept_list(listing)
