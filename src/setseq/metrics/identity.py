"""ArcFace identity similarity (the paper's ID): how much the generated faces look like the
reference's person.

Faces are embedded by one of two local models, never downloaded:
  * an insightface model pack folder (e.g. ~/.insightface/models/buffalo_l): faces are detected,
    aligned and embedded by insightface's FaceAnalysis;
  * a single ArcFace .onnx file run by onnxruntime: no detector, so every frame is taken to be a
    face crop (e.g. videos of a face cropped beforehand) and embedded whole at 112 x 112.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from setseq.errors import SetseqError
from setseq.metrics.video import check_video

# Maps one frame (3, H, W) in [-1, 1] to the unit-norm embedding (D,) of its largest face, or None.
FaceEmbedder = Callable[[torch.Tensor], torch.Tensor | None]
ARCFACE_SIZE = 112  # input side of the ArcFace recognition models
HOW_TO_PASS = "pass --arcface PATH with an insightface model folder (.../models/NAME) or an ArcFace .onnx file"


def identity_similarity(video: torch.Tensor, reference: torch.Tensor, embed: FaceEmbedder) -> dict:
    """Mean cosine between each generated face and the reference identity.

    The reference identity is the normalised mean of the reference's face embeddings, so the two
    clips need not be aligned frame by frame (edits and new motion are compared too).

    Args:
        video: generated clip (F, 3, H, W) in [-1, 1].
        reference: reference clip (F', 3, H', W') in [-1, 1].
        embed: face embedder, e.g. from `load_face_embedder`.

    Returns:
        {"id": mean cosine (NaN when either clip shows no face), "frames_with_faces": generated
        frames where a face was found, "reference_frames_with_faces": the same for the reference}.
    """
    faces = _embed_all(check_video(video), embed)  # (n, D)
    reference_faces = _embed_all(check_video(reference, "reference"), embed)  # (n', D)
    counts = {"frames_with_faces": len(faces), "reference_frames_with_faces": len(reference_faces)}
    if len(faces) == 0 or len(reference_faces) == 0:
        return {"id": float("nan"), **counts}
    person = F.normalize(reference_faces.mean(0), dim=-1)  # (D,)
    return {"id": float((faces @ person).mean()), **counts}


def _embed_all(video: torch.Tensor, embed: FaceEmbedder) -> torch.Tensor:
    """Unit-norm embeddings (n, D) of the frames where a face is found."""
    found = [z for z in map(embed, video) if z is not None]
    return F.normalize(torch.stack(found), dim=-1) if found else torch.zeros(0, 0)


def load_face_embedder(path: str | os.PathLike | None) -> FaceEmbedder:
    """A face embedder from a local insightface model folder or ArcFace .onnx file.

    Args:
        path: an insightface model pack folder, laid out as ROOT/models/NAME with the detection and
            recognition .onnx files inside, or one ArcFace recognition .onnx file.
    """
    if path is None:
        raise SetseqError(f"the identity metric needs a face model; {HOW_TO_PASS}.")
    path = Path(path)
    if path.is_dir():
        return _insightface_embedder(path)
    if path.is_file() and path.suffix == ".onnx":
        return _onnx_embedder(path)
    raise SetseqError(f"no face model at {str(path)!r}; {HOW_TO_PASS}.")


def _insightface_embedder(folder: Path) -> FaceEmbedder:
    if folder.parent.name != "models" or not any(folder.glob("*.onnx")):
        raise SetseqError(
            f"{str(folder)!r} is not an insightface model folder (ROOT/models/NAME/*.onnx); {HOW_TO_PASS}."
        )
    try:
        from insightface.app import FaceAnalysis
    except ImportError:
        raise SetseqError(
            "an insightface model folder needs insightface; `pip install insightface onnxruntime`."
        ) from None
    # root/models/name exists, so insightface loads it and downloads nothing.
    app = FaceAnalysis(
        name=folder.name,
        root=str(folder.parent.parent),
        allowed_modules=["detection", "recognition"],
        providers=["CPUExecutionProvider"],
    )
    app.prepare(ctx_id=-1, det_size=(640, 640))

    def embed(frame: torch.Tensor) -> torch.Tensor | None:
        bgr = _to_uint8(frame)[..., ::-1].copy()  # insightface takes OpenCV's BGR order
        faces = app.get(bgr)
        if not faces:
            return None
        largest = max(faces, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))
        return torch.from_numpy(np.asarray(largest.normed_embedding, np.float32))

    return embed


def _onnx_embedder(file: Path) -> FaceEmbedder:
    try:
        import onnxruntime
    except ImportError:
        raise SetseqError("an ArcFace .onnx file needs onnxruntime; `pip install onnxruntime`.") from None
    session = onnxruntime.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def embed(frame: torch.Tensor) -> torch.Tensor:
        # ArcFace takes (1, 3, 112, 112) RGB scaled to [-1, 1], which is the frame's own scale.
        x = F.interpolate(
            frame[None], size=(ARCFACE_SIZE, ARCFACE_SIZE), mode="bilinear", align_corners=False, antialias=True
        )  # (1, 3, 112, 112)
        z = session.run(None, {name: x.numpy()})[0]  # (1, D)
        return F.normalize(torch.from_numpy(z[0]), dim=-1)

    return embed


def _to_uint8(frame: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8 RGB."""
    return ((frame.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
