"""Shared pieces of the YOLO tests: ultralytics reference models with random weights (test-only),
saved the way ultralytics saves them, and synthetic test scenes."""
from __future__ import annotations

import copy
import datetime

import numpy as np
import torch


def scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A BGR uint8 test image: colour gradients, a dozen filled ellipses, noise (so that random-weight
    scores vary with the content and do not tie)."""
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    im = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], -1)
    for _ in range(12):
        c = rng.integers(0, 256, 3).tolist()
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(10, w // 4)), int(rng.integers(10, h // 4)))
        cv2.ellipse(im, centre, axes, float(rng.uniform(0, 180)), 0, 360, c, -1)
    return np.clip(im + rng.normal(0, 12, im.shape), 0, 255).astype(np.uint8)


def to_tensor(bgr: np.ndarray) -> torch.Tensor:
    """BGR uint8 HWC -> RGB float CHW in [0, 1] (what a sceneparse image reader gives)."""
    return torch.from_numpy(bgr[..., ::-1].copy()).permute(2, 0, 1).float() / 255


def ultralytics_model(yaml: str, nc: int = 80, seed: int = 0):
    """``DetectionModel(yaml)`` with random weights whose BatchNorm statistics are calibrated on two
    scenes (so activations neither vanish nor explode), class branch scaled so scores spread over
    0.001..0.3 (useful detections at low conf), in eval mode."""
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(seed)
    model = DetectionModel(yaml, nc=nc, verbose=False)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.momentum = None  # cumulative average: running stats = the calibration batch's
        m.reset_running_stats()
        m.weight.data.uniform_(0.8, 1.2)
        m.bias.data.uniform_(-0.1, 0.1)
    model.train()
    with torch.no_grad():
        model(torch.stack([to_tensor(scene(256, 256, seed=s)) for s in (11, 12)]))
    for m in bns:
        m.momentum = 0.03
    for seq in model.model[-1].cv3:
        seq[-1].weight.data.mul_(0.1)
        seq[-1].bias.data.uniform_(-6.0, -3.0)
    return model.eval()


def save_like_ultralytics(model, path, *, as_ema: bool = False, names: dict | None = None) -> None:
    """What ``ultralytics.utils.torch_utils.strip_optimizer`` leaves (``as_ema``: a training checkpoint,
    ``'model': None`` and the fp16 weights in ``'ema'``, as the trainer's ``save_model``)."""
    m = copy.deepcopy(model).half()
    if names is not None:
        m.names = names
    m.args = {"imgsz": 640, "task": "detect"}
    ckpt = {"date": datetime.datetime(2026, 1, 1).isoformat(), "version": "8.4.0", "license": "AGPL-3.0",
            "docs": "https://docs.ultralytics.com", "epoch": -1, "best_fitness": None,
            "model": None if as_ema else m, "ema": m if as_ema else None, "updates": None, "optimizer": None,
            "train_args": {"model": "yolov8n.yaml", "imgsz": 640, "epochs": 1, "box": 7.5, "cls": 0.5, "dfl": 1.5},
            "train_metrics": None, "train_results": None}
    torch.save(ckpt, path)
