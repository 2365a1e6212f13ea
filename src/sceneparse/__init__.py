"""sceneparse: what is in the image and where.

Detection, semantic / instance / panoptic segmentation and human pose estimation,
with COCO-standard evaluation, in one library and one CLI.
"""
__version__ = "0.1.0"

__all__ = ["Predictor", "__version__"]

#: public names imported on first use (PEP 562), so ``import sceneparse`` stays light (no torch)
_LAZY = {"Predictor": "sceneparse.engine.predictor"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sceneparse' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
