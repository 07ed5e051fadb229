"""Stopping a run on request: a scheduler's SIGTERM (SLURM, Kubernetes) or Ctrl-C (SIGINT).

The first signal asks the run to stop: it finishes the current optimiser step, writes its
checkpoint and raises `Preempted`, whose message says how to resume; the CLI then exits with the
conventional code 128 + signal number (143 for SIGTERM, 130 for SIGINT). A second signal stops at
once (`StoppedAtOnce`, a KeyboardInterrupt; temporary files are still removed, nothing half-written is left).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """A run stopped by a signal after writing its checkpoint; ``code`` is the exit code to use."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.code = 128 + signum


class StoppedAtOnce(KeyboardInterrupt):
    """The second signal: the run stops where it is (its last periodic checkpoint stays)."""

    def __init__(self, signum: int):
        super().__init__(f"{signal.Signals(signum).name} received twice")
        self.code = 128 + signum


class StopRequest:
    """Whether a stop was asked for, and by which signal (``signum``, None while none)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:  # the second signal: stop now
            raise StoppedAtOnce(signum)
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Within the block, SIGTERM and SIGINT set the yielded request instead of ending the process
    (a second one raises StoppedAtOnce, a KeyboardInterrupt); the previous handlers are restored on leaving. Outside
    the main thread (where Python cannot install handlers) the request is never set."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.signal(s, request._handle) for s in SIGNALS}
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
