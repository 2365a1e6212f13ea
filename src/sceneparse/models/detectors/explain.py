"""The R-CNN family's explanation pictures: the lecture notes' figures of Faster / Mask / Keypoint
R-CNN, drawn from the model's own modules and ops on one image.

Views (:meth:`TwoStageDetector.explain <sceneparse.models.base.SceneModel.explain>`, ``what=``):

* ``anchors``: the ``A`` anchors (every size x aspect ratio) at one location of one FPN level, with
  their objectness -- the reference boxes the RPN regresses from (Faster R-CNN sec. 3.1.1);
* ``anchor_matching``: the anchors the RPN's :class:`~sceneparse.ops.matching.Matcher` assigns to one
  box (a ground-truth box given as ``box=``, else the best detection), IoU from
  :func:`~sceneparse.ops.boxes.box_iou` (>= 0.7 positive, the best anchor always; 0.3..0.7 ignored);
* ``proposals``: RPN proposals before NMS (the ``pre_nms_top_n`` best per level) and after the
  per-level NMS, the ``top_k`` best of each level drawn;
* ``nms``: greedy NMS step by step on the box head's best candidates of one class -- each kept box and
  the boxes it suppressed, with their IoU -- beside soft-NMS's decayed scores (Bodla et al. 2017);
* ``roi_align``: RoIAlign's ``S x S`` sampling points per bin on the feature grid for one RoI, beside
  RoIPool's quantised bins (Fast R-CNN) on the same grid;
* ``fpn_levels``: the FPN level each RoI is pooled from, by its size (FPN eq. 1);
* ``features``: the channel mean of every pyramid level P2.. (what the RPN and heads see);
* ``receptive_field``: the theoretical receptive field of one unit of a backbone stage (the
  recurrence ``r += (k - 1) d j``, ``j *= s`` over the trunk's own layers), with the gradient
  magnitude of that unit w.r.t. the input (its *effective* receptive field, Luo et al. 2016) inside;
* ``mask_head`` (Mask R-CNN): the mask head's ``M x M`` (28x28) probabilities of the best detections,
  on their boxes, before pasting;
* ``keypoints`` (Keypoint R-CNN): the keypoint head's heatmaps (56x56) of the best detection and the
  keypoints predict decodes from them.

Every number comes from one ``prepare -> forward`` pass of the model (the backbone and FPN outputs
captured with forward hooks, the RPN / box-head outputs of :class:`~.two_stage.RCNNRaw`) and the ops
the forward pass calls (``box_iou``, ``Matcher``, ``batched_nms`` / ``nms``, ``assign_levels``,
``infer_scale``); where a picture needs an intermediate the forward pass does not keep (the RPN's
candidates before NMS, the box head's before NMS) the same calls are repeated on the same tensors, and
the tests check that they reproduce the forward pass's output. Marks are in the image's own pixels
(the batch frame divided by ``ImageBatch.scales``). ``Explanation.data`` holds the numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...ops.boxes import box_iou
from ...ops.matching import Matcher
from ...ops.nms import batched_nms, nms, soft_nms
from ...ops.roi import assign_levels, infer_scale
from ...structures import boxes as box_geometry
from ...structures.batch import ImageBatch
from ...structures.explain import BoxMark, ColorScale, Explanation, Panel, PointMark, ScalarMap, SegmentMark, TextMark
from ...structures.instances import Instances

if TYPE_CHECKING:
    from .two_stage import RCNNRaw, TwoStageDetector

__all__ = ["RCNN_OPTIONS", "RCNNPass", "ReceptiveField", "rcnn_explanation", "rcnn_pass", "rcnn_views",
           "receptive_field", "roi_align_sample_points", "roi_pool_bins"]

#: the keyword options of the R-CNN family's ``explain`` (see :func:`rcnn_explanation`)
RCNN_OPTIONS = ("conf", "max_det", "imgsz", "level", "at", "box", "roi", "top_k")
_BASE_VIEWS = ("anchors", "anchor_matching", "proposals", "nms", "roi_align", "fpn_levels", "features",
               "receptive_field")
#: one colour per pyramid level (P2, P3, ...), as in the notes' FPN figure
LEVEL_COLORS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240))
_GRID = (200, 200, 200)


def rcnn_views(model: "TwoStageDetector") -> tuple[str, ...]:
    """The views of ``model``: the common ones, + ``mask_head`` (Mask R-CNN), + ``keypoints``."""
    return _BASE_VIEWS + (("mask_head",) if model.roi_mask is not None else ()) + \
        (("keypoints",) if model.roi_keypoint is not None else ())


# ---- one forward pass, with what the pictures need -------------------------------------------------

@dataclass
class RCNNPass:
    """One ``prepare -> forward`` pass on one image (eval mode, the inference settings).

    Attributes:
        batch: the prepared batch (one image); ``scale``: its ``(sy, sx)`` = resized / original.
        trunk: the backbone's stage outputs ``[1, C_k, h_k, w_k]`` (C2..), captured from the forward.
        feats: the FPN levels (P2.., the extra level last), captured from the forward.
        raw: the forward's :class:`RCNNRaw` (RPN output, detections in the batch frame).
        result: ``postprocess``'s :class:`Instances` (= ``predict``'s, original pixels).
        settings: the :class:`~sceneparse.models.base.InferenceSettings` of the pass.
    """

    batch: ImageBatch
    scale: tuple[float, float]
    trunk: list[Tensor]
    feats: list[Tensor]
    raw: "RCNNRaw"
    result: Instances
    settings: Any

    def to_image(self, boxes: Tensor) -> Tensor:
        """XYXY boxes ``[..., 4]`` of the batch frame -> the original image's pixels."""
        sy, sx = self.scale
        return boxes / boxes.new_tensor([sx, sy, sx, sy])

    def to_batch(self, boxes: Tensor) -> Tensor:
        """XYXY boxes ``[..., 4]`` of the original image -> the batch frame."""
        sy, sx = self.scale
        return boxes * boxes.new_tensor([sx, sy, sx, sy])

    @property
    def image_size(self) -> tuple[int, int]:
        """``(h, w)`` of the resized image in the batch (the frame of the RPN's clipping)."""
        return tuple(int(v) for v in self.batch.image_sizes[0])  # type: ignore[return-value]

    @property
    def padded_size(self) -> tuple[int, int]:
        return int(self.batch.tensor.shape[-2]), int(self.batch.tensor.shape[-1])


def rcnn_pass(model: "TwoStageDetector", image: Tensor, *, conf: float | None = None, max_det: int | None = None,
              imgsz: Any = None) -> RCNNPass:
    """Run ``model`` once on ``image`` as ``predict`` does (``infer``: ``prepare`` + ``forward`` with the
    settings + ``postprocess``), capturing the backbone and FPN outputs with forward hooks."""
    s = model.settings(conf, None, max_det, imgsz)
    batch, _ = model.prepare([image], imgsz=s.imgsz)
    seen: dict[str, Any] = {}
    hooks = [model.backbone.register_forward_hook(lambda m, i, o: seen.__setitem__("trunk", list(o))),
             model.neck.register_forward_hook(lambda m, i, o: seen.__setitem__("feats", list(o)))]
    try:
        raw = model(batch, settings=s)
    finally:
        for h in hooks:
            h.remove()
    result = model.postprocess(raw, batch)[0]
    sy, sx = (float(v) for v in batch.scales[0])
    return RCNNPass(batch, (sy, sx), seen["trunk"], seen["feats"], raw, result, s)


# ---- ops' geometry the pictures need --------------------------------------------------------------

def roi_align_sample_points(roi: Tensor, output_size: tuple[int, int], spatial_scale: float, sampling_ratio: int,
                            aligned: bool) -> Tensor:
    """Where RoIAlign samples the feature map for one RoI (Mask R-CNN sec. 3; torchvision's kernel).

    ``roi``: XYXY ``[4]`` in input pixels. The RoI is mapped to feature coordinates (``x * scale``,
    ``- 0.5`` when ``aligned``; the unaligned original forces at least 1 x 1 cell), cut into ``oh x ow``
    equal bins *without rounding* and each bin sampled at ``S x S`` regularly spaced points,
    ``x = x1 + j * bin_w + (i + 0.5) * bin_w / S``; every point is bilinearly interpolated from its 4
    neighbouring cells and the bin's output is their mean. ``sampling_ratio <= 0``: ``S =
    ceil(roi_size / bins)`` per axis (adaptive). Returns ``[oh, ow, Sy, Sx, 2]`` ``(x, y)`` in feature
    coordinates (cell ``i``'s value sits at coordinate ``i``).
    """
    oh, ow = output_size
    r = roi.double().reshape(4) * spatial_scale - (0.5 if aligned else 0.0)
    x1, y1 = r[0], r[1]
    w, h = r[2] - r[0], r[3] - r[1]
    if not aligned:
        w, h = w.clamp(min=1.0), h.clamp(min=1.0)
    bw, bh = w / ow, h / oh
    sy = int(sampling_ratio) if sampling_ratio > 0 else int(math.ceil(float(h) / oh))
    sx = int(sampling_ratio) if sampling_ratio > 0 else int(math.ceil(float(w) / ow))
    ys = y1 + torch.arange(oh, dtype=torch.float64)[:, None] * bh + (torch.arange(sy, dtype=torch.float64) + 0.5) * bh / sy
    xs = x1 + torch.arange(ow, dtype=torch.float64)[:, None] * bw + (torch.arange(sx, dtype=torch.float64) + 0.5) * bw / sx
    gx = xs[None, :, None, :].expand(oh, ow, sy, sx)  # [oh, ow, Sy, Sx]
    gy = ys[:, None, :, None].expand(oh, ow, sy, sx)
    return torch.stack([gx, gy], dim=-1)


def roi_pool_bins(roi: Tensor, output_size: tuple[int, int], spatial_scale: float,
                  feature_size: tuple[int, int]) -> Tensor:
    """RoIPool's quantised bins for one RoI (Fast R-CNN sec. 2.1; torchvision's kernel).

    The RoI's corners are *rounded* to feature cells (``round(x * scale)``, half away from zero), the
    snapped RoI (``end - start + 1`` cells, at least 1) is cut into ``oh x ow`` bins whose edges are
    rounded again, outwards (``floor`` of the start, ``ceil`` of the end), and clipped to the map; each
    bin's output is the max over its cells (0 for an empty bin). Returns int64 ``[oh, ow, 4]`` ``(x0, y0,
    x1, y1)`` in feature cells, end exclusive.
    """
    oh, ow = output_size
    H, W = feature_size
    v = roi.double().reshape(4) * spatial_scale
    v = torch.sign(v) * torch.floor(v.abs() + 0.5)  # std::round
    x0, y0, x1, y1 = (int(t) for t in v.tolist())
    rw, rh = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
    bw, bh = rw / ow, rh / oh
    py = torch.arange(oh, dtype=torch.float64)
    px = torch.arange(ow, dtype=torch.float64)
    hs = (torch.floor(py * bh) + y0).clamp(0, H)
    he = (torch.ceil((py + 1) * bh) + y0).clamp(0, H)
    ws = (torch.floor(px * bw) + x0).clamp(0, W)
    we = (torch.ceil((px + 1) * bw) + x0).clamp(0, W)
    out = torch.stack([ws[None, :].expand(oh, ow), hs[:, None].expand(oh, ow), we[None, :].expand(oh, ow),
                       he[:, None].expand(oh, ow)], dim=-1)
    return out.to(torch.int64)


@dataclass
class ReceptiveField:
    """The theoretical receptive field of the units of one feature map (Araujo et al., Distill 2019).

    Over the layers ``l`` (kernel ``k``, stride ``s``, dilation ``d``, padding ``p``) from the input:
    ``r_l = r_{l-1} + (k - 1) d j_{l-1}`` (size), ``j_l = j_{l-1} s`` (jump: input pixels between
    neighbouring units), ``c_l = c_{l-1} + ((k - 1) d / 2 - p) j_{l-1}`` (centre of unit 0, in input
    pixel indices). Per axis ``(y, x)``; ``layers``: the module names in order; ``is_global``: a global
    pooling runs on the way (the field is the whole input).
    """

    size: tuple[float, float]
    jump: tuple[float, float]
    start: tuple[float, float]
    layers: tuple[str, ...]
    is_global: bool = False

    def box(self, ux: int, uy: int) -> tuple[float, float, float, float]:
        """XYXY of unit ``(ux, uy)``'s field in input pixels (pixel ``i`` covers ``[i, i + 1)``)."""
        cx, cy = self.start[1] + ux * self.jump[1], self.start[0] + uy * self.jump[0]
        hx, hy = (self.size[1] - 1) / 2, (self.size[0] - 1) / 2
        return cx - hx, cy - hy, cx + hx + 1, cy + hy + 1


_SPATIAL = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.ConvTranspose2d)
_GLOBAL = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def receptive_field(backbone: nn.Module, x: Tensor, stage: int) -> ReceptiveField:
    """The theoretical receptive field of the units of ``backbone(x)[stage]``, from the layers that run
    before that output, in the order the forward pass runs them (forward hooks on every convolution
    and pooling). Projection shortcuts (modules under a ``downsample`` name: ResNet's 1x1 stride-2
    convs) are left out: their path is shorter than the main path, whose field contains theirs."""
    calls: list[tuple[str, nn.Module, Tensor]] = []
    hooks = []
    for name, m in backbone.named_modules():
        if name and not list(m.children()):
            hooks.append(m.register_forward_hook(lambda mod, i, o, name=name: calls.append((name, mod, o))))
    try:
        outs = backbone(x)
    finally:
        for h in hooks:
            h.remove()
    target = outs[stage]
    end = max((i for i, c in enumerate(calls) if c[2] is target), default=len(calls) - 1)
    size, jump, start = [1.0, 1.0], [1.0, 1.0], [0.0, 0.0]
    names: list[str] = []
    is_global = False
    for name, m, _ in calls[: end + 1]:
        if "downsample" in name.split("."):
            continue
        if isinstance(m, _GLOBAL):
            is_global = True
            continue
        if not isinstance(m, _SPATIAL) or isinstance(m, nn.ConvTranspose2d):
            continue
        def pair(v):  # noqa: E306
            return (v, v) if isinstance(v, int) else tuple(v)
        k, s = pair(m.kernel_size), pair(m.stride if m.stride is not None else m.kernel_size)
        d = pair(getattr(m, "dilation", 1))
        p = pair(m.padding)
        for a in (0, 1):
            size[a] += (k[a] - 1) * d[a] * jump[a]
            start[a] += ((k[a] - 1) * d[a] / 2 - p[a]) * jump[a]
            jump[a] *= s[a]
        names.append(name)
    return ReceptiveField(tuple(size), tuple(jump), tuple(start), tuple(names), is_global)


# ---- small helpers -------------------------------------------------------------------------------

def _name(model: "TwoStageDetector", label: int) -> str:
    names = tuple(model.class_names) if len(model.class_names) == model.num_classes else ()
    return names[label] if 0 <= label < len(names) else str(label)


def _level_name(level: int) -> str:
    return f"P{level + 2}"


def _level_color(level: int) -> tuple[int, int, int]:
    return LEVEL_COLORS[level % len(LEVEL_COLORS)]


def _xy(v: Any, what: str) -> tuple[float, float]:
    t = torch.as_tensor(v, dtype=torch.float64).reshape(-1)
    if t.numel() != 2 or not bool(torch.isfinite(t).all()):
        raise ConfigError(f"{what} must be (x, y) in image pixels, got {v!r}")
    return float(t[0]), float(t[1])


def _box_option(v: Any) -> Tensor:
    t = torch.as_tensor(v, dtype=torch.float32).reshape(-1)
    if t.numel() != 4 or not bool(torch.isfinite(t).all()) or not (t[2] > t[0] and t[3] > t[1]):
        raise ConfigError(f"box must be (x0, y0, x1, y1) in image pixels with x1 > x0, y1 > y0, got {v!r}")
    return t


def _reference_box(p: RCNNPass, box: Any) -> tuple[Tensor, str]:
    """The box a picture is about, in the batch frame: ``box`` (original pixels; "ground truth"), else
    the best detection, else the best RPN proposal."""
    if box is not None:
        return p.to_batch(_box_option(box).to(p.raw.rpn.anchors.dtype)), "the ground-truth box"
    d = p.raw.detections[0]
    if d.boxes.shape[0]:
        return d.boxes[0], f"the best detection ({d.scores[0]:.2f})"
    if p.raw.rpn.proposals[0].shape[0]:
        return p.raw.rpn.proposals[0][0], "the best RPN proposal (no detections)"
    h, w = p.image_size
    return torch.tensor([0.0, 0.0, float(w), float(h)]), "the whole image (no detections nor proposals)"


def _level_extent(p: RCNNPass, feat: Tensor, stride: tuple[float, float]) -> tuple[float, float, float, float]:
    """The original-image extent of a feature map whose cell ``i`` is centred at ``i * stride`` (the
    trunk's unit centres, and where unaligned RoIAlign / the anchors put coordinate ``i``)."""
    h, w = feat.shape[-2:]
    sy, sx = p.scale
    ty, tx = stride
    return (-0.5 * tx / sx, -0.5 * ty / sy, (w - 0.5) * tx / sx, (h - 0.5) * ty / sy)


def _strides(p: RCNNPass) -> list[tuple[int, int]]:
    """``(sy, sx)`` of every FPN level: the anchor generator's rule (padded size // feature size)."""
    H, W = p.padded_size
    return [(H // int(f.shape[-2]), W // int(f.shape[-1])) for f in p.feats]


def _caption_frame(p: RCNNPass) -> str:
    sy, sx = p.scale
    h, w = p.image_size
    return f"(network input {w}x{h} px, the image scaled by {sx:.3g}; marks in the image's pixels)"


# ---- views ---------------------------------------------------------------------------------------

def _anchors(model, p: RCNNPass, image: Tensor, level: int | None, at: Any, box: Any) -> Explanation:
    gen = model.rpn.anchor_generator
    ref, ref_name = _reference_box(p, box)
    if level is None:  # the level whose anchors best fit the reference box's size
        s = float(torch.sqrt((ref[2] - ref[0]) * (ref[3] - ref[1])))
        level = min(range(gen.num_levels), key=lambda l: abs(math.log(max(s, 1e-6) / (
            math.prod(gen.sizes[l]) ** (1 / len(gen.sizes[l]))))))  # geometric mean of the level's sizes
    if not 0 <= int(level) < gen.num_levels:
        raise ConfigError(f"level must be in 0..{gen.num_levels - 1} (P2..P{gen.num_levels + 1}), got {level}")
    level = int(level)
    sy, sx = p.scale
    if at is None:
        cx, cy = float(ref[0] + ref[2]) / 2, float(ref[1] + ref[3]) / 2
        at_name = f"the centre of {ref_name}"
    else:
        x, y = _xy(at, "at")
        cx, cy = x * sx, y * sy
        at_name = f"({x:.0f}, {y:.0f})"
    feat = p.feats[level]
    h, w = int(feat.shape[-2]), int(feat.shape[-1])
    st_y, st_x = _strides(p)[level]
    # the anchor of cell (u, v) is centred at (u * stride, v * stride): the nearest such centre
    u = int(min(max(round(cx / st_x), 0), w - 1))
    v = int(min(max(round(cy / st_y), 0), h - 1))
    a = gen.num_anchors_per_location()[level]
    offset = sum(p.raw.rpn.num_anchors_per_level[:level])
    idx = offset + (v * w + u) * a + torch.arange(a)
    anchors = p.raw.rpn.anchors[idx]
    obj = torch.sigmoid(p.raw.rpn.objectness[0, idx])
    sizes, ratios = gen.sizes[level], gen.aspect_ratios[level]
    img_boxes = p.to_image(anchors)
    marks = []
    for i in range(a):
        ratio, size = ratios[i // len(sizes)], sizes[i % len(sizes)]
        marks.append(BoxMark(box=img_boxes[i], value=float(obj[i]),
                             label=f"{size:g}px h/w {ratio:g}: obj {float(obj[i]):.2f}"))
    crop, ox, oy = _zoom(image, img_boxes)
    marks = [_shift(m, ox, oy) for m in marks]
    centre = PointMark(xy=(u * st_x / sx - ox, v * st_y / sy - oy), color=(255, 255, 255), radius=3.0,
                       label=f"{_level_name(level)} cell ({u}, {v})")
    panel = Panel(crop, f"{a} anchors at {_level_name(level)} cell ({u}, {v}), stride {st_x}", boxes=tuple(marks),
                  points=(centre,), scale=ColorScale(0.0, 1.0, "viridis", "objectness"))
    caption = (f"Anchors: the RPN places the same A = {a} reference boxes at every location of every pyramid level "
               f"(translation invariant): sizes {', '.join(f'{s:g}' for s in sizes)} px (sqrt of the area) x aspect "
               f"ratios h/w {', '.join(f'{r:g}' for r in ratios)} on {_level_name(level)} (stride {st_x} px; the "
               f"levels' sizes: {', '.join(f'{_level_name(l)} {gen.sizes[l][0]:g}' for l in range(gen.num_levels))}). "
               f"Shown: the anchors of cell ({u}, {v}), centred at (u x stride, v x stride) -- torchvision's "
               f"convention -- nearest to {at_name}, coloured by the objectness P(object) = sigmoid(logit) the "
               f"RPN head predicts for each; regression then moves each anchor to a proposal {_caption_frame(p)}.")
    data = {"level": level, "cell": (u, v), "stride": (st_y, st_x), "indices": idx, "anchors": anchors,
            "anchors_image": img_boxes, "objectness": obj, "sizes": sizes, "aspect_ratios": ratios}
    return Explanation("rcnn_anchors", f"RPN anchors at one location of {_level_name(level)}", caption, (panel,),
                       data)


def _anchor_matching(model, p: RCNNPass, image: Tensor, box: Any, top_k: int) -> Explanation:
    ref, ref_name = _reference_box(p, box)
    anchors = p.raw.rpn.anchors
    iou = box_iou(ref[None].to(anchors.dtype), anchors)  # [1, N]: what RegionProposalNetwork.loss matches on
    matcher: Matcher = model.rpn.matcher
    matches = matcher(iou)
    iou = iou[0]
    pos = torch.where(matches == 0)[0]
    pos = pos[iou[pos].argsort(descending=True, stable=True)]
    between = torch.where(matches == Matcher.BETWEEN_THRESHOLDS)[0]
    between = between[iou[between].argsort(descending=True, stable=True)][:top_k]
    bounds = torch.cumsum(torch.tensor(p.raw.rpn.num_anchors_per_level), 0)
    level_of = torch.bucketize(torch.arange(anchors.shape[0]), bounds, right=True)
    img = p.to_image(anchors)
    marks = [BoxMark(box=p.to_image(ref), color=(255, 255, 255), width=3.0, label="box")]
    for i in pos.tolist():
        marks.append(BoxMark(box=img[i], color=_level_color(int(level_of[i])),
                             label=f"{_level_name(int(level_of[i]))} IoU {float(iou[i]):.2f}"))
    for i in between.tolist():
        marks.append(BoxMark(box=img[i], color=_level_color(int(level_of[i])), alpha=0.45, width=1.0,
                             label=f"{float(iou[i]):.2f}"))
    crop, ox, oy = _zoom(image, torch.tensor([m.box for m in marks]))
    panel = Panel(crop, f"{len(pos)} positive anchors (solid), {len(between)} best ignored (faint)",
                  boxes=tuple(_shift(m, ox, oy) for m in marks))
    hi, lo = matcher.high_threshold, matcher.low_threshold
    caption = (f"Matching anchors to {ref_name} for the RPN's training targets: IoU (box_iou) of the box with all "
               f"{anchors.shape[0]} anchors of all levels; IoU >= {hi:g} is positive, and the anchor(s) with the box's "
               f"highest IoU ({float(iou.max()):.2f}) are positive whatever it is (so every object gets an anchor); "
               f"{lo:g} <= IoU < {hi:g} is ignored (faint: the {len(between)} best of them), < {lo:g} negative. Solid: "
               f"the {len(pos)} positives, coloured by pyramid level, with their IoU; a positive learns to regress to "
               f"the box {_caption_frame(p)}.")
    data = {"box": ref, "ious": iou, "matches": matches, "positives": pos, "positive_ious": iou[pos],
            "ignored": between, "ignored_ious": iou[between], "levels": level_of[pos],
            "thresholds": (lo, hi)}
    return Explanation("rcnn_anchor_matching", "RPN anchors matched to a box", caption, (panel,), data)


def rpn_candidates(model, p: RCNNPass) -> dict[str, Tensor]:
    """The RPN's proposal step for the pass's one image, with its intermediate results: the
    ``pre_nms_top_n`` best anchors per level (``torch.topk`` of the objectness), decoded by the RPN's box
    coder, clipped, filtered by size and score, then :func:`~sceneparse.ops.nms.batched_nms` per level
    and the ``post_nms_top_n`` best -- the calls ``RegionProposalNetwork._proposals`` makes, in eval
    mode (the tests check ``proposals`` equals the forward's)."""
    rpn = model.rpn
    out = p.raw.rpn
    pre_n, post_n = rpn.pre_nms_top_n[1], rpn.post_nms_top_n[1]
    idx, lvl, offset = [], [], 0
    for level, (ob, n) in enumerate(zip(out.objectness[0].split(out.num_anchors_per_level), out.num_anchors_per_level)):
        top = ob.topk(min(pre_n, n)).indices + offset
        idx.append(top)
        lvl.append(torch.full_like(top, level))
        offset += n
    idx, levels = torch.cat(idx), torch.cat(lvl)
    scores = torch.sigmoid(out.objectness[0, idx])
    boxes = rpn.box_coder.decode(out.deltas[0, idx], out.anchors[idx]).reshape(-1, 4)
    boxes = box_geometry.clip(boxes, p.image_size)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    valid = torch.where((w >= rpn.min_size) & (h >= rpn.min_size) & (scores >= rpn.score_thresh))[0]
    keep = valid[batched_nms(boxes[valid], scores[valid], levels[valid], rpn.nms_thresh)[:post_n]]
    return {"anchor_indices": idx, "boxes": boxes, "scores": scores, "levels": levels, "valid": valid,
            "keep": keep, "proposals": boxes[keep], "proposal_scores": scores[keep]}


def _proposals(model, p: RCNNPass, image: Tensor, top_k: int) -> Explanation:
    c = rpn_candidates(model, p)
    levels, scores = c["levels"], c["scores"]
    num_levels = len(p.feats)
    img = p.to_image(c["boxes"])

    def per_level(indices: Tensor) -> tuple[list[BoxMark], list[int]]:
        marks, counts = [], []
        for level in range(num_levels):
            mine = indices[levels[indices] == level]
            counts.append(int(mine.numel()))
            mine = mine[scores[mine].argsort(descending=True, stable=True)][:top_k]
            for rank, i in enumerate(mine.tolist()):
                marks.append(BoxMark(box=img[i], color=_level_color(level), width=1.5,
                                     label=f"{_level_name(level)} {float(scores[i]):.2f}" if rank < 2 else ""))
        return marks, counts

    before, n_before = per_level(torch.arange(levels.numel()))
    after, n_after = per_level(c["keep"])
    rpn = model.rpn
    left = Panel(image, f"before NMS: top {top_k} of each level's {rpn.pre_nms_top_n[1]}", boxes=tuple(before))
    right = Panel(image, f"after NMS (IoU > {rpn.nms_thresh:g}): top {top_k} per level", boxes=tuple(after))
    counts = ", ".join(f"{_level_name(l)} {a} -> {b}" for l, (a, b) in enumerate(zip(n_before, n_after)))
    caption = (f"Region proposals: every anchor, moved by its regressed deltas, is a candidate box scored by its "
               f"objectness. Per pyramid level the RPN keeps the {rpn.pre_nms_top_n[1]} best (left: the {top_k} best "
               f"of each level, coloured by level, the two best labelled with their objectness), clips them to the "
               f"image, drops boxes under {rpn.min_size:g} px, and runs NMS per level at IoU {rpn.nms_thresh:g} "
               f"(right); the {rpn.post_nms_top_n[1]} best over all levels are the proposals the RoI heads see. "
               f"Candidates per level before NMS -> among the {int(c['keep'].numel())} proposals: {counts} "
               f"{_caption_frame(p)}.")
    data = dict(c)
    data.update({"counts_before": n_before, "counts_after": n_after})
    return Explanation("rcnn_proposals", "RPN proposals before and after NMS", caption, (left, right), data)


def box_head_candidates(model, p: RCNNPass) -> dict[str, Tensor]:
    """The box head's candidates before NMS for the pass's image: the head's forward on the RPN
    proposals, then the calls of ``RoIBoxHead.detect`` up to NMS (decode per class, clip, drop the
    background, ``score > conf``, sides >= 0.01 px). ``labels`` are the head's ``1..C``."""
    head = model.roi_box
    sizes = list(p.batch.image_sizes)
    proposals = p.raw.rpn.proposals
    logits, deltas = head(p.feats[: model.num_roi_levels], proposals, sizes)
    boxes = head.box_coder.decode(deltas, torch.cat(list(proposals)))
    scores = F.softmax(logits, -1)
    num_cls = logits.shape[-1]
    bx = box_geometry.clip(boxes, sizes[0])[:, 1:].reshape(-1, 4)
    lab = torch.arange(1, num_cls).repeat(scores.shape[0])
    sc = scores[:, 1:].reshape(-1)
    w, h = bx[:, 2] - bx[:, 0], bx[:, 3] - bx[:, 1]
    keep = torch.where(sc > p.settings.conf)[0]
    keep = keep[(w[keep] >= 1e-2) & (h[keep] >= 1e-2)]
    return {"boxes": bx[keep], "scores": sc[keep], "labels": lab[keep]}


def _nms(model, p: RCNNPass, image: Tensor, top_k: int) -> Explanation:
    cand = box_head_candidates(model, p)
    det = p.raw.detections[0]
    if det.labels.numel():
        label = int(det.labels[0])
    elif cand["labels"].numel():
        label = int(cand["labels"][cand["scores"].argmax()])
    else:
        label = 1
    mine = torch.where(cand["labels"] == label)[0]
    mine = mine[cand["scores"][mine].argsort(descending=True, stable=True)][:top_k]
    boxes, scores = cand["boxes"][mine], cand["scores"][mine]
    thr = p.settings.iou
    kept = nms(boxes, scores, thr)  # greedy; on the n best it keeps what NMS over all candidates keeps among them
    iou = box_iou(boxes, boxes)
    n = boxes.shape[0]
    # greedy order: a box is suppressed by the first kept box (in score order) above it with IoU > thr
    is_kept = torch.zeros(n, dtype=torch.bool)
    is_kept[kept] = True
    step_of = torch.full((n,), -1, dtype=torch.int64)
    step_of[kept] = torch.arange(kept.numel())
    rank = torch.empty(n, dtype=torch.int64)
    rank[scores.argsort(descending=True, stable=True)] = torch.arange(n)
    over = (iou > thr) & is_kept[:, None] & (rank[:, None] < rank[None, :])  # [suppressor, box]
    first = torch.where(over, step_of[:, None].expand(n, n), torch.full((n, n), n + 1)).min(dim=0).values \
        if n else torch.zeros(0, dtype=torch.int64)
    suppressor = torch.full((n,), -1, dtype=torch.int64)
    hit = ~is_kept & (first <= n)
    suppressor[hit] = kept[first[hit]]
    sup_iou = torch.zeros(n, dtype=iou.dtype)
    sup_iou[hit] = iou[suppressor[hit], torch.where(hit)[0]]
    soft_keep, soft_scores = soft_nms(boxes, scores, method="gaussian", sigma=0.5)
    decayed = torch.zeros(n, dtype=scores.dtype)
    decayed[soft_keep] = soft_scores
    img = p.to_image(boxes)
    greedy, soft = [], []
    for i in range(n):
        if is_kept[i]:
            k = int(step_of[i])
            greedy.append(BoxMark(box=img[i], color=_level_color(k), width=2.5,
                                  label=f"keep #{k + 1} {float(scores[i]):.2f}"))
        else:
            j = int(suppressor[i])
            k = int(step_of[j]) if j >= 0 else 0
            greedy.append(BoxMark(box=img[i], color=_level_color(k), width=1.0, alpha=0.55,
                                  label=f"x#{k + 1} IoU {float(sup_iou[i]):.2f}"))
        soft.append(BoxMark(box=img[i], value=float(decayed[i]), width=2.0 if decayed[i] > 0 else 1.0,
                            label=f"{float(scores[i]):.2f}->{float(decayed[i]):.2f}"))
    top = float(scores.max()) if n else 1.0
    name = _name(model, label - 1)
    crop, ox, oy = _zoom(image, img) if n else (image, 0.0, 0.0)
    greedy, soft = [_shift(m, ox, oy) for m in greedy], [_shift(m, ox, oy) for m in soft]
    left = Panel(crop, f"greedy NMS, IoU > {thr:g}: {kept.numel()} kept of {n}", boxes=tuple(greedy))
    right = Panel(crop, "soft-NMS (Gaussian, sigma 0.5): decayed scores", boxes=tuple(soft),
                  scale=ColorScale(0.0, max(top, 1e-6), "plasma", "decayed score"))
    caption = (f"Non-maximum suppression of the box head's {n} best candidate boxes of class '{name}' (softmax score "
               f"> {p.settings.conf:g}; NMS runs per class). Greedy (left): take the highest-scoring box (keep #1), "
               f"remove every remaining box whose IoU with it exceeds {thr:g}, repeat; each suppressed box (faint) is "
               f"labelled with the step that removed it and their IoU (box_iou). Among these best candidates greedy "
               f"NMS keeps exactly what it keeps over all of them (a box is only suppressed by higher-scoring ones). "
               f"Soft-NMS (right, Bodla et al. 2017) removes nothing: each pick multiplies the scores of the others "
               f"by exp(-IoU^2 / 0.5), so overlapping boxes sink (score before -> after) instead of vanishing "
               f"{_caption_frame(p)}.")
    data = {"label": label - 1, "boxes": boxes, "scores": scores, "kept": kept, "suppressor": suppressor,
            "suppressor_iou": sup_iou, "iou": iou, "iou_threshold": thr, "soft_keep": soft_keep,
            "soft_scores": soft_scores, "decayed_scores": decayed}
    return Explanation("rcnn_nms", "NMS step by step: greedy vs soft-NMS", caption, (left, right), data)


def _pooler_levels(model, p: RCNNPass, boxes: Tensor) -> tuple[Tensor, list[float], int, int]:
    """The FPN level index of each box as the RoI heads pool them (``multiscale_roi_align``'s calls:
    ``infer_scale`` of each pooled level w.r.t. the largest image, ``assign_levels`` with 224 / 4)."""
    feats = p.feats[: model.num_roi_levels]
    ref = tuple(int(v) for v in p.batch.image_sizes[0])
    scales = [infer_scale(f.shape[-2:], ref) for f in feats]
    k_min, k_max = int(-math.log2(scales[0])), int(-math.log2(scales[-1]))
    levels = assign_levels(boxes, k_min, k_max, 224, 4) if len(feats) > 1 else torch.zeros(
        boxes.shape[0], dtype=torch.int64)
    return levels, scales, k_min, k_max


def _crop(p: RCNNPass, box_img: Tensor, margin: float, image: Tensor) -> tuple[Tensor, float, float]:
    """A crop of ``image`` around ``box_img`` (original pixels) with ``margin`` px; returns it and its origin."""
    H, W = image.shape[-2:]
    x0 = int(max(0, math.floor(float(box_img[0]) - margin)))
    y0 = int(max(0, math.floor(float(box_img[1]) - margin)))
    x1 = int(min(W, math.ceil(float(box_img[2]) + margin)))
    y1 = int(min(H, math.ceil(float(box_img[3]) + margin)))
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    return image[:, y0:y1, x0:x1], float(x0), float(y0)


def _zoom(image: Tensor, boxes: Tensor, *marks_lists) -> tuple[Tensor, float, float]:
    """A crop of ``image`` around the union of ``boxes`` (original pixels, ``[N, 4]``) with a margin of a
    quarter of its size (so small boxes are drawn large); returns it and its origin ``(x0, y0)``."""
    lo, hi = boxes[:, :2].min(0).values, boxes[:, 2:].max(0).values
    margin = 0.25 * float((hi - lo).max()) + 8.0
    return _crop(None, torch.cat([lo, hi]), margin, image)


def _shift(m: BoxMark, ox: float, oy: float) -> BoxMark:
    from dataclasses import replace

    b = m.box
    return replace(m, box=(b[0] - ox, b[1] - oy, b[2] - ox, b[3] - oy))


def _roi_align(model, p: RCNNPass, image: Tensor, roi: int | None) -> Explanation:
    proposals = p.raw.rpn.proposals[0]
    if proposals.shape[0] == 0:
        raise ConfigError("roi_align: the RPN gave no proposals for this image")
    i = 0 if roi is None else int(roi)
    if not 0 <= i < proposals.shape[0]:
        raise ConfigError(f"roi must be in 0..{proposals.shape[0] - 1} (the RPN's proposals, best first), got {roi}")
    r = proposals[i]
    levels, scales, k_min, _ = _pooler_levels(model, p, r[None])
    level = int(levels[0])
    scale = scales[level]
    feat = p.feats[level]
    head = model.roi_box
    P, S = head.pool_size, head.sampling_ratio
    pts = roi_align_sample_points(r, (P, P), scale, S, aligned=False)  # the box head's MultiScaleRoIAlign
    bins = roi_pool_bins(r, (P, P), scale, tuple(feat.shape[-2:]))
    sy, sx = p.scale
    stride = 1.0 / scale
    # feature coordinate v <-> input pixel v * stride (cell i centred at i * stride), then original pixels
    to_img = torch.tensor([stride / sx, stride / sy], dtype=torch.float64)
    pts_img = pts * to_img
    r_img = p.to_image(r)
    margin = 1.5 * stride / min(sx, sy)
    crop, ox, oy = _crop(p, r_img, margin, image)
    ch, cw = crop.shape[-2:]
    o = torch.tensor([ox, oy], dtype=torch.float64)
    mean = feat[0].mean(0)
    h, w = mean.shape
    ext = ((-0.5 * stride) / sx - ox, (-0.5 * stride) / sy - oy, ((w - 0.5) * stride) / sx - ox,
           ((h - 0.5) * stride) / sy - oy)
    overlay = ScalarMap(mean, extent=ext, scale=None, alpha=0.35, resample="nearest")
    grid = []  # feature cell borders inside the crop
    c0x, c1x = math.floor((ox * sx) / stride), math.ceil(((ox + cw) * sx) / stride) + 1
    c0y, c1y = math.floor((oy * sy) / stride), math.ceil(((oy + ch) * sy) / stride) + 1
    for c in range(c0x, c1x + 1):
        x = (c - 0.5) * stride / sx - ox
        if 0 <= x <= cw:
            grid.append(SegmentMark(start=(x, 0), end=(x, ch), color=_GRID, width=0.6))
    for c in range(c0y, c1y + 1):
        y = (c - 0.5) * stride / sy - oy
        if 0 <= y <= ch:
            grid.append(SegmentMark(start=(0, y), end=(cw, y), color=_GRID, width=0.6))
    roi_mark = BoxMark(box=(float(r_img[0]) - ox, float(r_img[1]) - oy, float(r_img[2]) - ox, float(r_img[3]) - oy),
                       color=(255, 255, 255), width=2.5, label=f"RoI on {_level_name(level)}")
    # RoIAlign's bins (exact, not rounded) and its sample points
    fx1, fy1 = float(pts[0, 0, 0, 0, 0]), float(pts[0, 0, 0, 0, 1])
    bw = float(r[2] - r[0]) * scale / P if float(r[2] - r[0]) * scale >= 1 else 1.0 / P
    bh = float(r[3] - r[1]) * scale / P if float(r[3] - r[1]) * scale >= 1 else 1.0 / P
    x_start, y_start = fx1 - bw / (2 * S), fy1 - bh / (2 * S)
    align_bins = []
    for a in range(P):
        for b in range(P):
            bx = torch.tensor([x_start + b * bw, y_start + a * bh, x_start + (b + 1) * bw, y_start + (a + 1) * bh],
                              dtype=torch.float64)
            bi = bx * torch.cat([to_img, to_img]) - torch.cat([o, o])
            align_bins.append(BoxMark(box=bi, color=(255, 215, 0), width=0.6))
    points = tuple(PointMark(xy=tuple((q - o).tolist()), color=(0, 255, 255), radius=1.3)
                   for q in pts_img.reshape(-1, 2))
    left = Panel(crop, f"RoIAlign {P}x{P} bins x {S}x{S} samples on {_level_name(level)}", overlay=overlay,
                 boxes=(roi_mark, *align_bins), points=points, segments=tuple(grid))
    pool_marks = []
    b = bins.reshape(-1, 4).to(torch.float64)
    for q in b:
        if q[2] <= q[0] or q[3] <= q[1]:
            continue
        bi = torch.stack([(q[0] - 0.5) * stride / sx - ox, (q[1] - 0.5) * stride / sy - oy,
                          (q[2] - 0.5) * stride / sx - ox, (q[3] - 0.5) * stride / sy - oy])
        pool_marks.append(BoxMark(box=bi, color=(255, 100, 0), width=1.0, alpha=0.8))
    snapped = (int(bins[..., 0].min()), int(bins[..., 1].min()), int(bins[..., 2].max()), int(bins[..., 3].max()))
    snap = BoxMark(box=((snapped[0] - 0.5) * stride / sx - ox, (snapped[1] - 0.5) * stride / sy - oy,
                        (snapped[2] - 0.5) * stride / sx - ox, (snapped[3] - 0.5) * stride / sy - oy),
                   color=(255, 100, 0), width=2.5, label="snapped RoI")
    right = Panel(crop, f"RoIPool {P}x{P}: bins snapped to cells", overlay=overlay,
                  boxes=(BoxMark(box=roi_mark.box, color=(255, 255, 255), width=1.5, alpha=0.7), snap, *pool_marks))
    caption = (f"Cropping features for RoI {i} (the RPN's proposal {i}, {float(r_img[2] - r_img[0]):.0f}x"
               f"{float(r_img[3] - r_img[1]):.0f} px; pooled from {_level_name(level)}, stride {stride:g}: grey lines "
               f"are its feature cells, cell i centred at i x stride). RoI Align (left, the box head's: {P}x{P} "
               f"bins, sampling ratio {S}) divides the RoI into equal bins that need not align with the grid and "
               f"samples {S}x{S} points per bin at sub-pixel positions (cyan); each point is a bilinear "
               f"interpolation of its 4 neighbouring cells and a bin is their mean. RoI Pool (right, Fast R-CNN) snaps "
               f"the RoI and then every bin to the feature grid (round, then floor / ceil) and max-pools the cells of "
               f"each bin: bins of unequal size, a misalignment of up to half a cell -- what RoI Align removes.")
    data = {"roi": r, "level": level, "spatial_scale": scale, "k_min": k_min, "sample_points": pts,
            "sample_points_image": pts_img, "pool_bins": bins, "pool_size": P, "sampling_ratio": S, "aligned": False}
    return Explanation("rcnn_roi_align", "RoI Align vs RoI Pool on the feature grid", caption, (left, right), data)


def _fpn_levels(model, p: RCNNPass, image: Tensor, top_k: int) -> Explanation:
    proposals = p.raw.rpn.proposals[0]
    levels, scales, k_min, k_max = _pooler_levels(model, p, proposals)
    size = torch.sqrt(box_geometry.area(proposals))
    # the top_k best proposals, and the 5 best of every level (so a level with few RoIs still shows)
    shown = set(range(min(top_k, proposals.shape[0])))
    for level in levels.unique().tolist():
        shown.update(torch.where(levels == level)[0][:5].tolist())
    shown_idx = sorted(shown)
    n = len(shown_idx)
    img = p.to_image(proposals)
    marks = tuple(BoxMark(box=img[i], color=_level_color(int(levels[i])), width=1.5,
                          label=f"{_level_name(int(levels[i]))} {float(size[i]):.0f}" if r < 12 or i >= top_k else "")
                  for r, i in enumerate(shown_idx))
    counts = torch.bincount(levels, minlength=k_max - k_min + 1).tolist()
    legend = []
    for li, k in enumerate(range(k_min, k_max + 1)):
        lo = 224 * 2.0 ** (k - 4) if k > k_min else 0.0
        hi = 224 * 2.0 ** (k - 3) if k < k_max else float("inf")
        legend.append(TextMark(xy=(2, 2 + 14 * li), color=_level_color(li),
                               label=f"P{k}: {lo:.0f} <= s < {hi:.0f}  ({counts[li]})"))
    panel = Panel(image, f"{n} proposals by pyramid level", boxes=marks, texts=tuple(legend))
    caption = (f"FPN level assignment (FPN eq. 1): a RoI of width w and height h (network-input pixels) is pooled "
               f"from level k = floor(4 + log2(sqrt(w h) / 224)), clamped to P{k_min}..P{k_max}: a 224 px RoI (the "
               f"ImageNet size) reads P4, each halving of its size one finer level. Boxes: the {min(top_k, n)} best of "
               f"the {proposals.shape[0]} proposals and the 5 best of each level, coloured and labelled by their level and size s = sqrt(w h); the "
               f"legend gives each level's size range and count over all proposals {_caption_frame(p)}.")
    data = {"boxes": proposals, "levels": levels, "sizes": size, "k_min": k_min, "k_max": k_max,
            "scales": scales, "counts": counts, "shown": shown_idx}
    return Explanation("rcnn_fpn_levels", "FPN level of each RoI by its size", caption, (panel,), data)


def _features(model, p: RCNNPass, image: Tensor) -> Explanation:
    strides = _strides(p)
    panels, means = [], []
    for level, (f, st) in enumerate(zip(p.feats, strides)):
        m = f[0].mean(0)
        means.append(m)
        extra = " (RPN only)" if level >= model.num_roi_levels else ""
        panels.append(Panel(image, f"{_level_name(level)}: stride {st[1]}, {m.shape[1]}x{m.shape[0]}{extra}",
                            overlay=ScalarMap(m, extent=_level_extent(p, f, st), alpha=0.75)))
    caption = (f"The feature pyramid (FPN): the channel mean of each of its {len(p.feats)} levels "
               f"({p.feats[0].shape[1]} channels each), over the image. Each level adds the upsampled coarser level "
               f"to the backbone stage of its size (lateral 1x1 conv) and smooths the sum with a 3x3 conv, so fine "
               f"levels carry coarse semantics; the RPN runs on all levels, the RoI heads pool from "
               f"{', '.join(_level_name(l) for l in range(model.num_roi_levels))}. Each map has its own colour range "
               f"{_caption_frame(p)}.")
    data = {"means": means, "strides": strides, "shapes": [tuple(f.shape) for f in p.feats]}
    return Explanation("rcnn_features", "Feature maps of the pyramid levels", caption, tuple(panels), data)


def _receptive_field(model, p: RCNNPass, image: Tensor, level: int | None, at: Any, box: Any) -> Explanation:
    n_stages = len(p.trunk)
    stage = min(1, n_stages - 1) if level is None else int(level)  # default C3: a field the size of objects
    if not 0 <= stage < n_stages:
        raise ConfigError(f"level must be in 0..{n_stages - 1} for the receptive field (backbone stages "
                          f"C2..C{n_stages + 1}), got {level}")
    x = p.batch.tensor
    rf = receptive_field(model.backbone, x, stage)
    f = p.trunk[stage]
    h, w = int(f.shape[-2]), int(f.shape[-1])
    sy, sx = p.scale
    if at is None:
        ref, _ = _reference_box(p, box)
        cx, cy = float(ref[0] + ref[2]) / 2, float(ref[1] + ref[3]) / 2
    else:
        ax, ay = _xy(at, "at")
        cx, cy = ax * sx, ay * sy
    u = int(min(max(round((cx - 0.5 - rf.start[1]) / rf.jump[1]), 0), w - 1))
    v = int(min(max(round((cy - 0.5 - rf.start[0]) / rf.jump[0]), 0), h - 1))
    box_in = rf.box(u, v)
    # the effective receptive field: |d unit / d input| (sum over the unit's channels), the same trunk
    with torch.enable_grad():
        xi = x.detach().clone().requires_grad_(True)
        out = model.backbone(xi)[stage]
        grad, = torch.autograd.grad(out[0, :, v, u].sum(), xi)
    g = grad[0].abs().sum(0)
    nz = torch.nonzero(g > 0)
    support = (float(nz[:, 1].min()), float(nz[:, 0].min()), float(nz[:, 1].max()) + 1, float(nz[:, 0].max()) + 1) \
        if nz.numel() else (0.0, 0.0, 0.0, 0.0)
    H, W = g.shape
    gmax = float(g.max()) if g.numel() else 1.0
    overlay = ScalarMap(g, extent=(0.0, 0.0, W / sx, H / sy), scale=ColorScale(0.0, max(gmax, 1e-12), "inferno",
                                                                               "|d unit/d input|"), alpha=0.8)
    to_img = torch.tensor([sx, sy, sx, sy], dtype=torch.float64)
    b_img = torch.tensor(box_in, dtype=torch.float64) / to_img
    unit = torch.tensor([rf.start[1] + u * rf.jump[1] - rf.jump[1] / 2 + 0.5, rf.start[0] + v * rf.jump[0] -
                         rf.jump[0] / 2 + 0.5, rf.start[1] + u * rf.jump[1] + rf.jump[1] / 2 + 0.5,
                         rf.start[0] + v * rf.jump[0] + rf.jump[0] / 2 + 0.5], dtype=torch.float64) / to_img
    panel = Panel(image, f"C{stage + 2} unit ({u}, {v}): theoretical field {rf.size[1]:g}x{rf.size[0]:g} px",
                  overlay=overlay,
                  boxes=(BoxMark(box=b_img, color=(0, 255, 255), width=2.5, label=f"theoretical {rf.size[1]:g} px"),
                         BoxMark(box=unit, color=(255, 255, 255), width=2.0, label=f"unit, jump {rf.jump[1]:g}")))
    glob = (" A global pooling runs on the way, so the field is in fact the whole image." if rf.is_global else "")
    caption = (f"Receptive field of one unit of backbone stage C{stage + 2} (stride {rf.jump[1]:g}). Theoretical "
               f"(cyan): the input pixels that can influence it, from the recurrence r += (k - 1) d j, j *= s over "
               f"the {len(rf.layers)} convolutions and poolings of the trunk's main path (a projection shortcut's "
               f"path is shorter): {rf.size[1]:g} x {rf.size[0]:g} network-input pixels, drawn in the image's pixels "
               f"(it may reach past the image into the padding). Overlay: the gradient magnitude of the unit w.r.t. "
               f"the input, its effective receptive field (Luo et al. 2016): the weight concentrates near the "
               f"centre and fades long before the theoretical border.{glob} {_caption_frame(p)}")
    data = {"stage": stage, "unit": (u, v), "size": rf.size, "jump": rf.jump, "start": rf.start,
            "box": box_in, "box_image": b_img, "layers": rf.layers, "gradient": g, "gradient_support": support,
            "is_global": rf.is_global}
    return Explanation("rcnn_receptive_field", f"Receptive field of a C{stage + 2} unit", caption, (panel,), data)


def _no_detections(name: str, title: str, image: Tensor, p: RCNNPass, what: str) -> Explanation:
    caption = (f"{what}: the model detected nothing above score {p.settings.conf:g} on this image, so there is no "
               f"box to show the head's output for (lower conf to see some).")
    return Explanation(name, title, caption, (Panel(image, "no detections"),), {"count": 0})


def _mask_head(model, p: RCNNPass, image: Tensor, top_k: int) -> Explanation:
    d = p.raw.detections[0]
    if d.boxes.shape[0] == 0 or d.mask_probs is None:
        return _no_detections("rcnn_mask_head", "Mask head output before pasting", image, p, "Mask head")
    n = min(top_k, d.boxes.shape[0])
    M = int(d.mask_probs.shape[-1])
    img = p.to_image(d.boxes[:n])
    panels = []
    for i in range(n):
        crop, ox, oy = _crop(p, img[i], 0.15 * float(max(img[i, 2] - img[i, 0], img[i, 3] - img[i, 1])) + 2, image)
        b = (float(img[i, 0]) - ox, float(img[i, 1]) - oy, float(img[i, 2]) - ox, float(img[i, 3]) - oy)
        lab = int(d.labels[i]) - 1
        overlay = ScalarMap(d.mask_probs[i], extent=b if b[2] > b[0] and b[3] > b[1] else None,
                            scale=ColorScale(0.0, 1.0, "viridis", "mask prob"), alpha=0.75,
                            resample="nearest")
        panels.append(Panel(crop, f"#{i + 1} {_name(model, lab)} {float(d.scores[i]):.2f}", overlay=overlay,
                            boxes=(BoxMark(box=b, color=(255, 255, 255), width=1.5),)))
    aligned = "half-pixel aligned (cell i centred at x0 + (i + 0.5) w / M)" if model.mask_aligned else \
        "torchvision's unaligned convention"
    caption = (f"Mask R-CNN's mask head predicts, for every RoI, one {M}x{M} mask per class from {model.roi_mask.pool_size}"
               f"x{model.roi_mask.pool_size} RoIAlign features (4 convs + a 2x deconv): a sigmoid per pixel, so classes "
               f"do not compete; inference keeps the channel of the detected class. Shown: those {M}x{M} "
               f"probabilities of the {n} best detections, stretched over their boxes before pasting ({aligned}); "
               f"pasting resamples them into the image and thresholds at {model.mask_threshold:g}.")
    data = {"mask_probs": d.mask_probs[:n], "boxes": d.boxes[:n], "boxes_image": img, "labels": d.labels[:n] - 1,
            "scores": d.scores[:n]}
    return Explanation("rcnn_mask_head", "Mask head output before pasting", caption, tuple(panels), data)


def _keypoints(model, p: RCNNPass, image: Tensor, top_k: int) -> Explanation:
    d = p.raw.detections[0]
    if d.boxes.shape[0] == 0 or d.keypoint_logits is None:
        return _no_detections("rcnn_keypoints", "Keypoint heatmaps", image, p, "Keypoint head")
    logits = d.keypoint_logits[0]  # [K, S, S]
    K, S = int(logits.shape[0]), int(logits.shape[-1])
    names = model.keypoint_set.names if model.keypoint_set is not None else tuple(f"kp{k}" for k in range(K))
    b_img = p.to_image(d.boxes[0])
    crop, ox, oy = _crop(p, b_img, 0.1 * float(max(b_img[2] - b_img[0], b_img[3] - b_img[1])) + 2, image)
    b = (float(b_img[0]) - ox, float(b_img[1]) - oy, float(b_img[2]) - ox, float(b_img[3]) - oy)
    ext = b if b[2] > b[0] and b[3] > b[1] else None
    kp = p.result.keypoints[0] if p.result.keypoints is not None and len(p.result) else torch.zeros(K, 3)
    ks = p.result.keypoint_scores[0] if p.result.keypoint_scores is not None and len(p.result) else torch.zeros(K)
    pts = tuple(PointMark(xy=(float(kp[k, 0]) - ox, float(kp[k, 1]) - oy), label_index=k, radius=2.5,
                          label=names[k] if k < len(names) else str(k)) for k in range(K))
    prob = torch.softmax(logits.flatten(1), 1).reshape(K, S, S)  # the head's loss: a softmax over the S x S cells
    top = prob.amax(0)
    panels = [Panel(crop, f"max over {K} keypoints (spatial softmax)", overlay=ScalarMap(top, extent=ext, alpha=0.75),
                    points=pts, boxes=(BoxMark(box=b, color=(255, 255, 255), width=1.5),))]
    best = ks.argsort(descending=True, stable=True)[: max(0, top_k - 1)].tolist()
    for k in best:
        panels.append(Panel(crop, f"{names[k] if k < len(names) else k}: score {float(ks[k]):.2f}",
                            overlay=ScalarMap(logits[k], extent=ext, alpha=0.75),
                            points=(pts[k],), boxes=(BoxMark(box=b, color=(255, 255, 255), width=1.5),)))
    caption = (f"Keypoint R-CNN's keypoint head predicts, per detected person, K = {K} heatmaps of {S}x{S} cells over "
               f"the box (one-hot targets, a softmax over the cells per keypoint in training). Left: the spatial "
               f"softmax's maximum over the keypoints, with the keypoints predict decodes (each heatmap's maximum, "
               f"refined by upsampling, mapped into the box); then the raw heatmap logits of the {len(best)} "
               f"highest-scoring keypoints of the best detection ({float(d.scores[0]):.2f}).")
    data = {"keypoint_logits": logits, "keypoints": kp, "keypoint_scores": ks, "box": d.boxes[0],
            "box_image": b_img}
    return Explanation("rcnn_keypoints", "Keypoint heatmaps of the best detection", caption, tuple(panels), data)


def rcnn_explanation(model: "TwoStageDetector", view: str, image: Tensor, *, conf: float | None = None,
                     max_det: int | None = None, imgsz: Any = None, level: int | None = None, at: Any = None,
                     box: Any = None, roi: int | None = None, top_k: int | None = None) -> list[Explanation]:
    """The ``view`` picture (:func:`rcnn_views`) of ``model`` on ``image`` (``float [3, H, W]`` in [0, 1]).

    Options: ``conf`` / ``max_det`` / ``imgsz`` as ``predict``; ``level``: the pyramid level index (0 =
    P2) of ``anchors`` (default: the level whose anchor size best fits the reference box) or the
    backbone stage index (0 = C2) of ``receptive_field`` (default: C3); ``at``: ``(x, y)`` image
    pixels of the location (default: the reference box's centre); ``box``: an XYXY ground-truth box in
    image pixels (default reference: the best detection); ``roi``: which RPN proposal ``roi_align``
    shows (0 = best); ``top_k``: how many boxes / candidates / panels (default per view)."""
    p = rcnn_pass(model, image, conf=conf, max_det=max_det, imgsz=imgsz)
    if top_k is not None and int(top_k) < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")
    k = None if top_k is None else int(top_k)
    if view == "anchors":
        return [_anchors(model, p, image, level, at, box)]
    if view == "anchor_matching":
        return [_anchor_matching(model, p, image, box, k or 8)]
    if view == "proposals":
        return [_proposals(model, p, image, k or 10)]
    if view == "nms":
        return [_nms(model, p, image, k or 12)]
    if view == "roi_align":
        return [_roi_align(model, p, image, roi)]
    if view == "fpn_levels":
        return [_fpn_levels(model, p, image, k or 40)]
    if view == "features":
        return [_features(model, p, image)]
    if view == "receptive_field":
        return [_receptive_field(model, p, image, level, at, box)]
    if view == "mask_head":
        return [_mask_head(model, p, image, k or 4)]
    if view == "keypoints":
        return [_keypoints(model, p, image, k or 4)]
    raise ConfigError(f"unknown R-CNN view {view!r}")  # explain() checks the views first
