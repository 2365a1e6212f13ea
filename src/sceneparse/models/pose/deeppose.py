"""DeepPose: direct regression of joint coordinates with a cascade of refining regressors (Toshev and
Szegedy, *DeepPose: Human Pose Estimation via Deep Neural Networks*, CVPR 2014).

The pose ``y = (y_1 .. y_K)`` is regressed as normalised coordinates: for a box ``b`` with centre
``b_c`` and size ``(b_w, b_h)``, ``N(y_i; b) = ((x_i - b_cx) / b_w, (y_i - b_cy) / b_h)`` (eq. 1), so a
joint inside the box lies in ``[-0.5, 0.5]^2``. Here ``b`` is the top-down person crop (the padded,
possibly rotated / mirrored box of :mod:`.affine`), so ``N`` is ``q / (W_in, H_in) - 0.5`` of the crop
point ``q``. The loss is the squared L2 distance summed over x and y, averaged over the labelled joints
(the paper sums over joints and examples; joints without a label are left out).

Stage 1 regresses all ``K`` joints from the person crop: ``y^1 = N^-1(psi(N(x; b^0); theta_1); b^0)``.
Stage ``s >= 2`` refines each joint from a higher-resolution sub-image centred at the previous
estimate: ``b_i^{s-1} = (y_i^{s-1}, sigma diam(y^{s-1}), sigma diam(y^{s-1}))`` -- a square of side
``sigma`` times the pose's diameter, ``diam`` being the distance between opposite torso joints (left
shoulder and right hip) -- and ``y_i^s = y_i^{s-1} + N^-1(psi_i(N(x; b_i^{s-1}); theta_s); b_i^{s-1})``
(eq. 5-7), i.e. the network of stage ``s`` (the same type as stage 1, its own weights ``theta_s``, one
network for all joints) regresses the joint's normalised displacement in its sub-image; output ``i`` is
read for joint ``i``. Sub-images are sampled from the full-resolution image (the crop's affine composed
with the sub-box's), not from the stage-1 crop.

Training of stage ``s`` uses the paper's simulated predictions: the sub-image of joint ``i`` is centred at
``y_i + delta`` with ``delta ~ N(mu_i, Sigma_i) diam(y)``, the mean and (diagonal) variance of stage
``s - 1``'s displacements ``(y_i^{s-1} - y_i) / diam(y)`` on the training data (tracked here as running
averages in the buffers ``error_mean`` / ``error_std``, since all stages train together in one loop;
mean and std are bounded by ``sigma / 2`` when drawn, so that early on the joint stays near its
sub-image), and, with probability ``1 - simulated_prob``, at the previous stage's actual (detached)
estimate. To
bound the cost, ``train_joints`` labelled joints per person are refined per stage in training; the
others keep the previous stage's estimate as the input of the next stage.

Networks: a ResNet trunk, global average pooling and a linear layer to ``2 K`` outputs (zero-initialised:
every joint starts at the box centre), in place of the paper's AlexNet-sized network. The paper uses 3
stages; ``stages=1`` is the initial regressor alone. Regression gives no per-joint confidence: keypoint
scores are 1, so a person's score is its box score.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...structures.keypoints import COCO_PERSON, KeypointSet
from ..backbones import ResNetBackbone
from ..zoo import register
from .affine import crop_affines, warp_crops
from .top_down import PersonCrops, TopDownPose

__all__ = ["DeepPose", "RegressionNet", "compose_affines", "deeppose_resnet18", "mirror_affines", "regression_loss"]


def compose_affines(outer: Tensor, inner: Tensor) -> Tensor:
    """The affine maps ``[N, 2, 3]`` of ``p -> outer(inner(p))`` for ``outer``, ``inner`` ``[N, 2, 3]``."""
    a = outer[:, :, :2] @ inner[:, :, :2]
    t = outer[:, :, :2] @ inner[:, :, 2:] + outer[:, :, 2:]
    return torch.cat([a, t], dim=2)


def mirror_affines(affines: Tensor, width: int) -> Tensor:
    """``affines [M, 2, 3]`` (image -> crop of ``width`` px) followed by the crop's left-right mirror
    ``(x, y) -> (width - x, y)``: the matrices of the mirrored crops (``crop.flip(-1)``, exactly, in the
    continuous pixel frame)."""
    out = affines.clone()
    out[:, 0] = -affines[:, 0]
    out[:, 0, 2] = out[:, 0, 2] + width
    return out


def regression_loss(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """DeepPose's L2 loss: ``sum ||pred_i - target_i||^2`` over the ``valid`` joints, divided by their
    number (0 when there is none, still connected to ``pred``). ``pred``, ``target``: ``[..., 2]``
    normalised coordinates; ``valid``: bool ``[...]``."""
    sq = (pred - target).pow(2).sum(-1)
    return torch.where(valid, sq, torch.zeros_like(sq)).sum() / valid.sum().clamp(min=1)


class RegressionNet(nn.Module):
    """One DeepPose regressor: ResNet trunk (stride 32) -> global average pool -> ``Linear(C, 2 K)``
    (zero-initialised) -> ``[M, K, 2]`` normalised coordinates."""

    def __init__(self, depth: int, num_keypoints: int):
        super().__init__()
        self.backbone = ResNetBackbone(depth, norm="bn", trainable_layers=5, returned_stages=(4,))
        self.num_keypoints = int(num_keypoints)
        self.fc = nn.Linear(self.backbone.out_channels[-1], 2 * self.num_keypoints)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        f = self.backbone(x)[-1].mean(dim=(2, 3))
        return self.fc(f).reshape(x.shape[0], self.num_keypoints, 2)


class DeepPose(TopDownPose):
    """DeepPose with its cascade (module docstring).

    Args:
        num_classes: must be 1 (person).
        depth: ResNet depth of every stage's network.
        input_size: ``(H_in, W_in)`` of the stage-1 person crop (multiples of 32).
        stages: cascade stages (1 = the initial regressor only; 3 in the paper).
        sub_crop_size: side in px of the stage ``>= 2`` sub-images fed to the network (> 32).
        sub_crop_scale: ``sigma``, the sub-image side as a multiple of ``diam(y)``.
        torso: names of the two opposite torso joints whose distance is ``diam(y)``; where the keypoint
            set lacks them, the diagonal of the joints' bounding box is used.
        simulated_prob: share of the training sub-images centred at simulated predictions (the rest at
            the previous stage's estimates).
        train_joints: labelled joints per person refined per stage in training.
        error_momentum: update rate of the running displacement statistics.
        Others: :class:`~sceneparse.models.pose.top_down.TopDownPose`.
    """

    def __init__(self, num_classes: int = 1, *, depth: int = 18, input_size: Sequence[int] = (128, 96),
                 stages: int = 3, sub_crop_size: int = 64, sub_crop_scale: float = 1.0,
                 torso: Sequence[str] = ("left_shoulder", "right_hip"), simulated_prob: float = 0.5,
                 train_joints: int = 4, error_momentum: float = 0.1, keypoint_set: KeypointSet = COCO_PERSON,
                 padding: float = 1.25, scale_jitter: float = 0.3, rotation: float = 40.0, rotation_prob: float = 0.6,
                 flip_prob: float = 0.5, flip_test: bool = True, detector: str | None = None,
                 detector_conf: float = 0.3):
        super().__init__(num_classes, input_size=input_size, keypoint_set=keypoint_set, padding=padding,
                         scale_jitter=scale_jitter, rotation=rotation, rotation_prob=rotation_prob,
                         flip_prob=flip_prob, flip_test=flip_test, detector=detector, detector_conf=detector_conf,
                         size_multiple=32)
        if int(stages) < 1:
            raise ConfigError(f"stages must be >= 1, got {stages}")
        if int(sub_crop_size) <= 32:  # the trunk's last map must be at least 2 x 2: BatchNorm in training needs
            # more than one value per channel, also when a batch has a single sub-image
            raise ConfigError(f"sub_crop_size must be more than 32 px, got {sub_crop_size}")
        if not sub_crop_scale > 0:
            raise ConfigError(f"sub_crop_scale must be positive, got {sub_crop_scale}")
        if not 0.0 <= simulated_prob <= 1.0:
            raise ConfigError(f"simulated_prob must lie in [0, 1], got {simulated_prob}")
        if int(train_joints) < 1:
            raise ConfigError(f"train_joints must be >= 1, got {train_joints}")
        K = keypoint_set.num_keypoints
        self.num_stages = int(stages)
        self.sub_crop_size = int(sub_crop_size)
        self.sub_crop_scale = float(sub_crop_scale)
        self.simulated_prob = float(simulated_prob)
        self.train_joints = int(train_joints)
        self.error_momentum = float(error_momentum)
        names = list(keypoint_set.names)
        self.torso = (names.index(torso[0]), names.index(torso[1])) if len(torso) == 2 and all(
            n in names for n in torso) else None
        self.loss_names = tuple(f"loss_stage{s + 1}" for s in range(self.num_stages))
        self.stage_nets = nn.ModuleList(RegressionNet(depth, K) for _ in range(self.num_stages))
        # displacement statistics of stages 1 .. S-1 (in diam units), what stage s+1's simulated predictions draw
        n = max(self.num_stages - 1, 1)
        self.register_buffer("error_mean", torch.zeros(n, K, 2))
        self.register_buffer("error_std", torch.full((n, K, 2), 0.25))

    # ---- frames -----------------------------------------------------------------------------------
    def normalized(self, xy: Tensor) -> Tensor:
        """Crop px ``[..., 2]`` -> ``N(y; b)`` of the crop box: ``xy / (W_in, H_in) - 0.5``."""
        H, W = self.input_size
        return xy / xy.new_tensor([float(W), float(H)]) - 0.5

    def denormalized(self, u: Tensor) -> Tensor:
        """Inverse of :meth:`normalized`: ``N^-1(u; b) = (u + 0.5) (W_in, H_in)`` in crop px."""
        H, W = self.input_size
        return (u + 0.5) * u.new_tensor([float(W), float(H)])

    def diameter(self, xy: Tensor, valid: Tensor | None = None) -> Tensor:
        """``diam(y)`` ``[M]`` of poses ``xy [M, K, 2]`` (crop px): the torso joints' distance, else the
        diagonal of the ``valid`` joints' bounding box; clamped to ``[0.05, 1] H_in`` so that a collapsed
        estimate (an untrained stage 1) still gives a usable sub-image."""
        H = float(self.input_size[0])
        if self.torso is not None:
            d = (xy[:, self.torso[0]] - xy[:, self.torso[1]]).norm(dim=-1)
        else:
            v = torch.ones(xy.shape[:2], dtype=torch.bool, device=xy.device) if valid is None else valid
            big = torch.full_like(xy, float("inf"))
            lo = torch.where(v[..., None], xy, big).amin(dim=1)
            hi = torch.where(v[..., None], xy, -big).amax(dim=1)
            d = torch.where(v.any(1), (hi - lo).norm(dim=-1), torch.zeros_like(lo[:, 0]))
        return d.clamp(min=0.05 * H, max=H)

    def sub_crop_affines(self, crops: PersonCrops, person: Tensor, centers: Tensor, side: Tensor) -> Tensor:
        """Image -> sub-image matrices ``[N, 2, 3]`` of the square sub-boxes of ``side [N]`` crop px centred
        at ``centers [N, 2]`` (crop px) of crops ``person [N]``: the sub-box map (crop px -> ``S x S``)
        composed with the crop's affine, so the sub-image is sampled from the full-resolution image."""
        s = self.sub_crop_size
        sub = crop_affines(centers, torch.stack([side, side], dim=1), (s, s))
        return compose_affines(sub, crops.affines[person])

    def refine(self, stage: int, images: Sequence[Tensor], crops: PersonCrops, person: Tensor, joint: Tensor,
               centers: Tensor, side: Tensor) -> Tensor:
        """Stage ``stage`` (0-based, >= 1) on the sub-images of joints ``joint [N]`` of crops ``person [N]``
        centred at ``centers [N, 2]`` with ``side [N]`` (crop px) -> their normalised displacements
        ``psi_i [N, 2]`` in the sub-box (the new estimate is ``centers + side psi_i``)."""
        s = self.sub_crop_size
        affines = self.sub_crop_affines(crops, person, centers, side)
        if len(images) == 1:  # (also the exported graph's case: no scatter)
            patches = warp_crops(self.normalize(images[0]), affines, (s, s))
        else:
            image_of = crops.image_index[person]
            patches = affines.new_zeros((person.shape[0], 3, s, s))
            for i, im in enumerate(images):
                sel = torch.where(image_of == i)[0]
                if sel.numel():
                    patches[sel] = warp_crops(self.normalize(im), affines[sel], (s, s))
        out = self.stage_nets[stage](patches)
        return out[torch.arange(person.shape[0], device=out.device), joint]

    # ---- network ----------------------------------------------------------------------------------
    def cascade(self, images: Sequence[Tensor], crops: PersonCrops) -> list[Tensor]:
        """The estimates ``[M, K, 2]`` (crop px) of every stage, first to last."""
        y = self.denormalized(self.stage_nets[0](crops.tensor))
        out = [y]
        M, K = y.shape[:2]
        person = torch.arange(M, device=y.device).repeat_interleave(K)
        joint = torch.arange(K, device=y.device).repeat(M)
        for s in range(1, self.num_stages):
            side = (self.sub_crop_scale * self.diameter(y)).repeat_interleave(K)
            centers = y.reshape(M * K, 2)
            psi = self.refine(s, images, crops, person, joint, centers, side)
            y = (centers + side[:, None] * psi).reshape(M, K, 2)
            out.append(y)
        return out

    def forward(self, crops: Tensor) -> Tensor:
        """Stage 1 alone: normalised crops ``[M, 3, H_in, W_in]`` -> ``N(y; b)`` ``[M, K, 2]`` (the later
        stages need the image: :meth:`cascade`)."""
        return self.stage_nets[0](crops)

    def estimate(self, images: Sequence[Tensor], crops: PersonCrops, flip_test: bool,
                 decode: str | None = None) -> tuple[Tensor, Tensor]:
        """The last stage's joints (crop px) and scores of 1; with ``flip_test`` averaged with the cascade
        run on the mirrored crops (mirrored back, left/right swapped)."""
        y = self.cascade(images, crops)[-1]
        if flip_test and len(crops):
            W = self.input_size[1]
            mirrored = PersonCrops(crops.tensor.flip(3), mirror_affines(crops.affines, W), crops.image_index,
                                   crops.boxes, crops.box_scores, crops.image_sizes, crops.flipped)
            yf = self.cascade(images, mirrored)[-1]
            yf = torch.stack([W - yf[..., 0], yf[..., 1]], dim=-1)[:, list(self.keypoint_set.flip_index)]
            y = 0.5 * (y + yf)
        return y, torch.ones_like(y[..., 0])

    # ---- training ---------------------------------------------------------------------------------
    @torch.no_grad()
    def _update_errors(self, stage: int, err: Tensor, valid: Tensor) -> None:
        """Running mean / std (per joint, x and y) of displacements ``err [N, K, 2]`` (diam units) of the
        0-based ``stage`` over the ``valid [N, K]`` joints."""
        n = valid.sum(0).float()  # [K]
        has = n > 0
        if not bool(has.any()):
            return
        w = valid[..., None].float()
        mean = (err * w).sum(0) / n.clamp(min=1)[:, None]
        var = ((err - mean) ** 2 * w).sum(0) / n.clamp(min=1)[:, None]
        m = self.error_momentum
        upd_mean = (1 - m) * self.error_mean[stage] + m * mean
        upd_std = (1 - m) * self.error_std[stage] + m * var.sqrt()
        self.error_mean[stage] = torch.where(has[:, None], upd_mean, self.error_mean[stage])
        self.error_std[stage] = torch.where(has[:, None], upd_std, self.error_std[stage])

    def crop_losses(self, images: Sequence[Tensor], crops: PersonCrops, keypoints: Tensor) -> dict[str, Tensor]:
        """Stage 1's L2 loss on all labelled joints; stage ``s >= 2``'s on ``train_joints`` labelled joints
        per person, with sub-images at simulated predictions or at the previous estimates (module
        docstring)."""
        gt, valid = keypoints[..., :2], keypoints[..., 2] > 0
        u = self.stage_nets[0](crops.tensor)
        losses = {"loss_stage1": regression_loss(u, self.normalized(gt), valid)}
        y = self.denormalized(u).detach()
        M, K = valid.shape
        dev = gt.device
        if self.torso is not None:
            torso_ok = valid[:, self.torso[0]] & valid[:, self.torso[1]]
            diam = torch.where(torso_ok, self.diameter(gt), self.diameter(y))
        else:
            diam = self.diameter(gt, valid)
        fresh = valid  # joints whose entry of y is the previous stage's own estimate
        for s in range(1, self.num_stages):
            self._update_errors(s - 1, (y - gt) / diam[:, None, None], fresh)
            # train_joints labelled joints per person, drawn at random
            draw = torch.where(valid, torch.rand(M, K, device=dev), torch.full((M, K), -1.0, device=dev))
            top = draw.topk(min(self.train_joints, K), dim=1)
            keep = top.values >= 0
            person = torch.arange(M, device=dev)[:, None].expand_as(top.indices)[keep]
            joint = top.indices[keep]
            side = self.sub_crop_scale * diam[person]
            truth = gt[person, joint]
            # bounded so that the joint stays near its sub-image while the previous stage is still poor
            bound = 0.5 * self.sub_crop_scale
            mean = self.error_mean[s - 1, joint].clamp(min=-bound, max=bound)
            std = self.error_std[s - 1, joint].clamp(max=bound)
            delta = (mean + std * torch.randn_like(truth)) * diam[person, None]
            simulated = torch.rand(person.shape[0], device=dev) < self.simulated_prob
            centers = torch.where(simulated[:, None], truth + delta, y[person, joint])
            psi = self.refine(s, images, crops, person, joint, centers, side)
            target = (truth - centers) / side[:, None]
            losses[f"loss_stage{s + 1}"] = regression_loss(psi, target, torch.ones_like(simulated))
            refined = (centers + side[:, None] * psi).detach()
            # the next stage starts from this stage's estimates where they are real (not simulated)
            real = ~simulated
            y = y.clone()
            y[person[real], joint[real]] = refined[real]
            fresh = torch.zeros_like(valid)
            fresh[person[real], joint[real]] = True
        return losses


@register("deeppose_resnet18")
def deeppose_resnet18(*, num_classes: int = 1, input_size: Sequence[int] = (128, 96), stages: int = 3,
                      **kwargs) -> DeepPose:
    """DeepPose on ResNet-18 regressors: ``128 x 96`` person crops, 3 stages (the paper's count), ``64 x 64``
    sub-images of side ``1.0 diam(y)`` for stages 2 and 3."""
    return DeepPose(num_classes, depth=18, input_size=input_size, stages=stages, **kwargs)
