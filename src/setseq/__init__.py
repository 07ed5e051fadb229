"""setseq: Set-and-Sequence personalisation of video diffusion transformers with dynamic concepts."""

__version__ = "0.1.0"

from setseq.errors import SetseqError  # noqa: E402

__all__ = ["SetseqError", "__version__"]
