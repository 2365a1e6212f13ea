"""Pascal VOC XML annotations (one XML file per image).

VOC boxes count pixels from 1 and include both end pixels: an object covering pixel columns
``j0..j1`` (0-based) is written ``xmin = j0 + 1, xmax = j1 + 1``. In sceneparse's continuous
convention the same object spans ``[j0, j1 + 1)``, so reading maps
``(xmin, ymin, xmax, ymax) -> (xmin - 1, ymin - 1, xmax, ymax)`` and writing maps back. Coordinates
that are not whole numbers are written with up to 4 decimals (so conversions round-trip).

``difficult``, ``truncated``, ``occluded`` (bools) and ``pose`` (str) are kept in
``ObjectRecord.extra``. VOC has no crowd regions: a crowd object is written with ``difficult=1``
and ``<iscrowd>1</iscrowd>`` (read back as a crowd). Masks and keypoints have no place in VOC
XML; the writer lists the objects that lose them.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from ...errors import Problem
from ..records import AnnotationSet, ImageRecord, ObjectRecord
from ._io import WriteResult, atomic_open, categories_from_names, fmt_num, ids_from_stems, image_size, output_path
from ._parse import fail
from .validate import Checker, Origin, validate_annotation_set

#: The 20 Pascal VOC classes in their customary order (labels 0..19, ids 1..20).
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
FIELD_NAMES = {"bbox": "bndbox", "category": "name", "file_name": "filename", "size": "size"}
_FLAGS = ("difficult", "truncated", "occluded")


def _text(el: ET.Element, tag: str) -> str | None:
    child = el.find(tag)
    if child is None or child.text is None:
        return None
    return child.text.strip()


def _num(el: ET.Element, tag: str, file: str, rec: str, field: str) -> float:
    t = _text(el, tag)
    if t is None:
        fail(file, rec, field, f"missing <{tag}>")
    try:
        return float(t)
    except ValueError:
        fail(file, rec, field, f"<{tag}> is not a number", t)


def _flag(el: ET.Element, tag: str, file: str, rec: str) -> bool | None:
    t = _text(el, tag)
    if t is None or t == "":
        return None
    try:
        return bool(int(float(t)))
    except ValueError:
        fail(file, rec, tag, "expected 0 or 1", t)


class _Parsed:
    __slots__ = ("file", "file_name", "height", "width", "extra", "objects")

    def __init__(self, file, file_name, height, width, extra, objects):
        self.file, self.file_name, self.height, self.width = file, file_name, height, width
        self.extra, self.objects = extra, objects


def parse_voc_xml(xml_path: Path, image_root: Path | None) -> _Parsed:
    """One VOC XML file -> its image fields and objects ``(index, name, box XYXY, iscrowd, extra)``.
    The image size comes from ``<size>``, or from the image header when ``<size>`` is missing / zero."""
    file = str(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        fail(file, None, None, f"invalid XML: {e}")
    except OSError as e:
        fail(file, None, None, f"cannot read: {e}")
    if root.tag != "annotation":
        fail(file, None, None, f"root element must be <annotation>, got <{root.tag}>")
    file_name = _text(root, "filename") or (xml_path.stem + ".jpg")
    h = w = 0
    size = root.find("size")
    if size is not None:  # missing <width>/<height> (or 0, as some tools write): read the image header
        w = int(_num(size, "width", file, "size", "width")) if _text(size, "width") else 0
        h = int(_num(size, "height", file, "size", "height")) if _text(size, "height") else 0
    if (h <= 0 or w <= 0) and image_root is not None and (image_root / file_name).is_file():
        h, w = image_size(image_root / file_name)
    if h <= 0 or w <= 0:
        fail(file, "size", "size", "missing or zero <size> and no image to read it from", (w, h))
    extra = {}
    seg = _flag(root, "segmented", file, "annotation")
    if seg is not None:
        extra["segmented"] = seg
    objects = []
    for k, obj in enumerate(root.findall("object")):
        rec = f"object {k}"
        name = _text(obj, "name")
        if not name:
            fail(file, rec, "name", "missing <name>")
        bb = obj.find("bndbox")
        if bb is None:
            fail(file, rec, "bndbox", "missing <bndbox>")
        xmin, ymin, xmax, ymax = (_num(bb, t, file, rec, "bndbox") for t in ("xmin", "ymin", "xmax", "ymax"))
        oextra: dict = {}
        for t in _FLAGS:
            v = _flag(obj, t, file, rec)
            if v is not None:
                oextra[t] = v
        pose = _text(obj, "pose")
        if pose and pose != "Unspecified":  # VOC's default carries no information
            oextra["pose"] = pose
        crowd = bool(_flag(obj, "iscrowd", file, rec))
        objects.append((k, name, (xmin - 1.0, ymin - 1.0, xmax, ymax), crowd, oextra))
    return _Parsed(file, file_name, h, w, extra, objects)


def read_voc(root_or_xml_dir: str | Path, image_root: str | Path | None = None,
             class_names: Sequence[str] | None = None, *, strict: bool = False, check_images: bool = False,
             split: str | None = None, progress: bool = False) -> AnnotationSet:
    """Read Pascal VOC XML annotations.

    Args:
        root_or_xml_dir: a VOC root (with ``Annotations/``, images in ``JPEGImages/``) or a folder of XMLs.
        image_root: image folder (default: ``JPEGImages`` of a VOC root, else none: existence unchecked).
        class_names: class list in label order; objects of other classes are problems (lenient: dropped).
            Default: :data:`VOC_CLASSES` when every name found is a VOC class, else the sorted names found.
        strict / check_images: see :func:`~sceneparse.data.formats.validate.validate_annotation_set`.
        split: read only the ids listed in ``ImageSets/Main/<split>.txt`` of a VOC root.
        progress: show a progress bar.

    Image ids come from the XML stems when all are distinct numbers (COCO-style names), else
    ``1..N`` in sorted order; object ids are ``1..M`` in reading order; category ids are ``1..C``.
    """
    root = Path(root_or_xml_dir)
    xml_dir = root / "Annotations" if (root / "Annotations").is_dir() else root
    if image_root is None and xml_dir != root and (root / "JPEGImages").is_dir():
        image_root = root / "JPEGImages"
    image_root = Path(image_root) if image_root is not None else None
    if not xml_dir.is_dir():
        fail(str(xml_dir), None, None, "not a folder of VOC XML files")
    if split is not None:
        list_file = root / "ImageSets" / "Main" / f"{split}.txt"
        if not list_file.is_file():
            fail(str(list_file), None, None, f"split list for {split!r} not found")
        stems = [ln.split()[0] for ln in list_file.read_text().splitlines() if ln.strip()]
        xmls = [xml_dir / f"{s}.xml" for s in stems]
        for x in xmls:
            if not x.is_file():
                fail(str(list_file), x.stem, None, f"listed image has no XML file {x}")
    else:
        xmls = sorted(xml_dir.glob("*.xml"))
    parsed = [parse_voc_xml(x, image_root) for x in tqdm(xmls, desc="reading VOC XML", disable=not progress)]

    if class_names is None:
        found = sorted({name for p in parsed for _, name, *_ in p.objects})
        class_names = list(VOC_CLASSES) if set(found) <= set(VOC_CLASSES) else found
    try:
        cmap = categories_from_names(class_names)
    except ValueError as e:
        fail(None, None, "class_names", str(e), list(class_names))
    label_of = {n: i for i, n in enumerate(cmap.names)}

    ck = Checker(strict)
    image_ids = ids_from_stems([Path(p.file).stem for p in parsed])
    images, image_origins, objects, origins = [], [], [], []
    next_id = 1
    for p, iid in zip(parsed, image_ids):
        images.append(ImageRecord(id=iid, file_name=p.file_name, height=p.height, width=p.width, extra=p.extra))
        image_origins.append(Origin(p.file, f"image {iid}"))
        for k, name, box, crowd, extra in p.objects:
            rec = f"object {k}"
            if name not in label_of:
                ck.flag(p.file, rec, "name", f"unknown class (known: {', '.join(cmap.names)})", name,
                        repaired="dropped the object")
                continue
            objects.append(ObjectRecord(id=next_id, image_id=iid, label=label_of[name],
                                        bbox=np.asarray(box, dtype=np.float32), iscrowd=crowd, extra=extra))
            origins.append(Origin(p.file, rec))
            next_id += 1
    aset = AnnotationSet(categories=cmap, images=images, annotations=objects, image_root=image_root,
                         source=str(xml_dir))
    validate_annotation_set(aset, checker=ck, check_images=check_images, image_origins=image_origins,
                            object_origins=origins, field_names=FIELD_NAMES)
    aset.problems = list(ck.problems)
    return aset


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    el = ET.SubElement(parent, tag)
    if text is not None:
        el.text = text
    return el


def voc_xml(aset: AnnotationSet, image: ImageRecord, objects: Sequence[ObjectRecord]) -> ET.Element:
    """The ``<annotation>`` element of one image (boxes back to VOC's 1-based inclusive pixels)."""
    ann = ET.Element("annotation")
    _sub(ann, "folder", Path(aset.image_root).name if aset.image_root else "")
    _sub(ann, "filename", image.file_name)
    size = _sub(ann, "size")
    _sub(size, "width", str(int(image.width)))
    _sub(size, "height", str(int(image.height)))
    _sub(size, "depth", str(int(image.extra.get("depth", 3))))
    _sub(ann, "segmented", str(int(bool(image.extra.get("segmented", False)))))
    names = aset.categories.names
    if objects:
        boxes = np.stack([np.asarray(o.bbox, dtype=np.float64) for o in objects])
        boxes[:, :2] += 1.0
    for o, b in zip(objects, boxes if objects else []):
        el = _sub(ann, "object")
        _sub(el, "name", names[o.label])
        _sub(el, "pose", str(o.extra.get("pose", "Unspecified")))
        _sub(el, "truncated", str(int(bool(o.extra.get("truncated", False)))))
        if "occluded" in o.extra:
            _sub(el, "occluded", str(int(bool(o.extra["occluded"]))))
        _sub(el, "difficult", str(int(bool(o.extra.get("difficult", False)) or bool(o.iscrowd))))
        if o.iscrowd:
            _sub(el, "iscrowd", "1")
        bb = _sub(el, "bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), b):
            _sub(bb, tag, fmt_num(v))
    ET.indent(ann, space="  ")
    return ann


def write_voc(aset: AnnotationSet, out_dir: str | Path, *, progress: bool = False) -> WriteResult:
    """Write one VOC XML per image into ``out_dir`` (``<image stem>.xml``, atomically).

    Masks and keypoints cannot be written; each object that loses them is listed in
    ``WriteResult.lost``. Two images with the same stem would overwrite each other and raise."""
    out_dir = Path(out_dir)
    stems: dict[str, int] = {}
    paths = []
    for im in aset.images:  # every name checked before anything is written
        stem = Path(im.file_name).stem
        if stem in stems:
            fail(str(out_dir / f"{stem}.xml"), f"image {im.id}", "file_name",
                 f"same XML name as image {stems[stem]}; VOC needs distinct file stems", im.file_name)
        stems[stem] = im.id
        paths.append(output_path(out_dir, f"{stem}.xml", file=aset.source or None, record=f"image {im.id}"))
    out_dir.mkdir(parents=True, exist_ok=True)
    result = WriteResult()
    for im, path in tqdm(list(zip(aset.images, paths)), desc="writing VOC XML", disable=not progress):
        objects = aset.annotations_of(im.id)
        for o in objects:
            what = [w for w, v in (("mask", o.segmentation), ("keypoints", o.keypoints)) if v is not None]
            if what:
                result.lost.append(Problem(str(path), f"annotation {o.id}", "/".join(what),
                                           f"VOC XML cannot hold {' or '.join(what)}", repaired="written without them"))
        tree = ET.ElementTree(voc_xml(aset, im, objects))
        with atomic_open(path, "wb") as f:
            tree.write(f, encoding="utf-8", xml_declaration=False)
        result.files.append(path)
        result.images += 1
        result.objects += len(objects)
    return result
