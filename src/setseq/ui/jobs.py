"""The web UI's jobs: one runs at a time on a worker thread, the others wait in order.

A training job keeps its record, RUN.job.json beside the concept file, up to date as it goes (state,
stage, step, losses, time left), so a reloaded page or a restarted server reads where every run
stands from disk. A job's errors reach the page as the CLI's one sentence; anything else is logged
with its traceback on the server's console and reaches the page as one sentence too.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from setseq.errors import SetseqError
from setseq.fileio import atomic_path
from setseq.train import Monitor, Stopped

ACTIVE = ("queued", "running")  # states a record can only be in while a server holds the job


# ============================================================================================
# a run's record on disk
# ============================================================================================


def read_record(path: Path) -> dict[str, Any]:
    """A run's RUN.job.json, or {} when there is none or it cannot be read."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_record(path: Path, record: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1))


class RecordMonitor(Monitor):
    """Writes a training run's progress into its record (at most every `every` seconds, and at each
    stage's end) and stops it when `stop_event` is set."""

    flush_every = 1  # the page shows every step; one host sync per step is small beside a step

    def __init__(self, path: Path, record: dict[str, Any], stop_event: threading.Event, every: float = 0.5):
        self.path, self.record, self.stop_event, self.every = path, record, stop_event, every
        self._written = 0.0

    def start(self, cfg, done: int) -> None:
        self.stages = [(s.name, s.steps) for s in cfg.stages]
        self.t0, self.done0 = time.monotonic(), done
        self.record.update(total=sum(n for _, n in self.stages), done=done, state="running", eta_s=None)
        write_record(self.path, self.record)

    def losses(self, stage_index, stage, step, losses) -> None:
        done = sum(n for _, n in self.stages[:stage_index]) + step
        elapsed = time.monotonic() - self.t0
        rate = (done - self.done0) / elapsed if elapsed > 0 else 0.0  # steps per second in this job
        values = losses.get(stage.name) or [float("nan")]
        self.record.update(
            stage=stage.name,
            stage_index=stage_index,
            stages=len(self.stages),
            step=step,
            stage_steps=stage.steps,
            done=done,
            loss=values[-1],
            losses=losses,
            eta_s=(self.record["total"] - done) / rate if rate > 0 else None,
        )
        now = time.monotonic()
        if now - self._written >= self.every or step == stage.steps:
            write_record(self.path, self.record)
            self._written = now

    def stop(self) -> bool:
        return self.stop_event.is_set()


# ============================================================================================
# the queue
# ============================================================================================


@dataclass
class Job:
    """One piece of work: `work(stop_event)` runs on the worker; `state` goes queued -> running ->
    done, stopped, failed or cancelled; `message` is the sentence a failure says."""

    kind: str  # "train" or "generate"
    run: str
    work: Callable[[threading.Event], Any]
    on_end: Callable[[Job], None] | None = None
    state: str = "queued"
    message: str = ""
    result: Any = None
    finished: threading.Event = field(default_factory=threading.Event)


class Jobs:
    """A first-in first-out queue of jobs and the one worker thread that runs them."""

    def __init__(self):
        self._queue: queue.Queue[Job] = queue.Queue()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.waiting: list[Job] = []
        self.current: Job | None = None
        threading.Thread(target=self._work, name="setseq-ui-jobs", daemon=True).start()

    def submit(self, job: Job) -> Job:
        with self._lock:
            self.waiting.append(job)
        self._queue.put(job)
        return job

    def ahead(self, job: Job) -> int:
        """How many jobs run before `job` (the running one included)."""
        with self._lock:
            before = self.waiting.index(job) if job in self.waiting else 0
            return before + (self.current is not None and self.current is not job)

    def holds(self, run: str, kind: str = "train") -> Job | None:
        """The running or waiting job of `kind` for `run`, if any."""
        with self._lock:
            for job in [self.current, *self.waiting]:
                if job is not None and job.run == run and job.kind == kind:
                    return job
        return None

    def stop(self, run: str) -> bool:
        """Stop `run`'s training: the running job checkpoints and stops, a waiting one is cancelled.
        Returns whether there was one."""
        job = self.holds(run)
        if job is None:
            return False
        with self._lock:
            if job is self.current:
                self._stop.set()
            elif job in self.waiting:
                self.waiting.remove(job)
                job.state = "cancelled"
                self._end(job)
        return True

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            with self._lock:
                if job.state == "cancelled":
                    continue
                self.waiting.remove(job)
                self.current, job.state = job, "running"
                self._stop.clear()
            try:
                job.result = job.work(self._stop)
                job.state = "done"
            except Stopped:
                job.state = "stopped"
            except SetseqError as e:
                job.state, job.message = "failed", str(e)
            except Exception as e:  # not the user's input: the console gets the traceback, the page a sentence
                traceback.print_exc(file=sys.stderr)
                job.state = "failed"
                job.message = (
                    f"the {job.kind} job failed with an unexpected {type(e).__name__}; the server's console shows why."
                )
            with self._lock:
                self.current = None
            self._end(job)

    def _end(self, job: Job) -> None:
        if job.on_end is not None:
            try:
                job.on_end(job)
            except Exception:
                traceback.print_exc(file=sys.stderr)
        job.finished.set()
