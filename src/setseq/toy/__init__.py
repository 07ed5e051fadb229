"""The embedded default: a procedural toy world and a small video DiT trained on it."""
