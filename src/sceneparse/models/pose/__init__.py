"""Human pose: top-down SimpleBaseline (person crops -> heatmaps), DeepPose (coordinate regression with its
cascade), Convolutional Pose Machines and Stacked Hourglass, and bottom-up OpenPose (part heatmaps + part
affinity fields -> people). Importing this package registers
``simplebaseline_resnet18``, ``simplebaseline_resnet50``, ``openpose_body``, ``deeppose_resnet18``,
``cpm_resnet18``, ``hourglass2_pose`` and ``hourglass8_pose`` in :mod:`sceneparse.models.zoo`."""
from .openpose import BODY_KEY_RULES, OpenPoseBody, openpose_body
from .paf_parsing import OPENPOSE_TO_COCO, ParsedPeople, parse_people, people_to_coco
from .top_down import DeconvHead, PersonCrops, SimpleBaseline, simplebaseline_resnet18, simplebaseline_resnet50
from .deeppose import DeepPose, deeppose_resnet18
from .cpm import CPM, cpm_resnet18
from .hourglass_pose import StackedHourglassPose, hourglass2_pose, hourglass8_pose

__all__ = ["BODY_KEY_RULES", "CPM", "DeconvHead", "DeepPose", "OPENPOSE_TO_COCO", "OpenPoseBody", "ParsedPeople",
           "PersonCrops", "SimpleBaseline", "StackedHourglassPose", "cpm_resnet18", "deeppose_resnet18",
           "hourglass2_pose", "hourglass8_pose", "openpose_body", "parse_people", "people_to_coco",
           "simplebaseline_resnet18", "simplebaseline_resnet50"]
