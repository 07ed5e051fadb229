"""Messages for people: warnings and notes on stderr, one line each, from rank 0 only when torchrun
runs several processes (they would all say the same)."""

import os
import sys


def _quiet() -> bool:
    return os.environ.get("RANK", "0") != "0"


def warn(message: str) -> None:
    if not _quiet():
        print(f"setseq: warning: {message}", file=sys.stderr, flush=True)


def note(message: str) -> None:
    if not _quiet():
        print(f"setseq: {message}", file=sys.stderr, flush=True)
