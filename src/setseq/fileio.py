"""Files on disk: atomic writes (nothing half-written is ever left at the target path), outputs checked
before a long run, write failures (a folder in the way, no permission, a full disk) told in one
sentence, and the cache root."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from setseq.errors import SetseqError

_OS_ERROR = re.compile(r"os error (\d+)")  # how Rust libraries (safetensors) report an errno


def cache_root() -> Path:
    """Where setseq caches what it can make again (prior videos, encodings): $SETSEQ_CACHE, or
    ~/.cache/setseq when it is not set."""
    return Path(os.environ.get("SETSEQ_CACHE", Path.home() / ".cache" / "setseq"))


def write_error(path: str | Path, e: BaseException) -> SetseqError | None:
    """The one sentence for a failed write of `path`, or None when `e` is not an operating-system
    error (an OSError, or a writer's error that carries one, e.g. safetensors' "(os error 28)")."""
    code = getattr(e, "errno", None) if isinstance(e, OSError) else None
    if code is None and (m := _OS_ERROR.search(str(e))):
        code = int(m.group(1))
    if code is None:
        return None if not isinstance(e, OSError) else SetseqError(f"could not write {str(path)!r} ({e}).")
    where = f"could not write {str(path)!r}"
    why = {
        errno.ENOSPC: "the disk is full; free some space or write to another disk",
        errno.EDQUOT: "the disk quota is used up; free some space or write to another disk",
        errno.EFBIG: "the file grew past the largest this process may write (ulimit -f); raise the limit",
        errno.EACCES: "permission denied; choose a folder you can write to",
        errno.EPERM: "permission denied; choose a folder you can write to",
        errno.EROFS: "the file system is read-only; choose a folder you can write to",
        errno.EISDIR: "it is a folder; give a file name inside it instead",
        errno.ENOTDIR: "part of the path is a file, not a folder; give another path",
        errno.ENOENT: "its folder does not exist; create it first",
    }.get(code, f"{os.strerror(code)}; check the folder and the disk")
    return SetseqError(f"{where}: {why}.")


def check_writable(*paths: str | Path, create: bool = False) -> None:
    """Refuse, in one sentence and before any long work, output files that cannot be written: a
    folder where the file should go, a folder that does not exist (with `create`: one that could not
    be created), or one this process cannot create files in (found by creating and removing a small
    file there, or in the nearest folder that exists).

    Raises:
        SetseqError: naming the first such path and what to do.
    """
    probed = set()
    for path in map(Path, paths):
        if path.is_dir():
            raise SetseqError(
                f"the output {str(path)!r} is a folder; give a file name inside it, e.g. {str(path / 'NAME')!r}."
            )
        folder = path.parent
        if not folder.is_dir() and not create:
            raise SetseqError(f"the output folder {str(folder)!r} does not exist; create it or choose another.")
        while not folder.exists() and folder != folder.parent:  # where the missing folders would be made
            folder = folder.parent
        if not folder.is_dir():
            raise write_error(path, NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)))
        if folder in probed:
            continue
        probed.add(folder)
        try:
            fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{path.stem}.probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise write_error(path, e) from None


def check_space(folder: str | Path, need: int, what: str) -> None:
    """Refuse, before the work that would fill it, a disk with less than `need` bytes free.

    Args:
        folder: where the files will be written (its nearest existing folder is measured).
        need: bytes the files will take; what: what they are, for the message.

    Raises:
        SetseqError: saying how much is free and how much is needed.
    """
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free < need:
        raise SetseqError(
            f"the disk holding {str(folder)!r} has {free / 2**20:.1f} MiB free, but {what} take about "
            f"{need / 2**20:.1f} MiB; free some space or write to another disk."
        )


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so writers pick the right format);
    on success it is renamed onto `path`, on failure removed.

    Raises:
        SetseqError: when `path` is a folder, or the write fails for an operating-system reason
            (no permission, a full disk, ...: see `write_error`); nothing is left behind.
    """
    path = Path(path)
    if path.is_dir():
        raise SetseqError(f"could not write {str(path)!r}: it is a folder; give a file name inside it instead.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(path, e) from None
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # some writers create 0600 files
        os.replace(tmp, path)
    except Exception as e:
        said = write_error(path, e)
        if said is None:
            raise
        raise said from None
    finally:
        tmp.unlink(missing_ok=True)
