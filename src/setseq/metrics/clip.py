"""CLIP metrics of the paper: CLIP-T (prompt-video agreement) and TC (temporal coherence).

CLIP is loaded from a local folder in the transformers format (config.json, the weights, the
tokenizer files and preprocessor_config.json); nothing is ever downloaded. Frames are
preprocessed here with torch (resize, centre crop, CLIP's mean and std), so PIL is not needed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from setseq.errors import SetseqError
from setseq.metrics.video import check_video, temporal_coherence

# OpenAI CLIP's normalisation, used when a folder has no preprocessor_config.json.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HOW_TO_PASS = (
    "pass --clip PATH with a local CLIP folder in transformers format (e.g. a saved openai/clip-vit-base-patch32)"
)


@dataclass
class CLIP:
    """A CLIP model, its tokenizer and its image preprocessing.

    Attributes:
        model: a transformers `CLIPModel`, in eval mode.
        tokenizer: its tokenizer.
        resize: frames are resized so that their shorter side has this length ...
        crop: (H, W) ... then centre-cropped to this size.
        mean, std: (3,) per-channel normalisation of [0, 1] pixels.
    """

    model: torch.nn.Module
    tokenizer: object
    resize: int
    crop: tuple[int, int]
    mean: torch.Tensor
    std: torch.Tensor

    @torch.no_grad()
    def embed_text(self, prompts: list[str]) -> torch.Tensor:
        """Unit-norm text embeddings (N, D) of N prompts."""
        max_length = self.model.config.text_config.max_position_embeddings
        tokens = self.tokenizer(prompts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        out = self.model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return F.normalize(_features(out), dim=-1)

    @torch.no_grad()
    def embed_frames(self, video: torch.Tensor, batch: int = 16) -> torch.Tensor:
        """Unit-norm image embeddings (F, D) of frames (F, 3, H, W) in [-1, 1]."""
        pixels = self.preprocess(check_video(video))  # (F, 3, h, w)
        out = [_features(self.model.get_image_features(pixel_values=x)) for x in pixels.split(batch)]
        return F.normalize(torch.cat(out), dim=-1)

    def preprocess(self, video: torch.Tensor) -> torch.Tensor:
        """(F, 3, H, W) in [-1, 1] -> (F, 3, crop H, crop W) normalised CLIP input."""
        x = (video + 1) / 2  # (F, 3, H, W) in [0, 1]
        H, W = x.shape[-2:]
        scale = self.resize / min(H, W)
        size = (max(self.crop[0], round(H * scale)), max(self.crop[1], round(W * scale)))
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=scale < 1).clamp(0, 1)
        top, left = (size[0] - self.crop[0]) // 2, (size[1] - self.crop[1]) // 2
        x = x[:, :, top : top + self.crop[0], left : left + self.crop[1]]
        return (x - self.mean[:, None, None]) / self.std[:, None, None]


def _features(out) -> torch.Tensor:
    # transformers < 5 returns the projected features; 5 returns an output whose pooler_output they are.
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def load_clip(path: str | os.PathLike | None) -> CLIP:
    """Load CLIP from a local folder in transformers format, without network access.

    Args:
        path: folder holding config.json, the weights, the tokenizer files and (optionally)
            preprocessor_config.json; without the latter, OpenAI CLIP's preprocessing at the
            vision model's image size is used.

    Returns:
        The CLIP bundle, model in eval mode on the CPU.
    """
    if path is None:
        raise SetseqError(f"CLIP metrics need a CLIP model; {HOW_TO_PASS}.")
    path = Path(path)
    if not (path / "config.json").is_file():
        raise SetseqError(f"no CLIP model at {str(path)!r} (no config.json there); {HOW_TO_PASS}.")
    try:
        from transformers import AutoTokenizer, CLIPModel
    except ImportError:
        raise SetseqError("CLIP metrics need transformers; install it with `pip install 'setseq[eval]'`.") from None
    try:
        model = CLIPModel.from_pretrained(path, local_files_only=True).eval()
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise SetseqError(f"could not load CLIP from {str(path)!r} ({e}); {HOW_TO_PASS}.") from None
    resize, crop, mean, std = _preprocessing(path, model.config.vision_config.image_size)
    return CLIP(model, tokenizer, resize, crop, torch.tensor(mean), torch.tensor(std))


def _preprocessing(path: Path, image_size: int) -> tuple[int, tuple[int, int], list, list]:
    """(resize, crop, mean, std) from preprocessor_config.json, else OpenAI CLIP's defaults."""
    file = path / "preprocessor_config.json"
    cfg = json.loads(file.read_text()) if file.is_file() else {}
    size = cfg.get("size", image_size)
    resize = size.get("shortest_edge", image_size) if isinstance(size, dict) else size
    crop = cfg.get("crop_size", image_size)
    crop = (crop["height"], crop["width"]) if isinstance(crop, dict) else (crop, crop)
    return resize, crop, list(cfg.get("image_mean", CLIP_MEAN)), list(cfg.get("image_std", CLIP_STD))


def clip_text_score(clip: CLIP, video: torch.Tensor, prompt: str) -> float:
    """CLIP-T: cosine between the prompt's text embedding and the normalised mean of the frames'
    image embeddings.

    Args:
        clip: from `load_clip`.
        video: clip (F, 3, H, W) in [-1, 1].
        prompt: the text the video was generated from (concept tokens such as [v] may stay).
    """
    if not prompt or not prompt.strip():
        raise SetseqError("CLIP-T needs the prompt the video was generated from; pass --prompt TEXT.")
    text = clip.embed_text([prompt])[0]  # (D,)
    frames = F.normalize(clip.embed_frames(video).mean(0), dim=-1)  # (D,)
    return float(text @ frames)


def clip_temporal_coherence(clip: CLIP, video: torch.Tensor) -> float:
    """TC: mean cosine between CLIP image embeddings of consecutive frames.

    Args:
        clip: from `load_clip`.
        video: clip (F, 3, H, W) in [-1, 1], F >= 2.
    """
    return temporal_coherence(video, clip.embed_frames)
