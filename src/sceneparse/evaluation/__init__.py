"""sceneparse.evaluation: COCO AP (bbox / segm / keypoints), mIoU, PQ, PR curves, confusion matrices
and the TIDE-style error breakdown. Never imports models; consumes files or results structures."""
from .coco import COCOEvalResult, evaluate_coco
from .confusion import DetectionConfusionMatrix, detection_confusion_matrix, plot_confusion_matrix
from .curves import PRCurve, plot_pr_curves, precision_recall_curves
from .errors import ErrorType, TideErrors, plot_error_breakdown, tide_errors
from .panoptic import PanopticEvalResult, PanopticEvaluator, PQCategory, PQSummary, evaluate_panoptic
from .semantic import SemanticEvalResult, SemanticEvaluator, semantic_metrics
from .validate import validate_coco_results

__all__ = [
    "COCOEvalResult", "DetectionConfusionMatrix", "ErrorType", "PQCategory", "PQSummary", "PRCurve", "PanopticEvalResult",
    "PanopticEvaluator", "SemanticEvalResult", "SemanticEvaluator", "TideErrors", "detection_confusion_matrix",
    "evaluate_coco", "evaluate_panoptic", "plot_confusion_matrix", "plot_error_breakdown", "plot_pr_curves",
    "precision_recall_curves", "semantic_metrics", "tide_errors", "validate_coco_results",
]

