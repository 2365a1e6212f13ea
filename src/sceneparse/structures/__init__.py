"""The language every layer speaks: boxes, masks, keypoints, Instances, semantic / panoptic maps, batches.

The types below are imported on first use (PEP 562), so that importing a torch-free module of this
package (:mod:`.rle`, used by :mod:`sceneparse.evaluation`, which must not load torch) does not
import torch through this ``__init__``.
"""
__all__ = ["ImageBatch", "Instances", "PanopticMap", "SegmentInfo", "SemanticMap", "Target"]

_LAZY = {"ImageBatch": ".batch", "Instances": ".instances", "PanopticMap": ".segmaps", "SegmentInfo": ".segmaps",
         "SemanticMap": ".segmaps", "Target": ".target"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
