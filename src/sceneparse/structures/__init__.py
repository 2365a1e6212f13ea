"""The language every layer speaks: boxes, masks, keypoints, Instances, semantic / panoptic maps, batches."""
from .batch import ImageBatch
from .instances import Instances
from .segmaps import PanopticMap, SegmentInfo, SemanticMap
from .target import Target

__all__ = ["ImageBatch", "Instances", "PanopticMap", "SegmentInfo", "SemanticMap", "Target"]
