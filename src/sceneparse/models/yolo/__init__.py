"""ultralytics' YOLO detectors (YOLOv8, YOLO11) in the zoo: ``yolov8n/s/m/l/x``, ``yolo11n/s/m/l/x``.

Importing this package registers the builders (:mod:`.zoo_entries`). ``build("yolov8n",
weights="yolov8n.pt")`` loads ultralytics' own files without importing ultralytics or running
pickled code (:mod:`.checkpoints`)."""
from . import zoo_entries
from .detector import SCALES, YOLODetector, YOLORaw, YOLOSpec, yolo_nms

__all__ = ["SCALES", "YOLODetector", "YOLORaw", "YOLOSpec", "yolo_nms", "zoo_entries"]
