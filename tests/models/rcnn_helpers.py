"""Shared helpers of the R-CNN tests: torchvision reference models with randomised weights, and
comparison of torchvision's outputs with sceneparse's (same weights, same images)."""
from __future__ import annotations

import torch
import torchvision
from torchvision.models import detection as tvd

from sceneparse.models import zoo

#: (zoo name, torchvision builder, torchvision num_classes incl. background)
MODELS = {
    "fasterrcnn_resnet50_fpn": (tvd.fasterrcnn_resnet50_fpn, 91),
    "maskrcnn_resnet50_fpn": (tvd.maskrcnn_resnet50_fpn, 91),
    "keypointrcnn_resnet50_fpn": (tvd.keypointrcnn_resnet50_fpn, 2),
    "fasterrcnn_mobilenet_v3_large_fpn": (tvd.fasterrcnn_mobilenet_v3_large_fpn, 91),
}


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int, cls_gain: float = 1.0) -> torch.nn.Module:
    """Give every BatchNorm random statistics/affine and every conv/linear a random bias, so that a
    wrong mapping of any of them changes the outputs; ``cls_gain`` sharpens the box classifier
    (random weights otherwise give near-uniform class scores, hence no detections)."""
    g = torch.Generator().manual_seed(seed)
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torchvision.ops.misc.FrozenBatchNorm2d)):
            n = m.running_mean.numel()
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.bias.copy_(torch.randn(n, generator=g) * 0.1)
        elif isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)) and m.bias is not None:
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.05)
        if name.endswith("box_predictor.cls_score"):
            m.weight.mul_(cls_gain)
    return model


def torchvision_model(name: str, seed: int, cls_gain: float = 1.0, **kwargs) -> torch.nn.Module:
    """torchvision's ``name`` with random weights (``weights=None``: BatchNorm2d in eval mode)."""
    builder, num_classes = MODELS[name]
    torch.manual_seed(seed)
    return randomize(builder(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs), seed,
                     cls_gain).eval()


def sceneparse_kwargs(tv_kwargs: dict) -> dict:
    """torchvision constructor arguments -> sceneparse's (pre/post NMS counts are (train, test) pairs)."""
    out = dict(tv_kwargs)
    for key in ("rpn_pre_nms_top_n", "rpn_post_nms_top_n"):
        train, test = out.pop(f"{key}_train", None), out.pop(f"{key}_test", None)
        if train is not None or test is not None:
            out[key] = (train if train is not None else 2000, test if test is not None else 1000)
    return out


def canonical_order(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A permutation sorting detections by (score desc, label, x1, y1): equal scores (ties in random
    models) may come out of two NMS implementations in different orders."""
    keys = [boxes[:, 1], boxes[:, 0], labels.to(torch.float64), -scores.to(torch.float64)]
    order = torch.arange(len(scores))
    for k in keys:  # least significant first; stable sorts compose into a lexicographic sort
        order = order[torch.sort(k[order], stable=True).indices]
    return order


def build_pair(name: str, tmp_path, seed: int = 0, cls_gain: float = 1.0, **tv_kwargs):
    """torchvision model with random weights, saved to a file, loaded into sceneparse's ``name``."""
    tv = torchvision_model(name, seed, cls_gain, **tv_kwargs)
    path = tmp_path / f"{name}.pth"
    torch.save(tv.state_dict(), path)
    ours = zoo.build(name, weights=path, norm="bn", **sceneparse_kwargs(tv_kwargs)).eval()
    return tv, ours
