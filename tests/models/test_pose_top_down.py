"""SimpleBaseline top-down pose: the affine crop and its inverse, the sampling grid, the heatmap round
trip through crop -> encode -> decode -> uncrop, the loss (properties; drops when trained), predict."""
from __future__ import annotations

import pytest
import torch

from sceneparse.errors import CheckpointError, ConfigError
from sceneparse.models import zoo
from sceneparse.models.pose.affine import (
    apply_affines,
    box_to_center_size,
    crop_affines,
    invert_affines,
    warp_crops,
)
from sceneparse.ops import keypoint_codec
from sceneparse.structures.instances import Instances
from sceneparse.structures.target import Target


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/models/conftest.py


def _people(seed: int = 0, size=(120, 100), n=(2, 1)):
    """Images with ``n[i]`` people: boxes and 17 keypoints inside them (one unlabelled)."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for i, k in enumerate(n):
        h, w = size
        xy = torch.rand(k, 2, generator=g) * torch.tensor([w * 0.4, h * 0.3])
        wh = torch.rand(k, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3]) + torch.tensor([20.0, 40.0])
        boxes = torch.cat([xy, xy + wh], 1)
        u = 0.1 + 0.8 * torch.rand(k, 17, 2, generator=g)
        kp = torch.stack([boxes[:, None, 0] + u[..., 0] * wh[:, None, 0],
                          boxes[:, None, 1] + u[..., 1] * wh[:, None, 1],
                          torch.full((k, 17), 2.0)], 2)
        kp[0, 3, 2] = 0
        images.append(torch.rand(3, h, w, generator=g))
        targets.append(Target(i, Instances((h, w), boxes=boxes, labels=torch.zeros(k, dtype=torch.long), keypoints=kp)))
    return images, targets


def test_crop_uncrop_round_trip_within_1e3_px():
    g = torch.Generator().manual_seed(0)
    m = 50
    xy = torch.rand(m, 2, generator=g) * 500
    boxes = torch.cat([xy, xy + 10 + torch.rand(m, 2, generator=g) * 300], 1)
    c, s = box_to_center_size(boxes, 192 / 256)
    rot = (torch.rand(m, generator=g) * 2 - 1) * 40
    flip = torch.rand(m, generator=g) < 0.5
    a = crop_affines(c, s, (256, 192), rot, flip)
    pts = torch.rand(m, 17, 2, generator=g) * 800
    back = apply_affines(invert_affines(a), apply_affines(a, pts))
    assert (back - pts).abs().max() < 1e-3
    # the padded box: same aspect as the input, 1.25 x, contains the box; its centre goes to the crop's centre
    assert torch.allclose(s[:, 0] / s[:, 1], torch.full((m,), 0.75))
    assert ((s >= 1.25 * (boxes[:, 2:] - boxes[:, :2]) - 1e-3).all())
    assert torch.allclose(apply_affines(a, c[:, None])[:, 0], torch.tensor([96.0, 128.0]).expand(m, 2), atol=1e-3)


def test_affine_hand_computed():
    # a 30 x 40 box (already 3:4) with padding 1: its corners are the crop's corners, scale 192 / 30
    box = torch.tensor([[10.0, 20.0, 40.0, 60.0]])
    c, s = box_to_center_size(box, 192 / 256, padding=1.0)
    a = crop_affines(c, s, (256, 192))
    corners = torch.tensor([[[10.0, 20.0], [40.0, 60.0], [25.0, 40.0]]])
    assert torch.allclose(apply_affines(a, corners)[0], torch.tensor([[0.0, 0.0], [192.0, 256.0], [96.0, 128.0]]),
                          atol=1e-4)
    # mirrored: the left edge goes to the right; rotated 90 degrees counter-clockwise: "up" becomes "left"
    af = crop_affines(c, s, (256, 192), flip=torch.tensor([True]))
    assert torch.allclose(apply_affines(af, corners)[0, 0], torch.tensor([192.0, 0.0]), atol=1e-4)
    ar = crop_affines(c, s, (256, 192), rotation=torch.tensor([90.0]))
    above = apply_affines(ar, torch.tensor([[[25.0, 30.0]]]))[0, 0]  # 10 px above the centre
    assert torch.allclose(above, torch.tensor([96.0 - 10 * 192 / 30, 128.0]), atol=1e-3)


def test_warp_crops_samples_the_inverse_affine():
    """Channels 0/1 of the image are the x/y of each pixel centre (linear: bilinear sampling is exact), so
    crop pixel (i, j) must read A^-1 (j + 0.5, i + 0.5) wherever that lies inside the image."""
    H, W = 90, 70
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    image = torch.stack([xs, ys, torch.ones_like(xs)])
    boxes = torch.tensor([[10.0, 12.0, 40.0, 70.0], [0.0, 0.0, 70.0, 90.0]])
    c, s = box_to_center_size(boxes, 24 / 32)
    a = crop_affines(c, s, (32, 24), torch.tensor([25.0, 0.0]), torch.tensor([False, True]))
    crops = warp_crops(image, a, (32, 24))
    qy, qx = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(24) + 0.5, indexing="ij")
    q = torch.stack([qx, qy], -1).reshape(1, -1, 2).expand(2, -1, -1)
    p = apply_affines(invert_affines(a), q).reshape(2, 32, 24, 2)
    inside = (p[..., 0] > 0.5) & (p[..., 0] < W - 0.5) & (p[..., 1] > 0.5) & (p[..., 1] < H - 0.5)
    assert inside.sum() > 500
    got = crops[:, :2].permute(0, 2, 3, 1)
    assert (got[inside] - p[inside]).abs().max() < 1e-3
    outside = ~((p[..., 0] > -0.5) & (p[..., 0] < W + 0.5) & (p[..., 1] > -0.5) & (p[..., 1] < H + 0.5))
    assert outside.any() and crops[:, 2][outside].abs().max() == 0


def test_heatmap_round_trip_through_the_model_frames():
    """Keypoints -> crop frame -> Gaussian targets -> decode (DARK) -> image px: back within 0.05 px
    for keypoints at least 5 heatmap cells inside the crop (DARK's blur), argmax within 1/4 cell."""
    model = zoo.build("simplebaseline_resnet18").eval()
    images, targets = _people()
    people = [torch.arange(len(t.instances)) for t in targets]
    crops = model.crop(images, [t.instances.boxes for t in targets])
    kp_crop = model.targets_to_crops(targets, crops, people)
    maps, weight = keypoint_codec.encode(kp_crop, model.heatmap_size, model.stride, model.sigma)
    truth = torch.cat([t.instances.keypoints for t in targets])
    u = kp_crop[..., :2] / model.stride - 0.5
    hh, ww = model.heatmap_size
    far = (u[..., 0] >= 5) & (u[..., 0] <= ww - 6) & (u[..., 1] >= 5) & (u[..., 1] <= hh - 6) & (truth[..., 2] > 0)
    assert far.sum() > 20 and weight[truth[..., 2] == 0].sum() == 0
    res = model.postprocess(maps, crops, "dark")
    got = torch.cat([r.keypoints for r in res])
    assert [len(r) for r in res] == [2, 1]
    assert (got[..., :2] - truth[..., :2])[far].abs().max() < 0.05
    res = model.postprocess(maps, crops, "argmax")
    scale = crops.affines[:, 0, :2].norm(dim=1)  # crop px per image px
    err = (torch.cat([r.keypoints for r in res])[..., :2] - truth[..., :2]).abs() * scale[:, None, None]
    assert err[truth[..., 2] > 0].max() <= 0.25 * model.stride + 1e-3


@pytest.mark.slow
def test_loss_properties_and_drop():
    torch.manual_seed(0)
    model = zoo.build("simplebaseline_resnet18", input_size=(64, 64), deconv_channels=64, sigma=1.0,
                      scale_jitter=0.0, rotation=0.0, flip_prob=0.0).train()
    images, targets = _people(seed=1)
    empty = [Target(0, Instances((60, 50), boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long),
                                 keypoints=torch.zeros(0, 17, 3)))]
    l0 = model.training_losses([torch.rand(3, 60, 50)], empty)["loss_heatmap"]
    assert torch.isfinite(l0) and l0 == 0
    l0.backward()  # reaches the parameters
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = model.training_losses(images, targets)["loss_heatmap"]
        assert loss > 0
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses  # measured: 59e-4 -> 35e-4


def test_predict_options_and_results():
    torch.manual_seed(0)
    model = zoo.build("simplebaseline_resnet18")
    images, targets = _people(seed=2)
    boxes = [t.instances.boxes for t in targets]
    res = model.predict(images, boxes=boxes)
    assert [len(r) for r in res] == [2, 1]
    r = res[0]
    assert r.keypoints.shape == (2, 17, 3) and r.keypoint_scores.shape == (2, 17) and (r.scores > 0).all()
    assert torch.equal(r.boxes, boxes[0]) and r.image_size == (120, 100)
    # the keypoints lie inside the padded crop region of their box
    c, s = box_to_center_size(boxes[0], 96 / 128)
    assert ((r.keypoints[..., :2] - c[:, None]).abs() <= s[:, None] / 2 * 1.001).all()
    # without boxes (and no detector): the whole image is one person
    whole = model.predict(images[:1])
    assert len(whole[0]) == 1 and torch.equal(whole[0].boxes, torch.tensor([[0.0, 0.0, 100.0, 120.0]]))
    # flip test on or off changes the maps, not the frames; decode options are checked
    nf = model.predict(images, boxes=boxes, flip_test=False, decode="dark")
    assert nf[0].keypoints.shape == (2, 17, 3)
    with pytest.raises(ConfigError):
        model.predict(images, boxes=boxes, decode="median")
    with pytest.raises(ConfigError):
        model.predict(images, boxes=boxes[:1])
    info = model.info
    assert info.task == "pose" and info.primary_metric == "keypoints_AP" and info.num_keypoints == 17


def test_flip_test_of_a_mirror_symmetric_crop_keeps_symmetric_maps():
    """A model whose heatmaps are equivariant to mirroring (mirror + channel swap): the flip-test
    average equals the plain maps (no shift in the continuous frame)."""
    model = zoo.build("simplebaseline_resnet18").eval()
    fi = torch.tensor(model.keypoint_set.flip_index)
    base = torch.rand(1, 17, 32, 24)
    sym = 0.5 * (base + base.flip(3)[:, fi])  # mirror-equivariant for a mirror-symmetric crop
    crop = torch.rand(1, 3, 128, 96)
    crop = 0.5 * (crop + crop.flip(3))

    class Fake(torch.nn.Module):
        def forward(self, x):
            return sym if torch.equal(x, crop) else sym.flip(3)[:, fi] if torch.equal(x, crop.flip(3)) else None

    from sceneparse.models.pose.top_down import PersonCrops
    crops = PersonCrops(crop, torch.zeros(1, 2, 3), torch.zeros(1, dtype=torch.long), torch.zeros(1, 4),
                        torch.ones(1), [(128, 96)], torch.zeros(1, dtype=torch.bool))
    model.forward = Fake().forward  # the network replaced by the equivariant stand-in
    assert torch.allclose(model.heatmaps(crops, flip_test=True), sym)


def test_builders_and_errors(tmp_path):
    m50 = zoo.build("simplebaseline_resnet50").eval()
    with torch.no_grad():
        assert m50(torch.rand(1, 3, 256, 192)).shape == (1, 17, 64, 48)
    assert m50.sigma == 2.0 and zoo.build("simplebaseline_resnet18").sigma == 1.0
    with pytest.raises(ConfigError):
        zoo.build("simplebaseline_resnet18", num_classes=3)
    with pytest.raises(ConfigError):
        zoo.build("simplebaseline_resnet18", input_size=(100, 96))
    missing = zoo.build("simplebaseline_resnet18", detector=str(tmp_path / "none.pt"))
    with pytest.raises(CheckpointError):
        missing.predict([torch.rand(3, 64, 64)])
    # a checkpoint of another shape names the keys
    state = {k: v for k, v in m50.state_dict().items()}
    with pytest.raises(CheckpointError, match="mismatched|missing|unexpected"):
        zoo.load_checkpoint(zoo.build("simplebaseline_resnet18"), state)


def test_detector_checkpoint_gives_the_person_boxes(tmp_path):
    """The ground-truth-free path: a sceneparse detector checkpoint rebuilt through the zoo; its
    detections of the class named 'person' (not the others) are the crops."""
    from sceneparse.engine.checkpoint import save_checkpoint

    torch.manual_seed(0)
    tiny = {"min_size": 64, "max_size": 96, "fpn_channels": 16, "box_representation_size": 32,
            "rpn_pre_nms_top_n": [100, 50], "rpn_post_nms_top_n": [50, 20], "box_detections_per_img": 10}
    det = zoo.build("fasterrcnn_resnet18_fpn", num_classes=2, **tiny).eval()
    path = tmp_path / "det.pt"
    save_checkpoint(path, det, config={"model": {"name": "fasterrcnn_resnet18_fpn", "kwargs": tiny}},
                    categories=[{"id": 1, "name": "dog"}, {"id": 2, "name": "person"}])
    images = [torch.rand(3, 80, 96), torch.rand(3, 64, 64)]
    expect = det.predict(images, conf=0.0)
    model = zoo.build("simplebaseline_resnet18", detector=str(path), detector_conf=0.0)
    res = model.predict(images)
    assert sum(int((e.labels == 1).sum()) for e in expect) > 0  # random weights still detect something
    for r, e in zip(res, expect):
        keep = e.labels == 1
        assert torch.allclose(r.boxes, e.boxes[keep]) and len(r) == int(keep.sum())
        assert r.keypoints.shape == (len(r), 17, 3)
    assert "_detector" not in dict(model.named_modules()) and not any(k.startswith("_detector")
                                                                         for k in model.state_dict())


@pytest.mark.slow
def test_export_graph_equals_predict_and_exports_to_onnx(tmp_path):
    """The whole-image graph gives predict()'s result without boxes; ONNX export verifies it against
    eager PyTorch at two sizes (the exporter's check)."""
    pytest.importorskip("onnxruntime")
    from sceneparse.engine.export import export_model

    torch.manual_seed(0)
    model = zoo.build("simplebaseline_resnet18", input_size=(64, 64), deconv_channels=32).eval()
    image = torch.rand(3, 70, 50)
    with torch.no_grad():
        boxes, scores, labels, kp, ks = model.export_graph()(image)
    ref = model.predict([image])[0]
    assert torch.equal(boxes, ref.boxes) and torch.allclose(scores, ref.scores) and torch.equal(labels, ref.labels)
    assert torch.allclose(kp, ref.keypoints, atol=1e-5) and torch.allclose(ks, ref.keypoint_scores)
    report = export_model(model, tmp_path / "sb.onnx", imgsz=64)
    assert (tmp_path / "sb.onnx").is_file() and report.cases and all(c.ok for c in report.cases)


def test_released_simplebaseline_layout_loads():
    """The paper's released checkpoints name the trunk as torchvision does (conv1, layer1..4) and the
    head deconv_layers.N / final_layer: a torchvision ResNet-18 trunk + head weights in that layout load,
    and the trunk gives torchvision's features."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    tv = resnet18(weights=None).eval()
    model = zoo.build("simplebaseline_resnet18", input_size=(64, 64), deconv_channels=32).eval()
    head = {f"{k}": torch.randn_like(v) if v.is_floating_point() else v for k, v in model.head.state_dict().items()}
    released = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    released.update(head)
    zoo.load_checkpoint(model, released)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        t = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        feats = tv.layer4(tv.layer3(tv.layer2(tv.layer1(t))))
        assert torch.allclose(model.backbone(x)[-1], feats, atol=1e-5)
    assert torch.equal(model.head.final_layer.weight, head["final_layer.weight"])
    mm = {f"backbone.{k}": v for k, v in released.items() if not k.startswith(("deconv", "final"))}
    mm.update({f"keypoint_head.{k}": v for k, v in head.items()})
    zoo.load_checkpoint(zoo.build("simplebaseline_resnet18", input_size=(64, 64), deconv_channels=32), mm)
    with pytest.raises(CheckpointError, match="fc.weight"):  # an ImageNet classifier is not a pose model
        zoo.load_checkpoint(model, tv.state_dict())
