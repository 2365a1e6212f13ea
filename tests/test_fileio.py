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
