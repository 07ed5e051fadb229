"""Files on disk: atomic writes (nothing half-written is ever left at the target path) and the cache root."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def cache_root() -> Path:
    """Where setseq caches what it can make again (prior videos, encodings): $SETSEQ_CACHE, or
    ~/.cache/setseq when it is not set."""
    return Path(os.environ.get("SETSEQ_CACHE", Path.home() / ".cache" / "setseq"))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so writers pick the right format);
    on success it is renamed onto `path`, on failure removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # some writers create 0600 files
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
