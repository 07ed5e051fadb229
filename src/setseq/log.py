"""Messages for people: warnings and notes on stderr, one line each."""

import sys


def warn(message: str) -> None:
    print(f"setseq: warning: {message}", file=sys.stderr, flush=True)


def note(message: str) -> None:
    print(f"setseq: {message}", file=sys.stderr, flush=True)
