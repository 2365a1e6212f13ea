"""Human pose: top-down SimpleBaseline (person crops -> heatmaps) and bottom-up OpenPose (part
heatmaps + part affinity fields -> people). Importing this package registers ``simplebaseline_resnet18``,
``simplebaseline_resnet50`` and ``openpose_body`` in :mod:`sceneparse.models.zoo`."""
from .openpose import BODY_KEY_RULES, OpenPoseBody, openpose_body
from .paf_parsing import OPENPOSE_TO_COCO, ParsedPeople, parse_people, people_to_coco
from .top_down import DeconvHead, PersonCrops, SimpleBaseline, simplebaseline_resnet18, simplebaseline_resnet50

__all__ = ["BODY_KEY_RULES", "DeconvHead", "OPENPOSE_TO_COCO", "OpenPoseBody", "ParsedPeople", "PersonCrops",
           "SimpleBaseline", "openpose_body", "parse_people", "people_to_coco", "simplebaseline_resnet18",
           "simplebaseline_resnet50"]
