import numpy as np
import torch
from pycocotools import mask as mask_utils

from sceneparse.structures import masks as M


def _random_masks(n=4, h=23, w=31, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, h, w)) > 0.6


def test_rle_round_trip_compressed_and_uncompressed():
    m = _random_masks()
    rles = M.encode_rle(torch.from_numpy(m))
    assert all(isinstance(r["counts"], str) for r in rles)
    assert np.array_equal(M.decode_rle(rles), m)
    for r, mi in zip(rles, m):
        un = M.rle_to_uncompressed(r)
        assert isinstance(un["counts"], list)
        assert sum(un["counts"]) == mi.size
        assert np.array_equal(M.decode_rle(un), mi)
        # pycocotools agrees with our uncompressed form
        ref = mask_utils.frPyObjects(un, *un["size"])
        assert np.array_equal(mask_utils.decode(ref).astype(bool), mi)


def test_uncompressed_starting_with_foreground():
    m = np.zeros((3, 4), bool)
    m[0, 0] = True
    un = M.rle_to_uncompressed(M.encode_rle(m[None])[0])
    assert un["counts"][:2] == [0, 1]


def test_polygon_to_mask_matches_pycocotools_and_area():
    poly = [[2.0, 2.0, 12.0, 2.0, 12.0, 8.0, 2.0, 8.0]]
    m = M.polygons_to_mask(poly, 16, 20)
    ref = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(poly, 16, 20))).astype(bool)
    assert np.array_equal(m, ref)
    assert M.area(m[None]).tolist() == [int(ref.sum())]


def test_mask_to_polygons_round_trip_close():
    m = np.zeros((40, 50), bool)
    m[5:20, 8:30] = True
    m[25:35, 35:45] = True
    polys = M.mask_to_polygons(m)
    assert len(polys) == 2
    back = M.polygons_to_mask(polys, 40, 50)
    assert np.array_equal(back, m)  # axis-aligned parts come back pixel-exact
    yy, xx = np.mgrid[:64, :64]
    disk = (yy - 30.3) ** 2 + (xx - 28.7) ** 2 < 15.2 ** 2
    back = M.polygons_to_mask(M.mask_to_polygons(disk), 64, 64)
    assert (back & disk).sum() / (back | disk).sum() > 0.95
    single = np.zeros((5, 5), bool)
    single[2, 3] = True
    assert np.array_equal(M.polygons_to_mask(M.mask_to_polygons(single), 5, 5), single)


def test_masks_to_boxes_pixel_edges_and_empty():
    m = torch.zeros(3, 10, 12, dtype=torch.bool)
    m[0, 2, 3] = True
    m[1, 1:4, 5:11] = True
    b = M.masks_to_boxes(m)
    assert b.tolist() == [[3, 2, 4, 3], [5, 1, 11, 4], [0, 0, 0, 0]]


def test_masks_to_boxes_matches_loop_reference():
    m = _random_masks(6, 17, 19, seed=3)
    m[2] = False
    b = M.masks_to_boxes(m)
    for i in range(6):
        ys, xs = np.nonzero(m[i])
        exp = [0, 0, 0, 0] if len(xs) == 0 else [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert b[i].tolist() == exp


def test_rle_area_equals_pixel_count():
    m = _random_masks(3)
    assert M.rle_area(M.encode_rle(m)).tolist() == m.reshape(3, -1).sum(1).tolist()
