"""sceneparse.evaluation: COCO AP (bbox / segm / keypoints), mIoU, PQ, PR curves, confusion matrices
and the TIDE-style error breakdown. Never imports models; consumes files or results structures.
Numbers only: the plots of these results are in :mod:`sceneparse.viz.plots`."""
from .coco import COCOEvalResult, evaluate_coco
from .confusion import DetectionConfusionMatrix, detection_confusion_matrix
from .curves import PRCurve, precision_recall_curves
from .errors import ErrorType, TideErrors, tide_errors
from .panoptic import PanopticEvalResult, PanopticEvaluator, PQCategory, PQSummary, evaluate_panoptic
from .semantic import SemanticEvalResult, SemanticEvaluator, semantic_metrics
from .validate import validate_coco_results

__all__ = [
    "COCOEvalResult", "DetectionConfusionMatrix", "ErrorType", "PQCategory", "PQSummary", "PRCurve", "PanopticEvalResult",
    "PanopticEvaluator", "SemanticEvalResult", "SemanticEvaluator", "TideErrors", "detection_confusion_matrix",
    "evaluate_coco", "evaluate_panoptic", "precision_recall_curves", "semantic_metrics", "tide_errors", "validate_coco_results",
]

