"""Evaluation metrics: the paper's four (MSE, ArcFace ID, CLIP-T, TC) and toy-world ones.

`video` needs no model; `clip` needs transformers and a local CLIP folder; `identity` needs
insightface or onnxruntime and a local face model; `toy` reads toy-world clips with the checker.
Optional packages are imported only when a metric that needs them is loaded.
"""

from setseq.metrics.video import match_reference, mse, pixel_coherence, temporal_coherence

__all__ = ["match_reference", "mse", "pixel_coherence", "temporal_coherence"]
