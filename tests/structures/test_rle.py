"""One polygon-to-RLE (``sceneparse.structures.rle``): bit-identical to pycocotools' ``annToRLE``
(``merge(frPyObjects(rings, h, w))``), torch-free, and the function every other layer calls."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from sceneparse.structures import masks as M
from sceneparse.structures import rle as R

SRC = Path(__file__).resolve().parents[2] / "src" / "sceneparse"


def _ann_to_rle(rings, h, w):
    """pycocotools' own rule for one object given as polygons (``COCO.annToRLE``)."""
    return mask_utils.merge(mask_utils.frPyObjects(rings, h, w))


def _random_objects(rng, n, h, w):
    objs = []
    for _ in range(n):
        rings = []
        for _ in range(int(rng.integers(1, 4))):
            k = int(rng.integers(3, 9))
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            rad = rng.uniform(0.5, 1 + 0.4 * min(h, w), k)
            pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)  # partly outside the image
            rings.append(np.round(pts, 2).ravel().tolist())
        objs.append(rings)
    return objs


def test_polygons_to_rle_is_pycocotools_bit_for_bit():
    rng = np.random.default_rng(0)
    for h, w in ((17, 23), (64, 48), (1, 5)):
        for rings in _random_objects(rng, 25, h, w):
            want = _ann_to_rle(rings, h, w)
            got = R.polygons_to_rle(rings, h, w)
            assert got == {"size": [h, w], "counts": want["counts"]}
            assert isinstance(got["counts"], bytes)


def test_ring_types_and_odd_rings_read_as_pycocotools_reads_them():
    rings = [[2, 2, 12, 2, 12, 8, 2, 8], [1, 1, 3, 3]]  # ints; a 4-number ring after a polygon
    want = _ann_to_rle(rings, 16, 20)["counts"]
    assert R.polygons_to_rle(rings, 16, 20)["counts"] == want
    assert R.polygons_to_rle([np.asarray(r) for r in rings], 16, 20)["counts"] == want
    assert R.polygons_to_rle(tuple(tuple(r) for r in rings), 16, 20)["counts"] == want
    # a first part of <= 4 numbers: pycocotools does not read it as a polygon; neither do we
    for odd in ([[1, 2, 3, 4]], [[1, 2]], [1, 2, 3, 4, 5, 6]):
        try:
            want = _ann_to_rle(odd, 12, 12)
        except Exception as e:  # noqa: BLE001 -- whatever pycocotools does, we do
            with pytest.raises(type(e)):
                R.polygons_to_rles([odd], 12, 12)
        else:
            assert R.polygons_to_rles([odd], 12, 12)[0] == want


def test_batched_objects_equal_one_call_each():
    rng = np.random.default_rng(1)
    objs = _random_objects(rng, 40, 30, 41)
    got = R.polygons_to_rles(objs, 30, 41)
    assert [g["counts"] for g in got] == [_ann_to_rle(o, 30, 41)["counts"] for o in objs]


def test_masks_polygons_to_rle_is_the_same_rle_with_str_counts():
    rng = np.random.default_rng(2)
    for rings in _random_objects(rng, 10, 25, 25):
        one = R.polygons_to_rle(rings, 25, 25)
        m = M.polygons_to_rle(rings, 25, 25)
        assert m == {"size": [25, 25], "counts": one["counts"].decode("ascii")}
        assert np.array_equal(M.polygons_to_mask(rings, 25, 25), mask_utils.decode(one).astype(bool))


def test_every_layer_calls_the_one_implementation(monkeypatch):
    from sceneparse.evaluation.coco import mask_iou

    calls = []
    real = R.polygons_to_rles

    def spy(objects, h, w):
        calls.append(len(objects))
        return real(objects, h, w)

    monkeypatch.setattr(R, "polygons_to_rles", spy)
    M.polygons_to_rle([[0, 0, 5, 0, 5, 5]], 8, 8)
    assert calls == [1]
    assert mask_iou.polygons_to_rles is real  # imported by name: the evaluation path uses the same function
    monkeypatch.setattr(mask_iou, "polygons_to_rles", spy)
    calls.clear()

    class Sizes:  # the part of a GroundTruthTable that to_rles reads
        @staticmethod
        def image_sizes(ids):
            return np.full(len(ids), 8), np.full(len(ids), 8)

    segs = [[[0, 0, 5, 0, 5, 5]], [[1, 1, 6, 1, 6, 6], [0, 0, 2, 0, 2, 2]], {"size": [8, 8], "counts": [64]}]
    out = mask_iou.to_rles(segs, np.array([1, 1, 1]), Sizes)
    assert calls == [2]
    assert [o["counts"] for o in out[:2]] == [_ann_to_rle(s, 8, 8)["counts"] for s in segs[:2]]


def test_no_other_polygon_rasterisation_in_the_source():
    """Polygons are merged (``annToRLE``) in structures/rle.py only; validate.py has no converter of its own."""
    merging = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                     if re.search(r"\bmerge\(", p.read_text()) and "mask_utils" in p.read_text())
    assert merging == ["structures/rle.py"]
    assert "frPyObjects" not in (SRC / "evaluation" / "validate.py").read_text()  # coco_columns uses to_rles


def test_rle_module_needs_no_torch():
    code = ("import sys; import sceneparse.structures.rle as r; "
            "r.polygons_to_rle([[0, 0, 4, 0, 4, 4]], 5, 5); "
            "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "ok" in run.stdout, run.stdout + run.stderr


def test_structures_types_still_import_from_the_package():
    import sceneparse.structures as S
    from sceneparse.structures import ImageBatch, Instances, PanopticMap, SegmentInfo, SemanticMap, Target

    assert S.Instances is Instances and S.Target is Target
    assert {ImageBatch, PanopticMap, SegmentInfo, SemanticMap}
    assert set(S.__all__) <= set(dir(S))
    with pytest.raises(AttributeError):
        S.Nope  # noqa: B018
