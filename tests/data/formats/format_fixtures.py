"""Tiny datasets for the format tests: a few small PNGs written into ``tmp_path``.
(Imported by the tests as a plain module; the fixtures are in this folder's conftest.py.)"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from sceneparse.structures.keypoints import COCO_KEYPOINT_NAMES, COCO_SKELETON

#: (file_name, height, width): one square and two non-square images, so x and y scales differ
IMAGES = [("img_a.png", 32, 32), ("img_b.png", 24, 40), ("img_c.png", 40, 28)]
CATEGORIES = [{"id": 1, "name": "cat", "supercategory": "animal"},
              {"id": 3, "name": "dog", "supercategory": "animal"},
              {"id": 7, "name": "car", "supercategory": "vehicle"}]


def write_images(root: Path, images=IMAGES, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name, h, w in images:
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / name)
    return root


def _square_rle(h: int, w: int, y0: int, x0: int, size: int, compressed: bool) -> dict:
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0:y0 + size, x0:x0 + size] = 1
    m[y0 + 1, x0 + size] = 1  # a pixel outside the square so the mask is not a rectangle
    if compressed:
        r = mask_utils.encode(np.asfortranarray(m))
        return {"size": [h, w], "counts": r["counts"].decode("ascii")}
    flat = m.ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"size": [h, w], "counts": [int(c) for c in counts]}


def coco_instances() -> dict:
    """Hand-made COCO instances: sparse category ids, polygons (one with two rings), compressed and
    uncompressed RLE, a crowd region, an extra key."""
    images = [{"id": i + 1, "file_name": n, "height": h, "width": w, "license": 2} for i, (n, h, w) in enumerate(IMAGES)]
    anns = [
        {"id": 11, "image_id": 1, "category_id": 1, "bbox": [2.5, 3.25, 10.0, 12.5], "area": 98.0, "iscrowd": 0,
         "segmentation": [[2.5, 3.25, 12.5, 3.25, 12.5, 15.75, 2.5, 15.75]]},
        {"id": 12, "image_id": 1, "category_id": 7, "bbox": [16.0, 4.0, 14.0, 20.0], "area": 90.0, "iscrowd": 0,
         "segmentation": [[16.0, 4.0, 22.0, 4.0, 22.0, 12.0, 16.0, 12.0], [24.0, 14.0, 30.0, 14.0, 30.0, 24.0, 24.0, 24.0]],
         "attributes": {"occluded": True}},
        {"id": 21, "image_id": 2, "category_id": 3, "bbox": [5.0, 6.0, 8.0, 9.0], "area": 65.0, "iscrowd": 0,
         "segmentation": _square_rle(24, 40, 6, 5, 8, compressed=True)},
        {"id": 22, "image_id": 2, "category_id": 1, "bbox": [20.0, 2.0, 7.0, 7.0], "area": 50.0, "iscrowd": 1,
         "segmentation": _square_rle(24, 40, 2, 20, 6, compressed=False)},
        {"id": 31, "image_id": 3, "category_id": 3, "bbox": [1.0, 20.5, 26.0, 19.5], "area": 200.0, "iscrowd": 0,
         "segmentation": [[1.0, 20.5, 27.0, 20.5, 14.0, 40.0]]},
    ]
    return {"images": images, "annotations": anns, "categories": [dict(c) for c in CATEGORIES]}


def coco_keypoints() -> dict:
    """Two persons with COCO's 17 keypoints (some unlabeled, some occluded) and one without any."""
    rng = np.random.default_rng(3)
    images = [{"id": 5, "file_name": "img_b.png", "height": 24, "width": 40}]
    anns = []
    for aid, box in ((1, [3.0, 2.0, 14.0, 20.0]), (2, [20.0, 1.0, 16.0, 22.0])):
        x0, y0, w, h = box
        xy = np.stack([rng.uniform(x0, x0 + w, 17), rng.uniform(y0, y0 + h, 17)], 1).round(2)
        v = rng.integers(0, 3, 17)
        xy[v == 0] = 0
        kp = np.concatenate([xy, v[:, None]], 1).ravel().tolist()
        kp[2::3] = [int(t) for t in v]
        anns.append({"id": aid, "image_id": 5, "category_id": 1, "bbox": box, "area": w * h, "iscrowd": 0,
                     "keypoints": kp, "num_keypoints": int((v > 0).sum())})
    anns.append({"id": 3, "image_id": 5, "category_id": 1, "bbox": [30.0, 10.0, 5.0, 8.0], "area": 40.0,
                 "iscrowd": 0, "keypoints": [0] * 51, "num_keypoints": 0})
    cats = [{"id": 1, "name": "person", "supercategory": "person", "keypoints": list(COCO_KEYPOINT_NAMES),
             "skeleton": [list(e) for e in COCO_SKELETON]}]
    return {"images": images, "annotations": anns, "categories": cats}


def random_coco(n_per_image: int = 6, seed: int = 1) -> dict:
    """Random non-integer boxes inside the images (and touching the borders)."""
    rng = np.random.default_rng(seed)
    images = [{"id": i + 1, "file_name": n, "height": h, "width": w} for i, (n, h, w) in enumerate(IMAGES)]
    anns, aid = [], 1
    for im in images:
        h, w = im["height"], im["width"]
        x0 = rng.uniform(0, w - 2, n_per_image)
        y0 = rng.uniform(0, h - 2, n_per_image)
        x1 = rng.uniform(x0 + 0.5, w)
        y1 = rng.uniform(y0 + 0.5, h)
        x0[0], y0[0], x1[0], y1[0] = 0.0, 0.0, w, h  # the whole image
        for a, b, c, d in zip(x0, y0, x1, y1):
            anns.append({"id": aid, "image_id": im["id"], "category_id": int(rng.choice([1, 3, 7])),
                         "bbox": [float(a), float(b), float(c - a), float(d - b)], "area": float((c - a) * (d - b)),
                         "iscrowd": 0})
            aid += 1
    return {"images": images, "annotations": anns, "categories": [dict(c) for c in CATEGORIES]}


def dump(data: dict, path: Path) -> Path:
    path.write_text(json.dumps(data))
    return path
