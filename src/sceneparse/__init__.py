"""sceneparse: what is in the image and where.

Detection, semantic / instance / panoptic segmentation and human pose estimation,
with COCO-standard evaluation, in one library and one CLI.
"""
__version__ = "0.1.0"

__all__ = ["__version__"]
