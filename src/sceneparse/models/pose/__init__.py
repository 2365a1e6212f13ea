"""Human pose: top-down SimpleBaseline (person crops -> heatmaps) and bottom-up OpenPose (part
heatmaps + part affinity fields -> people). Importing this package registers ``simplebaseline_resnet18``,
``simplebaseline_resnet50`` and ``openpose_body`` in :mod:`sceneparse.models.zoo`."""
from .top_down import DeconvHead, PersonCrops, SimpleBaseline, simplebaseline_resnet18, simplebaseline_resnet50

__all__ = ["DeconvHead", "PersonCrops", "SimpleBaseline", "simplebaseline_resnet18", "simplebaseline_resnet50"]
