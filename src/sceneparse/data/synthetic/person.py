"""``person``: an articulated stick figure with body thickness whose 17 COCO keypoints come from
its skeleton.

Pose model (screen frame, y down, all lengths in units of the person's height ``H``): the torso
(neck to mid-hip, 0.30 H) leans by a small angle; shoulders and hips sit on the perpendicular
(widths shrink with the body's turn); each arm has an abduction angle (hanging to raised) and an
elbow bend, each leg a hip angle and a knee bend; the head (radius 0.07 H) sits on a short neck and
tilts; eyes, nose and ears lie on the head at their azimuths rotated by the head's yaw (|yaw| <=
0.5 rad, so every face keypoint faces the camera and self-occlusion never arises). The figure faces
the camera, so the person's *left* side is on the *right* of the image, as in COCO.

Drawing: legs (trousers colour), torso polygon and upper arms (shirt fill), forearms, neck and head
(skin). Every keypoint's pixel is guaranteed to be painted by the figure itself, which is what the
visibility rule of :mod:`.scene` relies on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...structures.keypoints import COCO_KEYPOINT_NAMES
from .raster import Sprite, crop_box, draw_disc, draw_segment, fill_polygons
from .textures import FILL_KINDS, fill, hsv_color, random_color, smooth_noise

K = len(COCO_KEYPOINT_NAMES)
(NOSE, L_EYE, R_EYE, L_EAR, R_EAR, L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST,
 L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE) = range(K)


@dataclass
class PersonSpec:
    """One person.

    Attributes:
        keypoints: ``float64 [17, 2]`` (x, y) of COCO's keypoints, continuous image px.
        head_center: ``(x, y)`` of the head disc; head_radius: its radius in px.
        limb_width: thickness of limbs in px.
        shirt_fill: fill style of the torso; shirt / shirt2 / trousers / skin: RGB 0..255.
    """

    keypoints: np.ndarray
    head_center: tuple[float, float]
    head_radius: float
    limb_width: float
    shirt_fill: str = "solid"
    shirt: tuple[float, float, float] = (200.0, 40.0, 40.0)
    shirt2: tuple[float, float, float] = (240.0, 240.0, 240.0)
    trousers: tuple[float, float, float] = (40.0, 40.0, 120.0)
    skin: tuple[float, float, float] = (230.0, 180.0, 140.0)

    def __post_init__(self) -> None:
        self.keypoints = np.asarray(self.keypoints, dtype=np.float64).reshape(K, 2)

    @property
    def height(self) -> float:
        """Top of the head to the lower ankle, px."""
        return float(self.keypoints[[L_ANKLE, R_ANKLE], 1].max() - (self.head_center[1] - self.head_radius))


def _rot(v: np.ndarray, a: float) -> np.ndarray:
    """Rotate 2-vector ``v`` by ``a`` radians (clockwise on screen: y points down)."""
    c, s = math.cos(a), math.sin(a)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def pose_keypoints(height: float, *, lean: float = 0.0, body_turn: float = 0.0, width: float = 1.0,
                   arm_abduction: tuple[float, float] = (0.2, 0.2), elbow: tuple[float, float] = (0.2, 0.2),
                   hip: tuple[float, float] = (0.1, 0.1), knee: tuple[float, float] = (0.0, 0.0),
                   head_tilt: float = 0.0, head_yaw: float = 0.0) -> tuple[np.ndarray, np.ndarray, float]:
    """Forward kinematics of the stick figure, origin at the mid-hip.

    Angles in radians; pairs are ``(left, right)`` (the person's sides). ``arm_abduction`` 0 hangs
    the arm down, pi/2 holds it sideways; ``elbow`` / ``knee`` bend the lower limb (sign = direction);
    ``hip`` spreads the leg outwards. Returns ``(keypoints [17, 2], head_center [2], head_radius)``.
    """
    h = float(height)
    up = np.array([math.sin(lean), -math.cos(lean)])
    right = np.array([math.cos(lean), math.sin(lean)])
    down = -up
    shoulder_hw = 0.11 * h * width * math.cos(body_turn)
    hip_hw = 0.065 * h * width * math.cos(body_turn)
    kp = np.zeros((K, 2))
    neck = up * 0.30 * h
    # the person's left is on the image's right (figure faces the camera): side sign +1 for left
    for side, (sh, el, wr, hp, kn, an) in ((+1, (L_SHOULDER, L_ELBOW, L_WRIST, L_HIP, L_KNEE, L_ANKLE)),
                                           (-1, (R_SHOULDER, R_ELBOW, R_WRIST, R_HIP, R_KNEE, R_ANKLE))):
        i = 0 if side > 0 else 1
        kp[sh] = neck + side * shoulder_hw * right
        upper = _rot(down, -side * arm_abduction[i])
        kp[el] = kp[sh] + 0.17 * h * upper
        kp[wr] = kp[el] + 0.15 * h * _rot(upper, -side * elbow[i])
        kp[hp] = side * hip_hw * right
        thigh = _rot(down, -side * hip[i])
        kp[kn] = kp[hp] + 0.24 * h * thigh
        kp[an] = kp[kn] + 0.23 * h * _rot(thigh, -side * knee[i])
    head_up = _rot(up, head_tilt)
    head_right = _rot(right, head_tilt)
    r = 0.07 * h
    hc = neck + head_up * (0.04 * h + r)
    # face features at azimuth alpha (0 = facing the camera, +pi/2 = the person's left) turned by yaw
    for idx, alpha, lift, depth in ((NOSE, 0.0, -0.05, 0.9), (L_EYE, 0.45, 0.2, 0.8), (R_EYE, -0.45, 0.2, 0.8),
                                    (L_EAR, math.pi / 2, 0.05, 0.8), (R_EAR, -math.pi / 2, 0.05, 0.8)):
        kp[idx] = hc + head_right * (depth * r * math.sin(alpha + head_yaw)) + head_up * (lift * r)
    return kp, hc, r


def sample_person(rng: np.random.Generator, foot: tuple[float, float], height: float) -> PersonSpec:
    """A random person standing with its lower ankle at ``foot = (x, y)`` (continuous px)."""
    arm = rng.uniform(-0.15, 2.8, size=2)
    kp, hc, r = pose_keypoints(
        height,
        lean=rng.normal(0.0, 0.12),
        body_turn=rng.uniform(-0.8, 0.8),
        width=rng.uniform(0.85, 1.2),
        arm_abduction=(float(arm[0]), float(arm[1])),
        elbow=tuple(float(v) for v in rng.uniform(-0.4, 2.2, size=2)),
        hip=tuple(float(v) for v in (rng.uniform(-0.1, 0.45, size=2) if rng.random() < 0.85 else rng.uniform(-0.1, 1.3, size=2))),
        knee=tuple(float(v) for v in rng.uniform(-0.3, 1.0, size=2) * (rng.random() < 0.6)),
        head_tilt=rng.normal(0.0, 0.15),
        head_yaw=rng.uniform(-0.5, 0.5),
    )
    ankles = kp[[L_ANKLE, R_ANKLE]]
    shift = np.array([foot[0] - ankles[:, 0].mean(), foot[1] - ankles[:, 1].max()])
    kp, hc = kp + shift, hc + shift
    skin = hsv_color(rng, (0.02, 0.1), (0.2, 0.6), (0.35, 0.95))
    shirt = random_color(rng)
    return PersonSpec(keypoints=kp, head_center=(float(hc[0]), float(hc[1])), head_radius=float(r),
                      limb_width=float(max(1.0, 0.05 * height * rng.uniform(0.8, 1.3))),
                      shirt_fill=str(rng.choice(FILL_KINDS)), shirt=tuple(float(v) for v in shirt),
                      shirt2=tuple(float(v) for v in random_color(rng)),
                      trousers=tuple(float(v) for v in hsv_color(rng, (0, 1), (0.1, 0.8), (0.12, 0.6))),
                      skin=tuple(float(v) for v in skin))


_LEGS, _SHIRT, _SKIN = 1, 2, 3


def keypoint_pixels(keypoints: np.ndarray) -> np.ndarray:
    """``int64 [K, 2]`` (column, row) of the pixel each keypoint lies in, as the dataset files give it:
    the coordinates rounded to 0.01 px (what the JSON holds), then floored. A point at x = 9.996 lies in
    column 10, not 9."""
    return np.floor(np.round(np.asarray(keypoints, dtype=np.float64), 2)).astype(np.int64)


def render_person(rng: np.random.Generator, spec: PersonSpec, image_size: tuple[int, int]) -> Sprite | None:
    """Rasterise a person into a crop; the sprite carries the keypoints (``None`` if fully outside)."""
    kp, t, r = spec.keypoints, spec.limb_width, spec.head_radius
    hc = np.asarray(spec.head_center, dtype=np.float64)
    box = crop_box(np.vstack([kp, hc[None]]), max(t, r) + 1.0, image_size)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    parts = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    for a, b in ((L_HIP, L_KNEE), (L_KNEE, L_ANKLE), (R_HIP, R_KNEE), (R_KNEE, R_ANKLE), (L_HIP, R_HIP)):
        draw_segment(parts, kp[a], kp[b], t, x0, y0, _LEGS)
    fill_polygons(parts, [kp[[L_SHOULDER, R_SHOULDER, R_HIP, L_HIP]]], x0, y0, _SHIRT)
    for a, b in ((L_SHOULDER, R_SHOULDER), (L_SHOULDER, L_HIP), (R_SHOULDER, R_HIP),
                 (L_SHOULDER, L_ELBOW), (R_SHOULDER, R_ELBOW)):
        draw_segment(parts, kp[a], kp[b], t, x0, y0, _SHIRT)
    for a, b in ((L_ELBOW, L_WRIST), (R_ELBOW, R_WRIST)):
        draw_segment(parts, kp[a], kp[b], t * 0.85, x0, y0, _SKIN)
    neck = 0.5 * (kp[L_SHOULDER] + kp[R_SHOULDER])
    draw_segment(parts, neck, hc, t * 0.9, x0, y0, _SKIN)
    draw_disc(parts, hc, r, x0, y0, _SKIN)
    # the keypoint pixels belong to the figure (tiny people: a head radius of 1 px may miss an ear)
    ij = keypoint_pixels(kp) - (x0, y0)  # the pixel the written (rounded) point lies in
    inside = (ij[:, 0] >= 0) & (ij[:, 0] < x1 - x0) & (ij[:, 1] >= 0) & (ij[:, 1] < y1 - y0)
    cols, rows = ij[inside, 0], ij[inside, 1]
    parts[rows, cols] = np.where(parts[rows, cols] == 0, _SKIN, parts[rows, cols])
    if not parts.any():
        return None
    h, w = parts.shape
    palette = np.array([(0, 0, 0), spec.trousers, (0, 0, 0), spec.skin], dtype=np.float32)
    rgb = palette[parts] + smooth_noise(rng, h, w, max(2.0, t))[:, :, None] * 5
    shirt = fill(rng, h, w, spec.shirt_fill, np.asarray(spec.shirt, np.float32), np.asarray(spec.shirt2, np.float32))
    rgb = np.where((parts == _SHIRT)[:, :, None], shirt, rgb)
    return Sprite(x0, y0, parts > 0, rgb, kp.astype(np.float32))
