"""Stopping on request: a scheduler's SIGTERM (SLURM, Kubernetes) or Ctrl-C (SIGINT).

During a training run, the first signal asks the run to stop: it finishes the current optimiser
step, writes its checkpoint and raises `Preempted`, whose message says how to resume; the CLI then
exits with the conventional code 128 + signal number (143 for SIGTERM, 130 for SIGINT). A second
signal stops at once (`StoppedAtOnce`, a KeyboardInterrupt: temporary files are still removed, so
nothing half-written is left). Outside a training run, SIGTERM ends a command as Ctrl-C does
(`sigterm_as_interrupt`), so that its temporary files are removed too.
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


def _stop_now(signum: int, frame) -> None:
    raise StoppedAtOnce(signum)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM ends the command as Ctrl-C does (`StoppedAtOnce`, exit code 143),
    so that temporary files are removed on the way out instead of the process vanishing; a
    training run inside the block handles it its own way (`stop_on_signals`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _stop_now)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
