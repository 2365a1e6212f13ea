"""The R-CNN family's explanation pictures (issue 29 s2): every view is drawn to a PNG for random-weight
small models, and the numbers in each Explanation's data are the ops' / the forward pass's numbers."""
from __future__ import annotations

import pytest
import torch
import torchvision
from PIL import Image

from sceneparse.errors import ConfigError
from sceneparse.models.detectors.explain import (receptive_field, roi_align_sample_points, roi_pool_bins,
                                                 rpn_candidates)
from sceneparse.models.detectors.rcnn import keypointrcnn_resnet18_fpn, maskrcnn_resnet18_fpn
from sceneparse.ops.boxes import box_iou
from sceneparse.ops.matching import Matcher
from sceneparse.ops.nms import nms, soft_nms
from sceneparse.ops.roi import assign_levels, infer_scale, multiscale_roi_align, roi_align
from sceneparse.viz.explain import write_explanations

SMALL = dict(min_size=96, max_size=128, fpn_channels=16, box_representation_size=32)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _image(seed: int = 0, h: int = 96, w: int = 128) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(3, h // 8, w // 8, generator=g)
    return torch.nn.functional.interpolate(base[None], size=(h, w), mode="bilinear")[0].clamp(0, 1)


@pytest.fixture(scope="module")
def mask_model():
    torch.manual_seed(0)
    return maskrcnn_resnet18_fpn(num_classes=3, mask_conv_channels=(8, 8), **SMALL).eval()


@pytest.fixture(scope="module")
def image():
    return _image()


@pytest.fixture(scope="module")
def explained(mask_model, image):
    """Every view of the Mask R-CNN, once."""
    return {v: mask_model.explain(image, what=v)[0] for v in mask_model.explain_views()}


def _forward(model, image):
    with torch.no_grad():
        batch, _ = model.prepare([image])
        return batch, model(batch)


def test_every_view_is_a_png(mask_model, explained, tmp_path):
    views = mask_model.explain_views()
    assert views == ("anchors", "anchor_matching", "proposals", "nms", "roi_align", "fpn_levels", "features",
                     "receptive_field", "mask_head")
    paths = write_explanations([explained[v] for v in views], tmp_path, "scene")
    assert [p.name for p in paths] == [f"scene_rcnn_{v}.png" for v in views]
    for p, v in zip(paths, views):
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
        assert len(explained[v].caption) > 150  # says what it shows


def test_anchors_are_the_rpns_anchors_at_that_cell(mask_model, image, explained):
    d = explained["anchors"].data
    _, raw = _forward(mask_model, image)
    assert torch.equal(d["anchors"], raw.rpn.anchors[d["indices"]])
    assert torch.allclose(d["objectness"], torch.sigmoid(raw.rpn.objectness[0, d["indices"]]))
    st_y, st_x = d["stride"]
    u, v = d["cell"]
    a = d["anchors"]
    centres = torch.stack([(a[:, 0] + a[:, 2]) / 2, (a[:, 1] + a[:, 3]) / 2], 1)
    assert torch.allclose(centres, torch.tensor([[u * st_x, v * st_y]] * len(a), dtype=a.dtype), atol=0.51)
    w, h = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    ratios = torch.tensor([r for r in d["aspect_ratios"] for _ in d["sizes"]])
    assert torch.allclose(h / w, ratios, rtol=0.15)
    # another level and location
    e = mask_model.explain(image, what="anchors", level=2, at=(10, 70))[0]
    assert e.data["level"] == 2 and e.data["stride"] == (16, 16) and e.data["cell"] == (1, 4)
    # default: the level whose anchor size is nearest the box's sqrt(area) (40 px -> the 32 px level), its centre
    e = mask_model.explain(image, what="anchors", box=(30, 20, 70, 60))[0]
    assert e.data["level"] == 1 and e.data["cell"] == (6, 5)


def test_anchor_matching_ious_are_box_iou_and_the_matcher(mask_model, image):
    gt = (30.0, 20.0, 70.0, 60.0)
    e = mask_model.explain(image, what="anchor_matching", box=gt)[0]
    d = e.data
    _, raw = _forward(mask_model, image)
    iou = box_iou(torch.tensor([gt]), raw.rpn.anchors)  # scale 1: the image is already 96 x 128
    assert torch.equal(d["ious"], iou[0])
    m = Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou)
    assert set(d["positives"].tolist()) == set(torch.where(m == 0)[0].tolist())
    assert torch.equal(d["positive_ious"], iou[0, d["positives"]])
    assert len(d["positives"]) >= 1 and float(d["positive_ious"].max()) == float(iou.max())
    assert all(0.3 <= float(x) < 0.7 for x in d["ignored_ious"])
    labels = [b.label for b in e.panels[0].boxes[1: 1 + len(d["positives"])]]
    assert all(f"IoU {float(x):.2f}" in lab for x, lab in zip(d["positive_ious"], labels))  # printed = box_iou's


def test_proposals_reproduce_the_rpn(mask_model, image, explained):
    d = explained["proposals"].data
    _, raw = _forward(mask_model, image)
    assert torch.equal(d["proposals"], raw.rpn.proposals[0])
    assert torch.equal(d["proposal_scores"], raw.rpn.scores[0])
    assert sum(d["counts_after"]) == len(raw.rpn.proposals[0])
    assert all(n <= mask_model.rpn.pre_nms_top_n[1] for n in d["counts_before"])


def _greedy(boxes: torch.Tensor, scores: torch.Tensor, thr: float) -> tuple[list[int], dict[int, int]]:
    """Textbook greedy NMS in float64: kept indices and who suppressed each other box."""
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    kept, by, alive = [], {}, set(order)
    iou = box_iou(boxes.double(), boxes.double())
    for i in order:
        if i not in alive:
            continue
        kept.append(i)
        for j in order:
            if j in alive and j != i and j not in kept and float(iou[i, j]) > thr:
                alive.discard(j)
                by[j] = i
    return kept, by


def test_nms_steps_are_greedy_nms_and_soft_nms(mask_model, image, explained):
    d = explained["nms"].data
    boxes, scores, thr = d["boxes"], d["scores"], d["iou_threshold"]
    assert len(boxes) == 12
    assert torch.equal(d["kept"], nms(boxes, scores, thr))
    kept, by = _greedy(boxes, scores, thr)
    assert d["kept"].tolist() == kept
    assert {j: int(d["suppressor"][j]) for j in range(len(boxes)) if int(d["suppressor"][j]) >= 0} == by
    iou = box_iou(boxes, boxes)
    for j, i in by.items():
        assert float(d["suppressor_iou"][j]) == float(iou[i, j]) > thr
    sk, ss = soft_nms(boxes, scores, method="gaussian", sigma=0.5)
    assert torch.equal(d["soft_keep"], sk) and torch.equal(d["soft_scores"], ss)
    # the kept boxes are predict's detections of that class among these candidates
    res = mask_model.predict([image])[0]
    floor = float(scores.min())
    mine = (res.labels == d["label"]) & (res.scores >= floor)
    assert torch.allclose(res.boxes[mine], boxes[d["kept"]], atol=1e-4)


def _bilinear_weights(pts: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """``[P, P, H * W]`` bin weights from sample points, by the textbook bilinear formula (float64)."""
    P1, P2, Sy, Sx, _ = pts.shape
    out = torch.zeros(P1, P2, H * W, dtype=torch.float64)
    for a in range(P1):
        for b in range(P2):
            for q in pts[a, b].reshape(-1, 2).tolist():
                x, y = q
                if y < -1.0 or y > H or x < -1.0 or x > W:
                    continue
                x, y = max(x, 0.0), max(y, 0.0)
                y0, x0 = int(y), int(x)
                if y0 >= H - 1:
                    y0 = y1 = H - 1
                    y = float(y0)
                else:
                    y1 = y0 + 1
                if x0 >= W - 1:
                    x0 = x1 = W - 1
                    x = float(x0)
                else:
                    x1 = x0 + 1
                ly, lx = y - y0, x - x0
                for yy, xx, wgt in ((y0, x0, (1 - ly) * (1 - lx)), (y0, x1, (1 - ly) * lx), (y1, x0, ly * (1 - lx)),
                                    (y1, x1, ly * lx)):
                    out[a, b, yy * W + xx] += wgt / (Sy * Sx)
    return out


@pytest.mark.parametrize("roi,scale,ratio,aligned", [((3.3, 5.1, 41.7, 30.2), 0.25, 2, False),
                                                     ((3.3, 5.1, 41.7, 30.2), 0.25, 2, True),
                                                     ((10.0, 2.5, 50.25, 60.0), 0.125, 0, False),
                                                     ((0.4, 0.2, 2.0, 2.2), 0.5, 3, False)])
def test_roi_align_sample_points_are_torchvisions(roi, scale, ratio, aligned):
    H, W = 9, 8
    feat = torch.eye(H * W, dtype=torch.float64).reshape(1, H * W, H, W)  # one-hot: channel c = cell c
    r = torch.tensor(roi, dtype=torch.float64)
    out = torchvision.ops.roi_align(feat, [r[None]], (3, 4), scale, ratio, aligned)[0]  # [H*W, 3, 4]
    pts = roi_align_sample_points(r, (3, 4), scale, ratio, aligned)
    assert torch.allclose(out.permute(1, 2, 0), _bilinear_weights(pts, H, W), atol=1e-12)


@pytest.mark.parametrize("roi,scale", [((3.3, 5.1, 41.7, 30.2), 0.25), ((10.0, 2.5, 50.25, 60.0), 0.125),
                                       ((6.0, 6.0, 18.0, 14.0), 0.25), ((-3.0, 1.0, 80.0, 70.0), 0.125)])
def test_roi_pool_bins_are_torchvisions(roi, scale):
    H, W = 9, 8
    idx = torch.arange(H * W, dtype=torch.float64).reshape(1, 1, H, W)
    feat = torch.cat([idx, -idx], 1)  # max of a bin = its last cell, max of -idx = minus its first
    r = torch.tensor(roi, dtype=torch.float64)
    out = torchvision.ops.roi_pool(feat, [r[None]], (3, 5), scale)[0]
    bins = roi_pool_bins(r, (3, 5), scale, (H, W))
    empty = (bins[..., 2] <= bins[..., 0]) | (bins[..., 3] <= bins[..., 1])
    last = ((bins[..., 3] - 1) * W + bins[..., 2] - 1).double()
    first = (bins[..., 1] * W + bins[..., 0]).double()
    assert torch.equal(torch.where(empty, 0.0, last), out[0])
    assert torch.equal(torch.where(empty, 0.0, -first), out[1])


def test_roi_align_view_pools_from_the_mappers_level(mask_model, image, explained):
    d = explained["roi_align"].data
    batch, raw = _forward(mask_model, image)
    with torch.no_grad():
        feats = mask_model.neck(mask_model.backbone(batch.tensor))[: mask_model.num_roi_levels]
    r = d["roi"]
    assert torch.equal(r, raw.rpn.proposals[0][0])
    ref = tuple(batch.image_sizes[0])
    scales = [infer_scale(f.shape[-2:], ref) for f in feats]
    assert d["spatial_scale"] == scales[d["level"]]
    k_min = int(-torch.log2(torch.tensor(scales[0])))
    assert d["level"] == int(assign_levels(r[None], k_min, k_min + len(feats) - 1)[0])
    with torch.no_grad():  # what the box head pools for this RoI is RoIAlign on that level
        pooled = multiscale_roi_align(feats, [r[None]], list(batch.image_sizes), 7, 2)
        direct = roi_align(feats[d["level"]], [r[None]], 7, d["spatial_scale"], 2)
    assert torch.equal(pooled, direct)
    assert d["sample_points"].shape == (7, 7, 2, 2, 2)
    e = mask_model.explain(image, what="roi_align", roi=5)[0]
    assert torch.equal(e.data["roi"], raw.rpn.proposals[0][5])


def test_fpn_levels_are_the_mappers(mask_model, image, explained):
    d = explained["fpn_levels"].data
    batch, raw = _forward(mask_model, image)
    props = raw.rpn.proposals[0]
    assert torch.equal(d["boxes"], props)
    assert torch.equal(d["levels"], assign_levels(props, d["k_min"], d["k_max"]))
    assert sum(d["counts"]) == len(props)
    big = torch.tensor([[0.0, 0.0, 300.0, 300.0], [0.0, 0.0, 8.0, 8.0]])  # a large box reads a coarser level
    lv = assign_levels(big, d["k_min"], d["k_max"])
    assert int(lv[0]) > int(lv[1]) == 0


def test_feature_maps_are_the_fpns(mask_model, image, explained):
    d = explained["features"].data
    batch, _ = _forward(mask_model, image)
    with torch.no_grad():
        feats = mask_model.neck(mask_model.backbone(batch.tensor))
    assert len(d["means"]) == len(feats) == 5
    for m, f in zip(d["means"], feats):
        assert torch.allclose(m, f[0].mean(0), atol=1e-6)


def test_receptive_field_recurrence_and_gradient(mask_model, image, explained):
    batch, _ = _forward(mask_model, image)
    with torch.no_grad():
        c5 = receptive_field(mask_model.backbone, batch.tensor, 3)
        c3 = receptive_field(mask_model.backbone, batch.tensor, 1)
    assert c5.size == (435.0, 435.0) and c5.jump == (32.0, 32.0)  # ResNet-18's known field
    assert c3.size == (99.0, 99.0) and c3.jump == (8.0, 8.0)
    assert not c5.is_global and not any("downsample" in n for n in c5.layers)
    d = explained["receptive_field"].data
    assert d["stage"] == 1 and d["size"] == c3.size
    x0, y0, x1, y1 = d["box"]
    g0, h0, g1, h1 = d["gradient_support"]
    assert g1 > g0 and x0 <= g0 and y0 <= h0 and g1 <= x1 and h1 <= y1  # the gradient stays inside
    assert (g1 - g0) > 0.5 * min(x1 - x0, batch.tensor.shape[-1])  # and fills much of it


def test_mask_head_view_is_the_heads_output(mask_model, image, explained):
    d = explained["mask_head"].data
    _, raw = _forward(mask_model, image)
    det = raw.detections[0]
    n = len(d["mask_probs"])
    assert n == 4 and d["mask_probs"].shape[-2:] == (28, 28)
    assert torch.allclose(d["mask_probs"], det.mask_probs[:n], atol=1e-6)
    assert torch.equal(d["labels"], det.labels[:n] - 1)


def test_keypoint_heatmaps_are_the_heads():
    torch.manual_seed(1)
    model = keypointrcnn_resnet18_fpn(keypoint_conv_channels=(8, 8), **SMALL).eval()
    img = _image(2)
    assert model.explain_views()[-1] == "keypoints" and "mask_head" not in model.explain_views()
    e = model.explain(img, what="keypoints", conf=0.0)[0]
    _, raw = _forward(model, img)
    assert torch.allclose(e.data["keypoint_logits"], raw.detections[0].keypoint_logits[0], atol=1e-5)
    res = model.predict([img], conf=0.0)[0]
    assert torch.allclose(e.data["keypoints"], res.keypoints[0], atol=1e-4)
    assert len(e.panels) == 4


def test_options_are_checked(mask_model, image):
    with pytest.raises(ConfigError, match="level must be in 0..4"):
        mask_model.explain(image, what="anchors", level=7)
    with pytest.raises(ConfigError, match="roi must be in"):
        mask_model.explain(image, what="roi_align", roi=10_000)
    with pytest.raises(ConfigError, match="unknown option"):
        mask_model.explain(image, what="anchors", query=3)
    with pytest.raises(ConfigError, match="box must be"):
        mask_model.explain(image, what="anchor_matching", box=(5, 5, 1, 1))


def test_every_view_without_detections(mask_model, image, tmp_path):
    """conf 1: no detection and no box-head candidate; every view still draws (reference box: the best
    proposal; the head views say there is nothing to show)."""
    out = mask_model.explain(image, conf=1.0)
    assert [e.name for e in out] == [f"rcnn_{v}" for v in mask_model.explain_views()]
    by = {e.name: e for e in out}
    assert len(by["rcnn_nms"].data["boxes"]) == 0 and by["rcnn_mask_head"].data == {"count": 0}
    assert "best RPN proposal" in by["rcnn_anchor_matching"].caption
    assert len(write_explanations(out[-2:], tmp_path, "empty")) == 2
