"""The traceable graph of a YOLO detector for ONNX / TorchScript (:meth:`YOLODetector.export_graph`)."""
from __future__ import annotations

from torch import Tensor, nn

from .letterbox import scale_boxes_back


class YOLOGraph(nn.Module):
    """``image [3, H, W]`` in ``[0, 1]`` -> ``(boxes, scores, labels)`` in input-image pixels: letterbox
    (OpenCV-exact resize, gray padding), network, DFL decoding, ultralytics' NMS with the model's
    default conf / iou / max_det, boxes mapped back and clipped -- ``model.predict([image])[0]``.

    The letterbox sizes are Python numbers of the traced image's shape, so a graph is exact at the size
    it was traced at (export it static, ``dynamic=False``)."""

    batched = False  #: one ``[3, H, W]`` image per call
    min_opset = (11, "NonMaxSuppression needs opset 11")

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.output_names = model.info.export_outputs

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        from .detector import yolo_nms

        batch, _ = self.model.prepare([image])
        boxes, scores = self.model(batch).decoded()
        conf, iou, max_det = self.model.defaults
        b, s, c = yolo_nms(boxes[0], scores[0], conf, iou, max_det)
        return scale_boxes_back(b, batch.canvases[0], batch.original_sizes[0]), s, c
