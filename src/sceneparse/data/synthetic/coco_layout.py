"""Scenes -> COCO's on-disk layout: records, exact polygons / RLE, and the JSON dictionaries.

Segmentations. A non-crowd thing is written as COCO polygons when polygons can say exactly which
pixels it covers, else as RLE. The polygons trace pixel *corners* (the mask is upsampled 2x, its
contours traced by OpenCV and mapped back with ``ceil(u / 2)``, which lands every vertex on a pixel
corner); pycocotools rasterises such a staircase polygon to exactly the pixels inside it. A mask
with a hole (closed rings, or a thing with another thing inside it) cannot be written as COCO
polygons (they are unioned, holes are lost), so it is written as compressed RLE; every polygon set
is checked against the mask's RLE before it is used. Crowd regions are always RLE (COCO's rule).
"""
from __future__ import annotations

import cv2
import numpy as np

from ...conventions import CategoryMap
from ...structures.keypoints import COCO_KEYPOINT_NAMES
from ...structures.masks import encode_rle, polygons_to_rle
from ..records import ImageRecord, ObjectRecord, PanopticRecord
from .scene import Scene, SceneInstance


def corner_polygons(mask: np.ndarray) -> list[list[float]] | None:
    """``bool [h, w]`` -> COCO polygons (flat ``[x0, y0, x1, y1, ...]`` rings on pixel corners, crop
    frame) covering exactly the mask, or ``None`` when the mask has a hole. Collinear vertices are
    dropped, so a rectangle of pixels is 4 vertices."""
    up = np.repeat(np.repeat(mask.astype(np.uint8), 2, axis=0), 2, axis=1)
    contours, hierarchy = cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    if (hierarchy[0][:, 3] >= 0).any():  # a contour with a parent is a hole
        return None
    polys = []
    for c in contours:
        p = (c.reshape(-1, 2) + 1) // 2  # sub-pixel u -> corner ceil(u / 2)
        p = p[np.any(p != np.roll(p, 1, axis=0), axis=1)]  # drop repeated vertices
        d_in = p - np.roll(p, 1, axis=0)
        d_out = np.roll(p, -1, axis=0) - p
        p = p[d_in[:, 0] * d_out[:, 1] - d_in[:, 1] * d_out[:, 0] != 0]  # drop collinear vertices
        if len(p) >= 3:
            polys.append(p.astype(np.float64).ravel().tolist())
    return polys


def segmentation(inst: SceneInstance) -> tuple[object, bool]:
    """COCO segmentation of an instance and whether it is polygons (else compressed RLE)."""
    h, w = inst.mask.shape
    rle = encode_rle(inst.mask)[0]
    if inst.iscrowd:
        return rle, False
    x0, y0, x1, y1 = (int(v) for v in inst.bbox)
    polys = corner_polygons(inst.mask[y0:y1, x0:x1])
    if polys:
        polys = [(np.asarray(p).reshape(-1, 2) + (x0, y0)).ravel().tolist() for p in polys]
        if polygons_to_rle(polys, h, w)["counts"] == rle["counts"]:
            return polys, True
    return rle, False


def scene_records(scene: Scene, image_id: int, file_name: str, png_name: str
                  ) -> tuple[ImageRecord, list[ObjectRecord], PanopticRecord]:
    """The scene's COCO records (annotation ids are filled in later, per split, in order)."""
    h, w = scene.image_size
    image = ImageRecord(id=image_id, file_name=file_name, height=h, width=w)
    objects = []
    for inst in scene.instances:
        segm, _ = segmentation(inst)
        objects.append(ObjectRecord(id=-1, image_id=image_id, label=inst.label, bbox=inst.bbox.copy(),
                                    iscrowd=inst.iscrowd, area=float(inst.area), segmentation=segm,
                                    keypoints=None if inst.keypoints is None else inst.keypoints.copy()))
    pan = PanopticRecord(image_id=image_id, file_name=png_name, segments_info=[s.to_coco() for s in scene.segments])
    return image, objects, pan


def coco_dicts(images: list[ImageRecord], objects: list[ObjectRecord], panoptic: list[PanopticRecord],
               categories: CategoryMap, info: dict) -> tuple[dict, dict, dict]:
    """``(instances, person_keypoints, panoptic)`` JSON dictionaries of one split.

    Instances list every category (things and stuff, with ``isthing``) and every thing / crowd
    annotation; person_keypoints hold the person category (keypoint names, 1-based skeleton) and the
    person annotations, crowd ones included (with ``num_keypoints = 0``), with the same ids; panoptic
    follows COCO panoptic (``segments_info`` per image, PNG file name).
    """
    imgs = [{"id": i.id, "file_name": i.file_name, "height": i.height, "width": i.width} for i in images]
    cats = categories.to_coco()
    anns, person_anns = [], []
    person_label = categories.names.index("person") if "person" in categories.names else -1
    for o in objects:
        x0, y0, x1, y1 = (float(v) for v in o.bbox)
        a = {"id": o.id, "image_id": o.image_id, "category_id": categories.to_id(o.label),
             "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float(o.area), "iscrowd": int(o.iscrowd),
             "segmentation": o.segmentation}
        anns.append(a)
        if o.label == person_label:
            kp = np.zeros((len(COCO_KEYPOINT_NAMES), 3)) if o.keypoints is None else o.keypoints
            flat = np.round(kp.astype(np.float64), 2).ravel().tolist()
            person_anns.append({**a, "keypoints": flat, "num_keypoints": int((kp[:, 2] > 0).sum())})
    person_cats = [c for c in cats if c["name"] == "person"]
    pan = [{"image_id": p.image_id, "file_name": p.file_name, "segments_info": p.segments_info} for p in panoptic]
    return ({"info": info, "images": imgs, "annotations": anns, "categories": cats},
            {"info": info, "images": imgs, "annotations": person_anns, "categories": person_cats},
            {"info": info, "images": imgs, "annotations": pan, "categories": cats})
