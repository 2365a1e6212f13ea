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
from ._io import WriteResult
from .coco import read_coco, to_coco_dict, write_coco
from .coco_results import CocoResultsWriter, instances_to_coco_results, write_coco_results
from .coco_panoptic import load_panoptic_map, read_coco_panoptic, write_coco_panoptic, write_panoptic_png
from .pngmasks import load_semantic_map, read_semantic_pngs, voc_palette, write_semantic_png
from .validate import Checker, Origin, validate_annotation_set
from .voc import VOC_CLASSES, read_voc, write_voc
from .yolo import YoloMeta, merge_rings, read_data_yaml, read_yolo, write_yolo

__all__ = [
    "WriteResult", "read_coco", "to_coco_dict", "write_coco",
    "CocoResultsWriter", "instances_to_coco_results", "write_coco_results",
    "read_coco_panoptic", "load_panoptic_map", "write_coco_panoptic", "write_panoptic_png",
    "read_semantic_pngs", "load_semantic_map", "write_semantic_png", "voc_palette",
    "validate_annotation_set", "Checker", "Origin",
    "VOC_CLASSES", "read_voc", "write_voc",
    "YoloMeta", "read_data_yaml", "read_yolo", "write_yolo", "merge_rings",
]
