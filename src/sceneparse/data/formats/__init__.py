"""Foreign dataset formats, converted once at the data boundary.

Every reader returns an :class:`~sceneparse.data.records.AnnotationSet` in sceneparse's conventions
(``XYXY`` absolute-pixel ``float32`` boxes, contiguous labels, ``float32 [K, 3]`` keypoints) and
validates it (:mod:`.validate`): ``strict=True`` raises at the first problem, lenient mode repairs
and lists every change in ``aset.problems``. Every writer is atomic per file and returns a
:class:`WriteResult` listing what the target format could not hold.

==============  ==========================================  ===================================
format          read                                        write
==============  ==========================================  ===================================
COCO JSON       :func:`read_coco`                           :func:`write_coco`, :func:`to_coco_dict`
COCO panoptic   :func:`read_coco_panoptic`,                 :func:`write_coco_panoptic`,
                :func:`load_panoptic_map`                   :func:`write_panoptic_png`
Pascal VOC XML  :func:`read_voc`                            :func:`write_voc`
YOLO txt        :func:`read_yolo`, :func:`read_data_yaml`   :func:`write_yolo`
label PNGs      :func:`read_semantic_pngs`,                 :func:`write_semantic_png`
                :func:`load_semantic_map`
COCO results    (``sceneparse.evaluation`` reads them)      :func:`write_coco_results`,
                                                            :class:`CocoResultsWriter` (streamed),
                                                            :func:`instances_to_coco_results`
==============  ==========================================  ===================================
"""
from __future__ import annotations

import importlib

#: public name -> the submodule that defines it. Loaded on first use (PEP 562), so that
#: ``sceneparse.data.formats.coco`` -- the COCO check that evaluation runs -- and the other codecs
#: can be imported without the torch-based ones (``sceneparse.evaluation`` never imports torch).
_EXPORTS = {
    "WriteResult": "_io",
    "read_coco": "coco", "to_coco_dict": "coco", "write_coco": "coco", "check_coco": "coco",
    "CocoResultsWriter": "coco_results", "instances_to_coco_results": "coco_results",
    "write_coco_results": "coco_results",
    "load_panoptic_map": "coco_panoptic", "read_coco_panoptic": "coco_panoptic",
    "write_coco_panoptic": "coco_panoptic", "write_panoptic_png": "coco_panoptic",
    "load_semantic_map": "pngmasks", "read_semantic_pngs": "pngmasks", "voc_palette": "pngmasks",
    "write_semantic_png": "pngmasks",
    "Checker": "validate", "Origin": "validate", "validate_annotation_set": "validate",
    "VOC_CLASSES": "voc", "read_voc": "voc", "write_voc": "voc",
    "YoloMeta": "yolo", "merge_rings": "yolo", "read_data_yaml": "yolo", "read_yolo": "yolo", "write_yolo": "yolo",
    "output_path": "_io",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = sorted(_EXPORTS)
