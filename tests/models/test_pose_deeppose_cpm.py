"""DeepPose (regression + cascade), Convolutional Pose Machines and Stacked Hourglass (stages / stacks with
intermediate supervision) on the shared top-down pipeline, and ``predict --det`` (a detector checkpoint
chained with a pose checkpoint).

Hand-made cases: the normalised targets ``N(y; b)`` and the L2 loss, the cascade's sub-image geometry (a
refined joint maps back to image px exactly, sub-images read the full-resolution image where the
composed affine says), a cascade with fixed network outputs against hand-computed joints, CPM's stage
count, ideal beliefs, per-stage losses and receptive field; a few optimiser steps lower every loss."""
from __future__ import annotations

import json
import math

import pytest
import torch

from sceneparse.errors import ConfigError
from sceneparse.models import zoo
from sceneparse.models.pose.affine import apply_affines, box_to_center_size, crop_affines, invert_affines, warp_crops
from sceneparse.models.pose.deeppose import compose_affines, mirror_affines, regression_loss
from sceneparse.structures.instances import Instances
from sceneparse.structures.target import Target

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/models/conftest.py

NO_AUG = {"scale_jitter": 0.0, "rotation": 0.0, "flip_prob": 0.0}


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
                          boxes[:, None, 1] + u[..., 1] * wh[:, None, 1], torch.full((k, 17), 2.0)], 2)
        kp[0, 3, 2] = 0
        images.append(torch.rand(3, h, w, generator=g))
        targets.append(Target(i, Instances((h, w), boxes=boxes, labels=torch.zeros(k, dtype=torch.long), keypoints=kp)))
    return images, targets


def _small_deeppose(**kw):
    args = dict(input_size=(64, 64), sub_crop_size=40, stages=2, **NO_AUG)
    args.update(kw)
    return zoo.build("deeppose_resnet18", **args)


# ---- DeepPose -------------------------------------------------------------------------------------

def test_regression_loss_hand_computed():
    pred = torch.zeros(1, 3, 2)
    target = torch.tensor([[[0.3, 0.4], [5.0, 5.0], [-0.1, 0.0]]])
    # joint 1 unlabelled: left out; (0.09 + 0.16 + 0.01) / 2
    assert regression_loss(pred, target, torch.tensor([[True, False, True]])).item() == pytest.approx(0.13)
    none = regression_loss(pred.requires_grad_(), target, torch.zeros(1, 3, dtype=torch.bool))
    assert none.item() == 0 and none.requires_grad


def test_deeppose_normalised_targets_are_the_papers_box_normalisation():
    """With padding 1 and a box of the crop's aspect ratio, the crop region is the box: N(y; b) =
    (y - b_c) / (b_w, b_h), so the box corners are -0.5 / +0.5 and its centre 0."""
    model = zoo.build("deeppose_resnet18", padding=1.0)  # 128 x 96 crops: aspect 3:4
    box = torch.tensor([[10.0, 20.0, 40.0, 60.0]])  # 30 x 40
    kp = torch.zeros(1, 17, 3)
    kp[0, :3] = torch.tensor([[10.0, 20.0, 2], [40.0, 60.0, 2], [25.0, 30.0, 1]])
    t = Target(0, Instances((80, 60), boxes=box, labels=torch.zeros(1, dtype=torch.long), keypoints=kp))
    crops = model.crop([torch.rand(3, 80, 60)], [box])
    u = model.normalized(model.targets_to_crops([t], crops, [torch.tensor([0])])[..., :2])
    assert torch.allclose(u[0, :3], torch.tensor([[-0.5, -0.5], [0.5, 0.5], [0.0, -0.25]]), atol=1e-5)
    assert torch.allclose(model.denormalized(u), model.targets_to_crops([t], crops, [torch.tensor([0])])[..., :2],
                          atol=1e-4)


def test_subcrop_geometry_maps_back_exactly():
    """A refined joint c + side psi (crop px) is, in image px, the inverse of the composed image -> sub-image
    affine applied to the sub-image point (psi + 0.5) S; and sub-image pixels read the image at that inverse
    (a coordinate image: bilinear sampling of a linear ramp is exact)."""
    torch.manual_seed(0)
    model = zoo.build("deeppose_resnet18", scale_jitter=0.3, rotation=40.0, rotation_prob=1.0, flip_prob=0.5)
    H, W = 160, 140
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    coord = torch.stack([xs, ys, torch.ones_like(xs)])
    boxes = torch.tensor([[30.0, 20.0, 90.0, 140.0], [50.0, 40.0, 110.0, 120.0], [10.0, 10.0, 60.0, 90.0]])
    crops = model.crop([coord], [boxes], augment=True)
    n = 3
    person = torch.arange(n)
    centers = torch.tensor([[40.0, 50.0], [50.0, 70.0], [60.0, 30.0]])
    side = torch.tensor([30.0, 45.0, 25.0])
    psi = torch.tensor([[0.1, -0.2], [-0.4, 0.3], [0.0, 0.45]])
    S = model.sub_crop_size
    refined = centers + side[:, None] * psi
    a_sub = model.sub_crop_affines(crops, person, centers, side)
    via_sub = apply_affines(invert_affines(a_sub), ((psi + 0.5) * S)[:, None])[:, 0]
    via_crop = apply_affines(invert_affines(crops.affines), refined[:, None])[:, 0]
    assert (via_sub - via_crop).abs().max() < 1e-3
    # the sub-box's centre is the crop point `centers`, its side `side` crop px
    assert torch.allclose(apply_affines(invert_affines(a_sub), torch.full((n, 1, 2), S / 2.0))[:, 0],
                          apply_affines(invert_affines(crops.affines), centers[:, None])[:, 0], atol=1e-3)
    # sampling: sub-image pixel centres read the image at the inverse of the composed affine
    patches = warp_crops(coord, a_sub, (S, S))
    qy, qx = torch.meshgrid(torch.arange(S) + 0.5, torch.arange(S) + 0.5, indexing="ij")
    q = torch.stack([qx, qy], -1).reshape(1, -1, 2).expand(n, -1, -1)
    p = apply_affines(invert_affines(a_sub), q).reshape(n, S, S, 2)
    inside = (p[..., 0] > 0.5) & (p[..., 0] < W - 0.5) & (p[..., 1] > 0.5) & (p[..., 1] < H - 0.5)
    assert inside.sum() > 0.9 * n * S * S
    assert (patches[:, :2].permute(0, 2, 3, 1)[inside] - p[inside]).abs().max() < 2e-3
    # compose_affines / mirror_affines: hand cases
    shift = torch.tensor([[[1.0, 0, 5], [0, 1, -2]]])
    scale = torch.tensor([[[2.0, 0, 0], [0, 3, 1]]])
    assert torch.equal(compose_affines(scale, shift), torch.tensor([[[2.0, 0, 10], [0, 3, -5]]]))
    crop = warp_crops(coord, crops.affines, model.input_size)
    assert torch.allclose(warp_crops(coord, mirror_affines(crops.affines, model.input_size[1]), model.input_size),
                          crop.flip(3), atol=5e-3)  # float32 grids of coordinates up to 140 px
    c, s = box_to_center_size(boxes, 96 / 128)
    rot = torch.tensor([20.0, -5.0, 0.0])
    assert torch.allclose(mirror_affines(crop_affines(c, s, (128, 96), rot), 96),
                          crop_affines(c, s, (128, 96), rot, torch.ones(3, dtype=torch.bool)), atol=1e-5)


class _Fixed(torch.nn.Module):
    """A stage network that returns fixed normalised coordinates ``[K, 2]`` for every input (and records them)."""

    def __init__(self, out):
        super().__init__()
        self.out = out
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x)
        return self.out.expand(x.shape[0], -1, -1).clone()


def test_cascade_with_fixed_outputs_gives_the_hand_computed_joints():
    """Stage 1 puts the left shoulder at (0.25 W, 0.25 H) and the right hip at the centre of a 128 x 96 crop:
    diam = |(24, 32)| = 40 px, sub-images of side 1.0 x 40; stage 2 says psi = (0.1, -0.2) for every joint:
    each joint moves by (4, -8) crop px; in the image that is the inverse affine of the result."""
    model = zoo.build("deeppose_resnet18", stages=2, flip_test=False).eval()
    K = 17
    u = torch.zeros(K, 2)
    u[5] = torch.tensor([-0.25, -0.25])  # left_shoulder
    u[12] = torch.tensor([0.0, 0.0])  # right_hip
    u[0] = torch.tensor([0.3, -0.1])
    model.stage_nets[0] = _Fixed(u[None])
    model.stage_nets[1] = _Fixed(torch.tensor([0.1, -0.2]).expand(1, K, 2))
    images = [torch.rand(3, 90, 70), torch.rand(3, 60, 80)]
    boxes = [torch.tensor([[10.0, 5.0, 50.0, 80.0]]), torch.tensor([[20.0, 10.0, 60.0, 50.0], [0, 0, 30, 40]])]
    crops = model.crop(images, boxes)
    ys = model.cascade(images, crops)
    y1 = (u + 0.5) * torch.tensor([96.0, 128.0])
    assert torch.allclose(ys[0], y1.expand(3, K, 2), atol=1e-4)
    assert torch.allclose(ys[1], (y1 + torch.tensor([4.0, -8.0])).expand(3, K, 2), atol=1e-4)
    # the stage-2 patches are each person's own image's sub-images (multi-image gather in order)
    patches = model.stage_nets[1].inputs[-1]
    assert patches.shape == (3 * K, 3, 64, 64)
    side = torch.full((3 * K,), 40.0)
    person = torch.arange(3).repeat_interleave(K)
    a = model.sub_crop_affines(crops, person, ys[0].reshape(-1, 2), side)
    expect = torch.cat([warp_crops(model.normalize(images[0]), a[:K], (64, 64)),
                        warp_crops(model.normalize(images[1]), a[K:], (64, 64))])
    assert torch.allclose(patches, expect, atol=1e-5)
    res = model.predict(images, boxes=boxes)
    got = torch.cat([r.keypoints[..., :2] for r in res])
    assert torch.allclose(got, apply_affines(invert_affines(crops.affines), ys[1]), atol=1e-3)
    assert torch.equal(torch.cat([r.scores for r in res]), torch.ones(3))  # regression: the box scores (1)
    # the flip test of a mirror-symmetric estimate (left/right swapped, x mirrored) changes nothing
    fi = list(model.keypoint_set.flip_index)
    sym = 0.5 * (u + torch.stack([-u[fi, 0], u[fi, 1]], 1))
    model.stage_nets[0] = _Fixed(sym[None])
    model.stage_nets[1] = _Fixed(torch.zeros(1, K, 2))
    a = model.predict(images, boxes=boxes, flip_test=False)
    b = model.predict(images, boxes=boxes, flip_test=True)
    assert all(torch.allclose(x.keypoints, y.keypoints, atol=1e-3) for x, y in zip(a, b))


@pytest.mark.slow
def test_deeppose_training_steps_lower_every_stage_loss():
    """A fixed problem (simulated sub-images only, frozen displacement statistics, the same random draws
    every step): a few Adam steps lower both stages' losses. The statistics are tracked otherwise."""
    torch.manual_seed(0)
    images, targets = _people(seed=1)
    tracked = _small_deeppose(stages=2).train()
    assert tracked.error_std.shape == (1, 17, 2)
    tracked.training_losses(images, targets)
    assert not torch.allclose(tracked.error_std, torch.full_like(tracked.error_std, 0.25))
    assert "error_std" in tracked.state_dict()
    model = _small_deeppose(stages=2, train_joints=2, simulated_prob=1.0, error_momentum=0.0).train()
    # (Adam at 1e-3 overshoots the regressors: every output moves by ~ 512 features x lr on the first step)
    empty = [Target(0, Instances((60, 50), boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long),
                                 keypoints=torch.zeros(0, 17, 3)))]
    zero = model.training_losses([torch.rand(3, 60, 50)], empty)
    assert set(zero) == {"loss_stage1", "loss_stage2"} and all(v == 0 for v in zero.values())
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    history = []
    for _ in range(6):
        torch.manual_seed(1)
        losses = model.training_losses(images, targets)
        assert all(v > 0 for v in losses.values())
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        history.append({k: v.item() for k, v in losses.items()})
    for k in history[0]:
        assert history[-1][k] < 0.6 * history[0][k], (k, [h[k] for h in history])


def test_deeppose_stage_count_and_errors():
    one = zoo.build("deeppose_resnet18", stages=1)
    assert len(one.stage_nets) == 1 and one.loss_names == ("loss_stage1",)
    images, targets = _people()
    r = one.predict(images, boxes=[t.instances.boxes for t in targets])
    assert [x.keypoints.shape for x in r] == [(2, 17, 3), (1, 17, 3)]
    for bad in ({"stages": 0}, {"sub_crop_size": 32}, {"input_size": (100, 96)}, {"num_classes": 2}):
        with pytest.raises(ConfigError):
            zoo.build("deeppose_resnet18", **bad)
    with pytest.raises(ConfigError):  # regression has no heatmap decoder
        one.predict(images, boxes=[t.instances.boxes for t in targets], decode="dark")
    info = one.info
    assert info.task == "pose" and info.box_input == "person" and info.num_keypoints == 17
    # one person with one labelled joint: a single sub-image in training (BatchNorm sees 2 x 2 values)
    kp = targets[1].instances.keypoints.clone()
    kp[..., 2] = 0
    kp[0, 7, 2] = 2
    single = Target(0, Instances(targets[1].instances.image_size, boxes=targets[1].instances.boxes,
                                 labels=targets[1].instances.labels, keypoints=kp))
    losses = _small_deeppose().train().training_losses(images[1:], [single])
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    empty = one.predict(images, boxes=[torch.zeros(0, 4), targets[1].instances.boxes])
    assert [len(r) for r in empty] == [0, 1] and empty[0].keypoints.shape == (0, 17, 3)
    assert info.options == ("boxes", "box_scores", "flip_test")


# ---- CPM ------------------------------------------------------------------------------------------

def _small_cpm(**kw):
    args = dict(input_size=(64, 48), stage_channels=32, stage_kernel=5, **NO_AUG)
    args.update(kw)
    return zoo.build("cpm_resnet18", **args)


def test_cpm_stages_shapes_and_background_target():
    model = zoo.build("cpm_resnet18").eval()
    with torch.no_grad():
        beliefs = model(torch.rand(2, 3, 128, 96))
    assert len(beliefs) == 3 and all(b.shape == (2, 18, 16, 12) for b in beliefs)
    six = _small_cpm(stages=6, background=False)
    with torch.no_grad():
        assert [b.shape for b in six(torch.rand(1, 3, 64, 48))] == [(1, 17, 8, 6)] * 6
    assert six.loss_names == tuple(f"loss_stage{t}" for t in range(1, 7))
    # one labelled keypoint at the centre of cell (2, 3): its peak 1 there, the background 0 there, 1 far away
    kp = torch.zeros(1, 17, 3)
    kp[0, 4] = torch.tensor([3.5 * 8, 2.5 * 8, 2])
    target, weight = model.targets(kp)
    assert target.shape == (1, 18, 16, 12) and weight[0, 4] == 1 and weight[0, 0] == 0 and weight[0, 17] == 1
    assert target[0, 4, 2, 3] == pytest.approx(1.0) and target[0, 17, 2, 3] == pytest.approx(0.0)
    assert target[0, 17, 15, 0] == pytest.approx(1.0)
    assert target[0, 17, 2, 4] == pytest.approx(1 - math.exp(-0.5), abs=1e-5)  # sigma 1 cell


def test_cpm_intermediate_losses_hand_computed():
    """loss_stage<t> = 0.5 mean((w (b_t - b_*))^2) per stage: beliefs equal to the ideal ones give 0; beliefs
    of 0 give 0.5 mean(w b_*^2); a stage off by a constant c on every weighted map gives 0.5 c^2 (weighted
    share)."""
    model = zoo.build("cpm_resnet18")
    kp = torch.zeros(2, 17, 3)
    kp[:, :, :2] = torch.rand(2, 17, 2) * torch.tensor([96.0, 128.0])
    kp[:, :, 2] = 2
    kp[1, 5:, 2] = 0
    target, weight = model.targets(kp)
    c = 0.3
    beliefs = [target.clone(), torch.zeros_like(target), target + c]
    losses = model.loss(beliefs, kp)
    assert list(losses) == ["loss_stage1", "loss_stage2", "loss_stage3"]
    assert losses["loss_stage1"].item() == 0
    w = weight[..., None, None]
    assert losses["loss_stage2"].item() == pytest.approx(0.5 * (w * target).pow(2).mean().item(), rel=1e-5)
    share = weight.sum().item() / weight.numel()
    assert losses["loss_stage3"].item() == pytest.approx(0.5 * c * c * share, rel=1e-5)


def test_cpm_later_stages_see_far_beliefs_and_every_stage_is_supervised():
    """Stage 2's belief at a cell depends on stage-1 beliefs 6 cells away (three 5 x 5 layers: 13 cells of
    context); each stage's loss reaches its own stage's weights (intermediate supervision)."""
    torch.manual_seed(0)
    model = _small_cpm(input_size=(128, 96), stages=3)
    stage2 = model.stages[1]
    k = model.num_maps
    x = torch.rand(1, 32 + k + 1, 16, 12, requires_grad=True)
    out = stage2(x)
    out[0, 0, 8, 6].backward()
    g = x.grad[0, 32:32 + k].abs().sum(0)
    assert g[8, 0] > 0 and g[2, 6] > 0  # 6 cells away
    images, targets = _people()
    losses = model.train().training_losses(images, targets)
    for t in range(3):
        model.zero_grad()
        losses[f"loss_stage{t + 1}"].backward(retain_graph=True)
        assert model.stages[t].layers[-1].weight.grad.abs().sum() > 0
        for later in range(t + 1, 3):
            assert model.stages[later].layers[-1].weight.grad is None or \
                model.stages[later].layers[-1].weight.grad.abs().sum() == 0


def test_cpm_training_steps_lower_every_stage_loss_and_predict():
    torch.manual_seed(0)
    model = _small_cpm(stages=2).train()
    images, targets = _people(seed=3)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-4)
    history = []
    for _ in range(10):  # measured: stage 1 395e-4 -> 170e-4, stage 2 395e-4 -> 193e-4
        losses = model.training_losses(images, targets)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        history.append({k: v.item() for k, v in losses.items()})
    for k in history[0]:
        assert history[-1][k] < 0.6 * history[0][k], (k, [h[k] for h in history])
    res = model.predict(images, boxes=[t.instances.boxes for t in targets], decode="dark")
    assert [r.keypoints.shape for r in res] == [(2, 17, 3), (1, 17, 3)]
    assert model.info.options == ("boxes", "box_scores", "flip_test", "decode")


# ---- Stacked Hourglass ----------------------------------------------------------------------------

def _small_hourglass(**kw):
    args = dict(input_size=(64, 64), channels=32, depth=3, **NO_AUG)
    args.update(kw)
    return zoo.build("hourglass2_pose", **args)


def test_hourglass_stacks_shapes_and_sizes():
    model = zoo.build("hourglass2_pose").eval()  # the paper's COCO setting: 256 x 192 -> 64 x 48, sigma 2
    assert model.sigma == 2.0 and model.heatmap_size == (64, 48) and model.loss_names == ("loss_stack1", "loss_stack2")
    with torch.no_grad():
        maps = model(torch.rand(1, 3, 256, 192))
    assert [m.shape for m in maps] == [(1, 17, 64, 48)] * 2
    eight = zoo.build("hourglass8_pose", input_size=(64, 64), channels=16, depth=3)
    with torch.no_grad():
        assert len(eight(torch.rand(1, 3, 64, 64))) == 8
    assert len(zoo.build("hourglass8_pose").trunk.hourglasses) == 8
    with pytest.raises(ConfigError):  # 4 downsamplings: multiples of 64
        zoo.build("hourglass2_pose", input_size=(128, 96))
    assert zoo.build("hourglass2_pose", input_size=(128, 96), channels=64, depth=3).heatmap_size == (32, 24)


def test_hourglass_intermediate_supervision_and_feedback():
    """Every stack's heatmaps are supervised; the first stack's heatmaps are fed into the second, so the second
    stack's loss reaches the first head too (and the first stack's loss does not reach the second head)."""
    torch.manual_seed(0)
    model = _small_hourglass().train()
    images, targets = _people()
    losses = model.training_losses(images, targets)
    assert set(losses) == {"loss_stack1", "loss_stack2"} and all(v > 0 for v in losses.values())
    model.zero_grad()
    losses["loss_stack1"].backward(retain_graph=True)
    assert model.heads[0].weight.grad.abs().sum() > 0
    assert model.heads[1].weight.grad is None or model.heads[1].weight.grad.abs().sum() == 0
    model.zero_grad()
    losses["loss_stack2"].backward()
    assert model.heads[1].weight.grad.abs().sum() > 0 and model.heads[0].weight.grad.abs().sum() > 0
    # the same maps decoded through the shared pipeline; the loss is SimpleBaseline's per stack
    kp = model.targets_to_crops(targets, model.crop(images, [t.instances.boxes for t in targets]),
                                [torch.arange(len(t.instances)) for t in targets])
    from sceneparse.ops import keypoint_codec
    target, weight = keypoint_codec.encode(kp, model.heatmap_size, 4, model.sigma)
    stacks = [target.clone(), torch.zeros_like(target)]
    hand = model.loss(stacks, kp)
    assert hand["loss_stack1"].item() == 0
    assert hand["loss_stack2"].item() == pytest.approx(0.5 * (target * weight[..., None, None]).pow(2).mean().item())


def test_hourglass_training_steps_lower_every_stack_loss():
    torch.manual_seed(0)
    model = _small_hourglass(sigma=1.5).train()
    images, targets = _people(seed=3)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    history = []
    for _ in range(10):  # measured: 133e-4 -> 51e-4 at both stacks
        losses = model.training_losses(images, targets)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        history.append({k: v.item() for k, v in losses.items()})
    for k in history[0]:
        assert history[-1][k] < 0.6 * history[0][k], (k, [h[k] for h in history])


# ---- export ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [pytest.param("deeppose_resnet18", marks=pytest.mark.slow), "cpm_resnet18",
                                  "hourglass2_pose"])
def test_export_graph_equals_predict_and_onnx(name, tmp_path):
    pytest.importorskip("onnxruntime")
    from sceneparse.engine.export import export_model

    torch.manual_seed(0)
    model = {"deeppose_resnet18": _small_deeppose, "cpm_resnet18": _small_cpm,
             "hourglass2_pose": _small_hourglass}[name]()
    model.eval()
    image = torch.rand(3, 70, 50)
    if name.startswith("deeppose"):  # non-zero regressors (the zero init puts every joint at the centre)
        for net in model.stage_nets:
            torch.nn.init.normal_(net.fc.weight, std=0.01)
    with torch.no_grad():
        boxes, scores, labels, kp, ks = model.export_graph()(image)
    ref = model.predict([image])[0]
    assert torch.equal(boxes, ref.boxes) and torch.allclose(scores, ref.scores) and torch.equal(labels, ref.labels)
    assert torch.allclose(kp, ref.keypoints, atol=1e-4) and torch.allclose(ks, ref.keypoint_scores)
    report = export_model(model, tmp_path / f"{name}.onnx", imgsz=64)
    assert report.cases and all(c.ok for c in report.cases), report


# ---- predict --det --------------------------------------------------------------------------------

TINY_DET = {"min_size": 64, "max_size": 96, "fpn_channels": 16, "box_representation_size": 32,
            "rpn_pre_nms_top_n": [100, 50], "rpn_post_nms_top_n": [50, 20], "box_detections_per_img": 40}


def _det_and_pose_checkpoints(tmp_path, pose_name="cpm_resnet18", pose_kwargs=None):
    from sceneparse.engine.checkpoint import save_checkpoint

    torch.manual_seed(0)
    det = zoo.build("fasterrcnn_resnet18_fpn", num_classes=2, **TINY_DET).eval()
    det_path = tmp_path / "det.pt"
    save_checkpoint(det_path, det, config={"model": {"name": "fasterrcnn_resnet18_fpn", "kwargs": TINY_DET}},
                    categories=[{"id": 1, "name": "dog"}, {"id": 2, "name": "person"}])
    kw = pose_kwargs or {"input_size": [64, 48], "stage_channels": 16, "stage_kernel": 3, "stages": 2}
    pose = zoo.build(pose_name, **kw).eval()
    pose_path = tmp_path / "pose.pt"
    save_checkpoint(pose_path, pose, config={"model": {"name": pose_name, "kwargs": kw}},
                    categories=[{"id": 1, "name": "person"}])
    return det, det_path, pose, pose_path


def test_predictor_chains_the_detector_with_the_pose_model(tmp_path):
    """Predictor(pose, det=...) = pose.predict(boxes=the detector's person boxes, box_scores=their scores),
    which is also what a pose model built with detector= does itself."""
    from sceneparse.engine.predictor import Predictor

    det, det_path, pose, pose_path = _det_and_pose_checkpoints(tmp_path)
    images = [torch.rand(3, 80, 96), torch.rand(3, 64, 64)]
    dets = det.predict(images, conf=0.0)
    person = [d.labels == 1 for d in dets]
    assert sum(int(p.sum()) for p in person) > 0 and any(bool((d.labels == 0).any()) for d in dets)
    pred = Predictor(pose_path, det=det_path, det_conf=0.0, device="cpu", workers=0)
    got = pred.predict_tensors(images)
    expect = pose.predict(images, boxes=[d.boxes[p] for d, p in zip(dets, person)],
                          box_scores=[d.scores[p] for d, p in zip(dets, person)])
    for g, e, d, p in zip(got, expect, dets, person):
        assert len(g) == int(p.sum()) and torch.allclose(g.boxes, d.boxes[p])
        assert torch.allclose(g.keypoints, e.keypoints, atol=1e-5) and torch.allclose(g.scores, e.scores)
    # the same people as the pose model's own detector= route
    own = zoo.build("cpm_resnet18", input_size=(64, 48), stage_channels=16, stage_kernel=3, stages=2,
                    detector=str(det_path), detector_conf=0.0)
    own.load_state_dict(pose.state_dict())
    for g, o in zip(got, own.predict(images)):
        assert torch.allclose(g.boxes, o.boxes) and torch.allclose(g.keypoints, o.keypoints, atol=1e-5)
        assert torch.allclose(g.scores, o.scores)
    # a model that takes no boxes refuses a detector; a detector without boxes is refused
    with pytest.raises(ConfigError, match="takes none"):
        Predictor(det_path, det=det_path, device="cpu")
    with pytest.raises(ConfigError, match="without a detector"):
        Predictor(pose_path, det_conf=0.5, device="cpu")


def test_cli_predict_with_det_writes_keypoints(tmp_path):
    from PIL import Image

    from sceneparse.cli import main

    _, det_path, _, pose_path = _det_and_pose_checkpoints(tmp_path)
    src = tmp_path / "images"
    src.mkdir()
    g = torch.Generator().manual_seed(1)
    for i in range(2):
        arr = (torch.rand(80, 96, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(src / f"{i + 1:06d}.png")
    out = tmp_path / "out"
    rc = main(["predict", "--model", str(pose_path), "--det", str(det_path), "--det-conf", "0.0", "--source", str(src),
               "--out", str(out), "--device", "cpu", "--workers", "0", "--quiet", "--no-save-images"])
    assert rc == 0
    records = json.loads((out / "predictions.json").read_text())
    assert records and all(len(r["keypoints"]) == 17 * 3 and r["category_id"] == 1 for r in records)
    assert {r["image_id"] for r in records} <= {1, 2}


@pytest.mark.slow
@pytest.mark.parametrize("name,kwargs", [
    ("deeppose_resnet18", "model.kwargs={input_size: [64, 64], sub_crop_size: 40, stages: 2}"),
    ("cpm_resnet18", "model.kwargs={input_size: [64, 48], stage_channels: 16, stage_kernel: 3, stages: 2}"),
    ("hourglass2_pose", "model.kwargs={input_size: [64, 64], channels: 32, depth: 3}")])
def test_cli_train_predict_export_round_trip(name, kwargs, tmp_path):
    """'sceneparse train' (2 iterations on synthetic people) -> 'predict' (keypoints in predictions.json) ->
    'export' (ONNX, verified against eager PyTorch by the exporter)."""
    pytest.importorskip("onnxruntime")
    from sceneparse.cli import main

    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["data", "synth", "--out", str(data), "--images", "6", "--size", "128", "--val-fraction", "0.5",
                 "--workers", "1", "--seed", "3", "--no-progress"]) == 0
    assert main(["train", "--model", name, "--data", str(data), "--epochs", "1", "--batch", "2", "--out", str(run),
                 "--device", "cpu", "--quiet", "train.max_iters_per_epoch=2", "optim.warmup_iters=1",
                 kwargs]) == 0
    ckpt = run / "last.pt"
    assert ckpt.is_file()
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(ckpt), "--source", str(data / "images" / "val"), "--out", str(out),
                 "--device", "cpu", "--workers", "0", "--quiet", "--no-save-images"]) == 0
    records = json.loads((out / "predictions.json").read_text())
    assert records and all(len(r["keypoints"]) == 17 * 3 for r in records)
    assert main(["export", "--model", str(ckpt), "--out", str(tmp_path / "pose.onnx"), "--imgsz", "96"]) == 0
    assert (tmp_path / "pose.onnx").is_file()
