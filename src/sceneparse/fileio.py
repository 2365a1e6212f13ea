"""Atomic file writes, the one implementation every layer uses (checkpoints, exports, datasets,
drawings, plots, reports, JSON).

A writer opens a temporary file next to the target and, once everything is written, moves it into
place with ``os.replace`` (atomic on POSIX and Windows), so a reader -- or a crash, a kill, a full
disk -- never leaves a half-written file under the real name. On error the temporary file is removed.

A full disk (``ENOSPC``), an exceeded quota (``EDQUOT``) or file-size limit (``EFBIG``, e.g.
``ulimit -f``) while writing raises :class:`DiskFullError` naming the file and the file system,
whichever layer wrote (``f.write``, PIL, matplotlib, ``torch.save`` -- whose own error is PyTorch's
``enforce fail at inline_container.cc`` -- or a C encoder writing to the descriptor).
"""
from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

from .errors import SceneparseError

#: errno values that mean "the file system would not take more bytes"
DISK_FULL_ERRNOS = frozenset(e for e in (getattr(errno, "ENOSPC", None), getattr(errno, "EDQUOT", None),
                                         getattr(errno, "EFBIG", None)) if e is not None)


class DiskFullError(SceneparseError, OSError):
    """No space left (or quota / file-size limit reached) writing a file: names the file and the file
    system. Nothing was left under the file's name (the temporary file is removed). An ``OSError``
    too (same ``errno``), so code that handles ``OSError`` keeps working."""

    def __init__(self, err: int, message: str, filename: str | None = None):
        OSError.__init__(self, err, message, filename)

    def __str__(self) -> str:
        return str(self.strerror)

    @classmethod
    def from_oserror(cls, e: OSError, path: str | os.PathLike) -> "DiskFullError":
        if isinstance(e, DiskFullError):
            return e
        path = os.path.abspath(os.fspath(path))
        mount = _mount_point(path)
        if e.errno == getattr(errno, "EFBIG", None):
            what = f"file size limit exceeded (ulimit -f, or the largest file of the file system at {mount})"
        elif e.errno == getattr(errno, "EDQUOT", None):
            what = f"disk quota exceeded on device {mount}"
        else:
            what = f"no space left on device {mount}"
        return cls(e.errno or errno.ENOSPC,
                   f"{what} writing {path} (nothing was written under that name): free some space, or write "
                   "to another folder, and run again", path)


def _mount_point(path: str) -> str:
    p = os.path.dirname(path) or "."
    while not os.path.exists(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    try:
        while not os.path.ismount(p):
            parent = os.path.dirname(p)
            if parent == p:
                break
            p = parent
    except OSError:  # pragma: no cover - a folder we may not stat
        pass
    return p


def disk_full_cause(e: BaseException | None) -> OSError | None:
    """The disk-full ``OSError`` behind ``e`` (itself, or in its ``__cause__`` / ``__context__``
    chain: ``torch.save`` turns a failed write into a ``RuntimeError``), else ``None``."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return e
        e = e.__cause__ or e.__context__
    return None


class _Writer:
    """The file object ``atomic_open`` hands out: the real file, whose write errors on a full disk
    become a :class:`DiskFullError` naming the target (every other attribute is the file's)."""

    __slots__ = ("_f", "_path")

    def __init__(self, f: IO, path: Path):
        self._f = f
        self._path = path

    def _check(self, e: OSError):
        if e.errno in DISK_FULL_ERRNOS:
            raise DiskFullError.from_oserror(e, self._path) from e
        raise e

    def write(self, data):
        try:
            return self._f.write(data)
        except OSError as e:
            self._check(e)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._f.flush()
        except OSError as e:
            self._check(e)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __iter__(self):
        return iter(self._f)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:  # the file is closed by atomic_open
        return None


def _default_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _default_file_mode()


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8", *,
                durable: bool = False) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success it replaces ``path`` in one step.
    ``durable=True`` also calls ``fsync`` before the rename (survives a power cut; costs
    milliseconds per file, which matters when writing one label file per image, not for a checkpoint).
    A full disk raises :class:`DiskFullError` naming ``path``; the temporary file is removed."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600 files; give the usual umask-based mode
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield _Writer(f, path)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        full = disk_full_cause(e)
        if full is not None and not isinstance(e, DiskFullError):
            raise DiskFullError.from_oserror(full, path) from e
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = False) -> Path:
    with atomic_open(path, "wb", durable=durable) as f:
        f.write(data)
    return Path(path)
