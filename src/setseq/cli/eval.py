"""`setseq eval`: the paper's metrics of a generated video against its reference and prompt."""

from __future__ import annotations

import argparse
import json

from setseq.errors import SetseqError


def add_parser(sub) -> None:
    """The `eval` command and its flags."""
    p = sub.add_parser(
        "eval",
        help="score a generated video against its reference and prompt",
        description="Compute the paper's metrics (MSE, ArcFace ID, CLIP-T, TC) of a generated video "
        "against its reference clip and prompt, plus toy-world metrics for an example "
        "concept. Metrics whose model is not given are skipped.",
    )
    p.add_argument("video", metavar="VIDEO", help="the generated video")
    p.add_argument(
        "--reference", required=True, metavar="REF", help="the reference video (e.g. the concept's training clip)"
    )
    p.add_argument("--prompt", required=True, metavar="TEXT", help="the prompt VIDEO was generated from")
    p.add_argument("--clip", metavar="PATH", help="local CLIP folder in transformers format (for CLIP-T and TC)")
    p.add_argument(
        "--arcface", metavar="PATH", help="insightface model folder (.../models/NAME) or ArcFace .onnx file (for ID)"
    )
    p.add_argument(
        "--toy-scene", metavar="NAME", help="REF is this example concept: sprite, waves or flicker (toy metrics)"
    )
    p.add_argument("--json", metavar="OUT", help="also write the results to this JSON file")
    p.set_defaults(func=cmd_eval)


def _format_metric(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
    return str(value)


def _eval_metrics(a, video, reference) -> tuple[dict, dict[str, str]]:
    """The metrics `setseq eval` can compute with the models it was given, and why the others were skipped."""
    from setseq.metrics import mse, pixel_coherence

    results: dict = {"mse": mse(video, reference), "tc_pixel": pixel_coherence(video)}
    skipped: dict[str, str] = {}
    if a.clip:
        from setseq.metrics.clip import clip_temporal_coherence, clip_text_score, load_clip

        clip = load_clip(a.clip)
        results.update(clip_t=clip_text_score(clip, video, a.prompt), tc_clip=clip_temporal_coherence(clip, video))
    else:
        skipped["clip_t, tc_clip"] = "no --clip PATH (a local CLIP folder in transformers format)"
    if a.arcface:
        from setseq.metrics.identity import identity_similarity, load_face_embedder

        results.update(identity_similarity(video, reference, load_face_embedder(a.arcface)))
    else:
        skipped["id"] = "no --arcface PATH (an insightface model folder or an ArcFace .onnx file)"
    if a.toy_scene:
        from setseq.metrics.toy import concept_metrics

        results.update(concept_metrics(video, reference, a.toy_scene, a.prompt))
        if "toy_edit" not in results:
            skipped["toy_edit"] = "the prompt names no background, colour or camera other than the reference's"
    else:
        skipped["toy_*"] = "no --toy-scene NAME (sprite, waves or flicker)"
    return results, skipped


def cmd_eval(a: argparse.Namespace) -> int:
    """Print (and with --json write) the metrics of a generated video against its reference."""
    import math

    from setseq.toy.world import CONCEPTS
    from setseq.video import load_video

    if a.toy_scene is not None and a.toy_scene not in CONCEPTS:
        raise SetseqError(f"--toy-scene must be one of {', '.join(CONCEPTS)}, got {a.toy_scene!r}.")
    video = load_video(a.video).frames
    reference = load_video(a.reference).frames
    results, skipped = _eval_metrics(a, video, reference)
    for name, value in results.items():
        print(f"{name:<16} {_format_metric(value)}")
    for name, why in skipped.items():
        print(f"{name:<16} skipped: {why}")
    if a.json:
        from setseq.fileio import atomic_path

        # NaN (no face found) is not valid JSON: write null.
        metrics = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in results.items()}
        report = {
            "video": a.video,
            "reference": a.reference,
            "prompt": a.prompt,
            "metrics": metrics,
            "skipped": skipped,
        }
        with atomic_path(a.json) as tmp:
            tmp.write_text(json.dumps(report, indent=1))
    return 0
