"""The paper's metrics: hand-computed values on tiny inputs, a tiny random CLIP loaded from a local
folder (its numbers mean nothing; the plumbing is what is tested), identity aggregation with a fake
face embedder, clear errors, and `setseq eval` end to end."""

import json
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from setseq import data
from setseq.cli import main
from setseq.errors import SetseqError
from setseq.metrics import mse, pixel_coherence, temporal_coherence
from setseq.metrics.identity import identity_similarity, load_face_embedder
from setseq.toy import world

# ----------------------------------------------------------------------------- pixel metrics


def test_mse_is_the_mean_squared_error_on_the_unit_pixel_scale():
    video = torch.zeros(2, 3, 4, 4)
    reference = torch.ones(2, 3, 4, 4)  # every pixel 0.5 apart on the [0, 1] scale
    assert mse(video, reference) == pytest.approx(0.25)
    reference[1] = 0.0  # half the frames agree
    assert mse(video, reference) == pytest.approx(0.125)
    assert mse(reference, reference) == 0.0


def test_mse_resizes_the_reference_to_the_generated_size():
    video = torch.zeros(2, 3, 4, 6)
    reference = torch.full((2, 3, 8, 12), 0.5)  # constant, so any resize keeps it at 0.5
    assert mse(video, reference) == pytest.approx(0.0625)


def test_mse_needs_the_same_frame_count():
    with pytest.raises(SetseqError, match="3 frames but the reference has 2"):
        mse(torch.zeros(3, 3, 4, 4), torch.zeros(2, 3, 4, 4))
    with pytest.raises(SetseqError, match=r"\(F, 3, H, W\)"):
        mse(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4))


def test_temporal_coherence_is_the_mean_cosine_of_consecutive_embeddings():
    def flat(v):
        return v.flatten(1)

    still = torch.rand(1, 3, 4, 4).repeat(5, 1, 1, 1)
    assert temporal_coherence(still, flat) == pytest.approx(1.0)
    # embeddings e1, e1, -e1: cosines 1 and -1, mean 0
    video = torch.zeros(3, 3, 1, 1)
    video[:2, 0] = 1.0
    video[2, 0] = -1.0
    assert temporal_coherence(video, flat) == pytest.approx(0.0)
    with pytest.raises(SetseqError, match="at least 2"):
        temporal_coherence(still[:1], flat)


def test_pixel_coherence():
    assert pixel_coherence(torch.rand(1, 3, 4, 4).repeat(4, 1, 1, 1)) == pytest.approx(1.0)
    flips = torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1, 1).expand(3, 3, 2, 2)
    assert pixel_coherence(flips) == pytest.approx(0.0)
    half = torch.tensor([0.0, 0.5]).view(2, 1, 1, 1).expand(2, 3, 2, 2)  # changes by 0.25 on [0, 1]
    assert pixel_coherence(half) == pytest.approx(0.75)


# ----------------------------------------------------------------------------- CLIP

WORDS = ["a", "red", "blue", "square", "sea", "on", "background", "."]


def _tiny_tokenizer():
    """A byte-pair tokenizer over lowercase letters with a few merges, in CLIP's conventions."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<|startoftext|>", "<|endoftext|>"]
    letters = "abcdefghijklmnopqrstuvwxyz."
    merges = [("r", "e"), ("re", "d</w>"), ("o", "n</w>"), ("s", "e")]
    tokens = specials + list(letters) + [c + "</w>" for c in letters] + ["re", "red</w>", "on</w>", "se"]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<|endoftext|>", end_of_word_suffix="</w>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[(t, vocab[t]) for t in specials]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=specials[0],
        eos_token=specials[1],
        pad_token=specials[1],
        unk_token=specials[1],
        model_max_length=32,
    ), vocab


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A randomly initialised two-layer CLIP (16 px images) saved as a local transformers folder."""
    pytest.importorskip("transformers")
    from transformers import CLIPConfig, CLIPModel

    path = tmp_path_factory.mktemp("clip")
    tokenizer, vocab = _tiny_tokenizer()
    eos = vocab["<|endoftext|>"]
    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 32,
            "bos_token_id": 0,
            "eos_token_id": eos,
            "pad_token_id": eos,
        },
        vision_config={
            "image_size": 16,
            "patch_size": 8,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
        },
        projection_dim=8,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "size": {"shortest_edge": 16},
                "crop_size": {"height": 16, "width": 16},
                "image_mean": [0.5, 0.4, 0.3],
                "image_std": [0.2, 0.25, 0.3],
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def clip(clip_dir):
    from setseq.metrics.clip import load_clip

    return load_clip(clip_dir)


def test_clip_preprocessing_resizes_crops_and_normalises(clip):
    grey = torch.zeros(2, 3, 24, 40)  # 0.5 on the [0, 1] scale; shorter side 24 -> 16, crop 16 x 16
    x = clip.preprocess(grey)
    assert x.shape == (2, 3, 16, 16)
    expected = (0.5 - torch.tensor([0.5, 0.4, 0.3])) / torch.tensor([0.2, 0.25, 0.3])
    torch.testing.assert_close(x[0, :, 8, 8], expected)
    # a left half that the centre crop must cut away entirely
    video = torch.zeros(1, 3, 16, 48)
    video[..., :16] = 1.0
    torch.testing.assert_close(clip.preprocess(video), clip.preprocess(torch.zeros(1, 3, 16, 16)))


def test_clip_t_equals_a_hand_computation(clip):
    from setseq.metrics.clip import clip_text_score

    video = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    prompt = "a red square on a blue background."
    with torch.no_grad():
        tokens = clip.tokenizer([prompt], return_tensors="pt")
        assert tokens["input_ids"][0, -1] == clip.model.config.text_config.eos_token_id
        text = clip.model.get_text_features(**tokens)
        text = text if isinstance(text, torch.Tensor) else text.pooler_output
        pixels = ((video + 1) / 2 - torch.tensor([0.5, 0.4, 0.3])[:, None, None]) / torch.tensor([0.2, 0.25, 0.3])[
            :, None, None
        ]
        image = clip.model.get_image_features(pixel_values=pixels)
        image = image if isinstance(image, torch.Tensor) else image.pooler_output
    expected = F.cosine_similarity(text[0], F.normalize(image, dim=-1).mean(0), dim=0)
    assert clip_text_score(clip, video, prompt) == pytest.approx(float(expected), abs=1e-5)
    assert clip_text_score(clip, video, "a sea.") != pytest.approx(float(expected), abs=1e-5)


def test_clip_tc_of_identical_frames_is_one_and_of_changing_frames_less(clip):
    from setseq.metrics.clip import clip_temporal_coherence

    g = torch.Generator().manual_seed(1)
    still = (torch.rand(1, 3, 16, 16, generator=g) * 2 - 1).repeat(4, 1, 1, 1)
    assert clip_temporal_coherence(clip, still) == pytest.approx(1.0, abs=1e-5)
    noise = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    assert clip_temporal_coherence(clip, noise) < 0.9999


def test_clip_without_a_local_model_says_what_to_pass(tmp_path):
    from setseq.metrics.clip import load_clip

    for path in (None, tmp_path / "missing", tmp_path):
        with pytest.raises(SetseqError, match="--clip PATH"):
            load_clip(path)


# ----------------------------------------------------------------------------- identity


def _solid(*colours):
    return torch.stack([c.view(3, 1, 1).expand(3, 8, 8) for c in colours])  # (F, 3, 8, 8)


def _fake_faces(frame):
    """A 'face' embedding from the mean colour of the top-left pixel; no face on black frames."""
    rgb = frame[:, 0, 0]
    return None if bool((rgb == -1).all()) else rgb


def test_identity_is_the_mean_cosine_to_the_reference_person_over_frames_with_faces():
    red, green = torch.tensor([1.0, -1.0, -1.0]), torch.tensor([-1.0, 1.0, -1.0])  # cos(red, green) = -1/3
    black = -torch.ones(3)
    reference = _solid(red, red, black)
    video = _solid(red, green, black, black)
    result = identity_similarity(video, reference, _fake_faces)
    assert result["id"] == pytest.approx((1.0 - 1 / 3) / 2)
    assert result["frames_with_faces"] == 2 and result["reference_frames_with_faces"] == 2
    assert identity_similarity(reference, reference, _fake_faces)["id"] == pytest.approx(1.0)
    empty = identity_similarity(_solid(black, black), reference, _fake_faces)
    assert empty["frames_with_faces"] == 0 and empty["id"] != empty["id"]  # NaN


def test_onnx_arcface_embeds_whole_frames_resized_to_112(tmp_path, monkeypatch):
    class Session:  # a stand-in ArcFace: the embedding is the input's mean colour
        def __init__(self, path, providers):
            assert path == str(onnx)

        def get_inputs(self):
            return [types.SimpleNamespace(name="input.1")]

        def run(self, outputs, feeds):
            x = feeds["input.1"]
            assert x.shape == (1, 3, 112, 112)
            return [x.mean((2, 3))]  # (1, 3)

    onnx = tmp_path / "arcface.onnx"
    onnx.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "onnxruntime", types.SimpleNamespace(InferenceSession=Session))
    embed = load_face_embedder(onnx)
    red, green = torch.tensor([1.0, -1.0, -1.0]), torch.tensor([-1.0, 1.0, -1.0])
    torch.testing.assert_close(embed(_solid(red)[0]), red / 3**0.5)
    assert identity_similarity(_solid(red, green), _solid(red), embed)["id"] == pytest.approx((1 - 1 / 3) / 2)


def test_insightface_gets_bgr_frames_and_the_largest_face_counts(tmp_path, monkeypatch):
    calls = {}

    class FaceAnalysis:  # a stand-in detector: a small face of blue and a large one of the frame's pixel
        def __init__(self, name, root, allowed_modules, providers):
            calls.update(name=name, root=root)

        def prepare(self, ctx_id, det_size):
            pass

        def get(self, bgr):
            pixel = bgr[0, 0].astype(np.float32)
            small = types.SimpleNamespace(bbox=[0, 0, 2, 2], normed_embedding=np.float32([1, 0, 0]))
            large = types.SimpleNamespace(bbox=[0, 0, 6, 6], normed_embedding=pixel / np.linalg.norm(pixel))
            return [small, large]

    pack = tmp_path / "models" / "buffalo_l"
    pack.mkdir(parents=True)
    (pack / "w600k_r50.onnx").write_bytes(b"")
    app = types.ModuleType("insightface.app")
    app.FaceAnalysis = FaceAnalysis
    monkeypatch.setitem(sys.modules, "insightface", types.ModuleType("insightface"))
    monkeypatch.setitem(sys.modules, "insightface.app", app)
    embed = load_face_embedder(pack)
    assert calls == {"name": "buffalo_l", "root": str(tmp_path)}  # loads root/models/name, downloads nothing
    red = torch.tensor([1.0, -1.0, -1.0])  # RGB (255, 0, 0) is BGR (0, 0, 255)
    torch.testing.assert_close(embed(_solid(red)[0]), torch.tensor([0.0, 0.0, 1.0]))


def test_face_model_errors_are_clear(tmp_path, monkeypatch):
    with pytest.raises(SetseqError, match="--arcface PATH"):
        load_face_embedder(None)
    with pytest.raises(SetseqError, match="no face model"):
        load_face_embedder(tmp_path / "missing.onnx")
    with pytest.raises(SetseqError, match="not an insightface model folder"):
        load_face_embedder(tmp_path)
    onnx = tmp_path / "arcface.onnx"
    onnx.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(SetseqError, match="needs onnxruntime"):
        load_face_embedder(onnx)
    pack = tmp_path / "models" / "buffalo_l"
    pack.mkdir(parents=True)
    (pack / "w600k_r50.onnx").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "insightface", None)
    monkeypatch.setitem(sys.modules, "insightface.app", None)
    with pytest.raises(SetseqError, match="needs insightface"):
        load_face_embedder(pack)


# ----------------------------------------------------------------------------- setseq eval


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """The sprite concept (reference) and a background edit of it (generated), as mp4 files."""
    d = tmp_path_factory.mktemp("eval")
    scene = world.concept_scene("sprite")
    # at 64 x 64, as the shipped examples are: 4:2:0 chroma at 32 x 32 smears the swirl's colours
    reference = data.write_video(d / "ref.mp4", world.render(scene, 8, 64, 64).video, 8.0)
    edited = world.render(world.edit_scene(scene, background="black"), 8, 64, 64).video
    generated = data.write_video(d / "gen.mp4", edited, 8.0)
    short = data.write_video(d / "short.mp4", edited[:5], 8.0)
    return reference, generated, short


def test_eval_without_models_reports_pixel_and_toy_metrics_and_the_skipped(clips, tmp_path, capsys):
    reference, generated, _ = clips
    out = tmp_path / "m.json"
    args = [
        "eval",
        str(generated),
        "--reference",
        str(reference),
        "--prompt",
        "a [v] diamond on a black background.",
        "--toy-scene",
        "sprite",
        "--json",
        str(out),
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "toy_identity" in printed and "skipped: no --clip PATH" in printed and "skipped: no --arcface" in printed
    report = json.loads(out.read_text())
    m = report["metrics"]
    assert 0 < m["mse"] < 0.5 and m["toy_identity"] > 0.9 and m["toy_motion"] > 0.9
    assert m["toy_edits"] == {"background": "black"} and m["toy_edit"] == 1.0
    assert set(report["skipped"]) == {"clip_t, tc_clip", "id"}


def test_eval_with_a_local_clip(clips, clip_dir, tmp_path):
    reference, generated, _ = clips
    out = tmp_path / "m.json"
    args = [
        "eval",
        str(generated),
        "--reference",
        str(reference),
        "--prompt",
        "a red square.",
        "--clip",
        str(clip_dir),
        "--json",
        str(out),
    ]
    assert main(args) == 0
    m = json.loads(out.read_text())["metrics"]
    assert -1 <= m["clip_t"] <= 1 and 0.9 < m["tc_clip"] <= 1 + 1e-6
    assert "toy_identity" not in m


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--toy-scene", "dancer"], "--toy-scene must be one of"),
        (["--toy-scene", "waves"], "not the example concept 'waves'"),
        (["--clip", "nowhere"], "--clip PATH"),
        (["--arcface", "nowhere"], "--arcface PATH"),
    ],
)
def test_eval_bad_input_exits_2_with_one_sentence(clips, capsys, extra, message):
    reference, generated, _ = clips
    assert main(["eval", str(generated), "--reference", str(reference), "--prompt", "p", *extra]) == 2
    assert message in capsys.readouterr().err


def test_eval_needs_matching_frames_and_existing_files(clips, capsys):
    reference, _, short = clips
    assert main(["eval", str(short), "--reference", str(reference), "--prompt", "p"]) == 2
    assert "5 frames but the reference has 8" in capsys.readouterr().err
    assert main(["eval", str(short) + ".missing", "--reference", str(reference), "--prompt", "p"]) == 2
    assert "does not exist" in capsys.readouterr().err
