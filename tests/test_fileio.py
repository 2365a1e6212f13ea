import os

import pytest

from sceneparse.fileio import atomic_open, atomic_write_bytes, atomic_write_text


def test_atomic_write_replaces_in_one_step_and_cleans_up_on_error(tmp_path):
    p = tmp_path / "sub" / "a.txt"
    atomic_write_text(p, "one")
    assert p.read_text() == "one"
    mode = os.stat(p).st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # not mkstemp's 0600
    with pytest.raises(RuntimeError):
        with atomic_open(p, "w") as f:
            f.write("half")
            raise RuntimeError("killed mid-write")
    assert p.read_text() == "one"  # the old file stays whole
    assert sorted(x.name for x in p.parent.iterdir()) == ["a.txt"]  # no temp file left
    atomic_write_bytes(p, b"\x00two", durable=True)
    assert p.read_bytes() == b"\x00two"


# ---- a full disk (issue 24 s2) --------------------------------------------------------------------------
import errno  # noqa: E402
import types  # noqa: E402

import numpy as np  # noqa: E402

from sceneparse import fileio  # noqa: E402
from sceneparse.errors import SceneparseError  # noqa: E402
from sceneparse.fileio import DiskFullError  # noqa: E402


def full_disk(monkeypatch, only: str | None = None):
    """Every temporary file of ``atomic_open`` (whose name contains ``only``, if given) is /dev/full:
    the kernel answers ENOSPC to every write, whichever layer writes (Python, PIL's C encoder on the
    descriptor, torch.save's writer callback), as on a full disk. The real temp file is created (and
    must be removed)."""
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full (Linux)")
    import tempfile as real

    def mkstemp(prefix="", suffix="", dir=None):
        fd, tmp = real.mkstemp(prefix=prefix, suffix=suffix, dir=dir)
        if only is None or only in prefix:
            os.close(fd)
            fd = os.open("/dev/full", os.O_WRONLY)
        return fd, tmp

    monkeypatch.setattr(fileio, "tempfile", types.SimpleNamespace(mkstemp=mkstemp))


def _assert_clean(err: BaseException, path) -> None:
    assert isinstance(err, DiskFullError) and isinstance(err, SceneparseError) and isinstance(err, OSError)
    assert err.errno == errno.ENOSPC
    assert "no space left on device" in str(err) and f"writing {os.path.abspath(path)}" in str(err)
    assert not [p for p in os.listdir(os.path.dirname(path)) if p.endswith(".tmp")]  # no temp file left


def test_full_disk_names_the_file_for_every_kind_of_writer_and_leaves_nothing(tmp_path, monkeypatch):
    import torch

    from sceneparse.data.formats.coco_results import JsonListWriter
    from sceneparse.engine.checkpoint import atomic_torch_save
    from sceneparse.viz.draw import save_image

    old = tmp_path / "old.txt"
    atomic_write_text(old, "whole")
    full_disk(monkeypatch)
    cases = {
        "old.txt": lambda p: atomic_write_text(p, "x" * 100_000),  # the old file stays whole
        "a.bin": lambda p: atomic_write_bytes(p, b"\0" * 10, durable=True),
        "c.pt": lambda p: atomic_torch_save({"w": torch.zeros(1000)}, p),  # torch: "enforce fail at inline_container"
        "d.png": lambda p: save_image(p, np.zeros((64, 64, 3), np.uint8)),  # PIL's encoder writes to the fd
    }
    for name, write in cases.items():
        path = tmp_path / name
        with pytest.raises(DiskFullError) as e:
            write(path)
        _assert_clean(e.value, path)
        assert name == "old.txt" or not path.exists()
    assert old.read_text() == "whole"
    # a streamed writer (what predict's predictions.json is): the error comes from write / close
    with pytest.raises(DiskFullError) as e:
        w = JsonListWriter(tmp_path / "p.json")
        for i in range(20_000):
            w.write({"i": i})
        w.close()
    w.abort()
    _assert_clean(e.value, tmp_path / "p.json")
    # pickled through a process pool (data synth's workers) it stays itself
    import pickle

    again = pickle.loads(pickle.dumps(e.value))
    assert type(again) is DiskFullError and str(again) == str(e.value) and again.errno == errno.ENOSPC


def test_quota_and_file_size_limit_are_named_too(tmp_path):
    e = DiskFullError.from_oserror(OSError(errno.EFBIG, "File too large"), tmp_path / "x.pt")
    assert "file size limit exceeded" in str(e) and str(tmp_path / "x.pt") in str(e)
    if hasattr(errno, "EDQUOT"):
        assert "disk quota exceeded" in str(DiskFullError.from_oserror(OSError(errno.EDQUOT, "q"), tmp_path / "x"))


def test_file_size_limit_in_a_subprocess_is_a_message(tmp_path):
    """RLIMIT_FSIZE (``ulimit -f``): the kernel's EFBIG, through torch.save, becomes the named error."""
    import subprocess
    import sys

    pytest.importorskip("resource")
    code = ("import resource, torch\n"
            "from sceneparse.engine.checkpoint import atomic_torch_save\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))\n"
            f"atomic_torch_save({{'w': torch.zeros(100000)}}, {str(tmp_path / 'big.pt')!r})\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "DiskFullError" in r.stderr and "file size limit exceeded" in r.stderr, r.stderr
    assert "inline_container" not in r.stderr.splitlines()[-1]
    assert os.listdir(tmp_path) == []
