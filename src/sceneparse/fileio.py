"""Atomic file writes, the one implementation every layer uses (checkpoints, exports, datasets,
drawings, plots, reports, JSON).

A writer opens a temporary file next to the target and, once everything is written, moves it into
place with ``os.replace`` (atomic on POSIX and Windows), so a reader -- or a crash, a kill, a full
disk -- never leaves a half-written file under the real name. On error the temporary file is removed.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


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
    milliseconds per file, which matters when writing one label file per image, not for a checkpoint)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600 files; give the usual umask-based mode
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = False) -> Path:
    with atomic_open(path, "wb", durable=durable) as f:
        f.write(data)
    return Path(path)
