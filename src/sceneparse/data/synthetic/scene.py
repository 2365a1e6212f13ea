"""Scenes: sample a layout (stuff bands, things, maybe a crowd), render it with occlusion, and
derive every annotation (instance masks, boxes, keypoints with visibility, semantic and panoptic
maps) from the same pixel-ownership map, so they agree exactly with the image.

Occlusion. Things are drawn in layout order; a later thing paints over earlier ones. ``owner``
(``int32 [H, W]``) holds, per pixel, 1 + the index of the last thing painted there (0 = stuff). An
instance's mask is its *visible* pixels (``owner == its index``). Things left with fewer than
``cfg.min_visible_area`` visible pixels are removed from the scene altogether (from the image too:
the pixels show what lies below), all such things at once, after which the survivors' masks only
grew, so they all still pass.

Keypoint visibility rule (COCO: v = 0 unlabeled, 1 labeled but occluded, 2 visible). For a person
keypoint at continuous position ``(x, y)`` and its pixel ``(floor(y), floor(x))``:

* ``v = 0`` when the point lies outside the image (``x`` not in ``[0, W)`` or ``y`` not in ``[0, H)``);
  its coordinates are then written as ``(0, 0)``, as COCO does;
* ``v = 1`` when that pixel belongs to a thing drawn later (an occluder, crowd regions included);
* ``v = 2`` otherwise (the pixel shows the person itself).

The figure paints every keypoint's own pixel (see :mod:`.person`) and faces the camera, so
self-occlusion does not arise and the rule needs no depth. Crowd regions carry no keypoints.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ...conventions import CategoryMap
from ...structures.instances import Instances
from ...structures.segmaps import PanopticMap, SegmentInfo, SemanticMap
from ...structures.target import Target
from .config import SyntheticConfig
from .person import K, PersonSpec, keypoint_pixels, render_person, sample_person
from .raster import Sprite
from .shapes import ShapeSpec, render_shape, sample_shape
from .stuff import StuffLayout, render_stuff, sample_stuff_layout

VOID = 255  # semantic label of unlabelled pixels (never produced: stuff covers the background)


@dataclass
class CrowdSpec:
    """A crowd: ``members`` (all of class ``name``) drawn together and annotated as one region."""

    name: str
    members: list[ShapeSpec | PersonSpec]


@dataclass
class SceneLayout:
    """What to draw: the stuff background and the things in drawing order (later ones occlude)."""

    stuff: StuffLayout
    things: list[ShapeSpec | PersonSpec | CrowdSpec] = field(default_factory=list)


@dataclass
class SceneInstance:
    """One annotated thing (or crowd region) of a :class:`Scene`.

    Attributes:
        label: contiguous label (``cfg.category_map``); category_id: the dataset id.
        mask: ``bool [H, W]`` visible pixels.
        bbox: ``float32 [4]`` XYXY absolute px, tight around ``mask`` (pixel-edge convention).
        iscrowd: a crowd region (several things of one class, one annotation).
        keypoints: ``float32 [17, 3]`` (x, y, v) for a non-crowd person, else ``None``.
        segment_id: its id in :attr:`Scene.panoptic`.
        layout_index: its position in ``SceneLayout.things`` (drawing order).
    """

    label: int
    category_id: int
    mask: np.ndarray
    bbox: np.ndarray
    iscrowd: bool
    keypoints: np.ndarray | None
    segment_id: int
    layout_index: int

    @property
    def area(self) -> int:
        return int(self.mask.sum())


@dataclass
class Scene:
    """A rendered scene and all its annotations (in memory).

    Attributes:
        image: ``uint8 [H, W, 3]`` RGB.
        instances: things and crowd regions, in drawing order.
        stuff: ``uint8 [H, W]`` contiguous stuff label of the background at each pixel (under the things).
        semantic: ``uint8 [H, W]`` contiguous label of what is visible (things and stuff); 255 = void.
        panoptic: ``int32 [H, W]`` segment id per pixel (0 = void); ``segments`` describes each id.
        segments: thing segments (in instance order), then one segment per visible stuff class.
        categories: the label space (``cfg.category_map``).
    """

    image: np.ndarray
    instances: list[SceneInstance]
    stuff: np.ndarray
    semantic: np.ndarray
    panoptic: np.ndarray
    segments: list[SegmentInfo]
    categories: CategoryMap

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])

    def to_target(self, image_id: int = 0, file_name: str = "") -> Target:
        """The scene as a :class:`~sceneparse.structures.Target` (masks, boxes, labels, keypoints
        ``[N, 17, 3]`` (zeros for non-persons), iscrowd, semantic and panoptic maps)."""
        h, w = self.image_size
        n = len(self.instances)
        kps = np.zeros((n, K, 3), np.float32)
        for i, inst in enumerate(self.instances):
            if inst.keypoints is not None:
                kps[i] = inst.keypoints
        inst = Instances(
            image_size=(h, w),
            boxes=torch.from_numpy(np.stack([i.bbox for i in self.instances]) if n else np.zeros((0, 4), np.float32)),
            labels=torch.tensor([i.label for i in self.instances], dtype=torch.int64),
            masks=torch.from_numpy(np.stack([i.mask for i in self.instances]) if n else np.zeros((0, h, w), bool)),
            keypoints=torch.from_numpy(kps),
        )
        return Target(image_id=image_id, instances=inst,
                      iscrowd=torch.tensor([i.iscrowd for i in self.instances], dtype=torch.bool),
                      semantic=SemanticMap(torch.from_numpy(self.semantic.astype(np.int64)), ignore_index=VOID),
                      panoptic=PanopticMap(torch.from_numpy(self.panoptic.astype(np.int64)), list(self.segments)),
                      file_name=file_name)


_NOISE_BANK: np.ndarray | None = None
_NOISE_BANK_SIZE = 1 << 22


def sensor_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Unit-variance Gaussian noise ``float32`` of ``shape``. For speed, a window at a random offset
    (drawn from ``rng``) into a fixed bank of 4M samples (same seed in every process), so images stay
    reproducible; shapes larger than the bank draw fresh samples."""
    global _NOISE_BANK
    n = int(np.prod(shape))
    if n > _NOISE_BANK_SIZE // 2:
        return rng.standard_normal(shape, dtype=np.float32)
    if _NOISE_BANK is None:
        _NOISE_BANK = np.random.default_rng(0x5CE4E).standard_normal(_NOISE_BANK_SIZE, dtype=np.float32)
    start = int(rng.integers(0, _NOISE_BANK_SIZE - n + 1))
    return _NOISE_BANK[start:start + n].reshape(shape)


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of image ``index`` of a dataset with ``seed``: independent of every other image,
    so workers can draw images in any order and produce the same bytes."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


# ----------------------------------------------------------------------------------------------
# sampling
# ----------------------------------------------------------------------------------------------

def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _horizon(stuff: StuffLayout, height: int) -> float:
    """Mean y of the sky's lower boundary (0 when there is no sky)."""
    if stuff.classes and stuff.classes[0] == "sky" and stuff.boundaries.shape[0] > 0:
        return float(np.clip(stuff.boundaries[0].mean(), 0, height))
    return 0.0 if "sky" not in stuff.classes else float(height)


def _sample_thing(rng, name: str, cfg: SyntheticConfig, horizon: float, size_frac: tuple[float, float],
                  center: tuple[float, float] | None = None) -> ShapeSpec | PersonSpec:
    h, w = cfg.image_size
    if name == "person":
        height = _log_uniform(rng, *size_frac) * h
        if center is None:
            top = min(horizon + 0.02 * h, 0.9 * h)
            center = (rng.uniform(-0.05, 1.05) * w, rng.uniform(top, 1.12 * h))
        return sample_person(rng, center, height)
    size = _log_uniform(rng, *size_frac) * min(h, w)
    if center is None:
        center = (rng.uniform(-0.05, 1.05) * w, rng.uniform(-0.05, 1.05) * h)
    return sample_shape(rng, name, center, size)


def _sample_crowd(rng, name: str, cfg: SyntheticConfig, horizon: float) -> CrowdSpec:
    """A tight cluster of small things of one class (persons stand in a loose row)."""
    h, w = cfg.image_size
    m = int(rng.integers(cfg.crowd_members[0], cfg.crowd_members[1] + 1))
    unit = _log_uniform(rng, *cfg.crowd_size_frac) * min(h, w)
    spread = 0.55 * unit * math.sqrt(m)
    members: list[ShapeSpec | PersonSpec] = []
    if name == "person":
        cx = rng.uniform(0.15, 0.85) * w
        cy = rng.uniform(max(horizon, 0.2 * h), 0.95 * h)
        for _ in range(m):
            foot = (cx + rng.uniform(-1.6, 1.6) * spread, cy + rng.uniform(-0.25, 0.25) * spread)
            members.append(sample_person(rng, foot, unit * 2.2 * rng.uniform(0.85, 1.15)))
        members.sort(key=lambda p: p.keypoints[:, 1].max())  # nearer (lower) people occlude farther ones
    else:
        cx, cy = rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h
        for _ in range(m):
            c = (cx + rng.normal(0, 0.6) * spread, cy + rng.normal(0, 0.6) * spread)
            members.append(sample_shape(rng, name, c, unit * rng.uniform(0.8, 1.25)))
    return CrowdSpec(name, members)


def sample_layout(rng: np.random.Generator, cfg: SyntheticConfig) -> SceneLayout:
    """Random layout: stuff bands; then (unless the image is empty, probability ``cfg.empty_prob``)
    ``U{min_objects..max_objects}`` things of uniformly chosen classes, persons standing below the
    horizon, shapes anywhere (partly outside the image too), and with probability ``cfg.crowd_prob``
    one crowd inserted at a random depth."""
    h, w = cfg.image_size
    stuff = sample_stuff_layout(rng, h, w, cfg.stuff_classes)
    if not cfg.thing_classes or rng.random() < cfg.empty_prob:
        return SceneLayout(stuff, [])
    horizon = _horizon(stuff, h)
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    things: list[ShapeSpec | PersonSpec | CrowdSpec] = []
    for _ in range(n):
        name = str(rng.choice(cfg.thing_classes))
        frac = cfg.person_height_frac if name == "person" else cfg.size_frac
        things.append(_sample_thing(rng, name, cfg, horizon, frac))
    if rng.random() < cfg.crowd_prob:
        shapes = [c for c in cfg.thing_classes if c != "person"]
        if "person" in cfg.thing_classes and (not shapes or rng.random() < cfg.crowd_person_prob):
            name = "person"
        else:
            name = str(rng.choice(shapes))
        things.insert(int(rng.integers(0, len(things) + 1)), _sample_crowd(rng, name, cfg, horizon))
    return SceneLayout(stuff, things)


# ----------------------------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------------------------

def _thing_name(spec: ShapeSpec | PersonSpec) -> str:
    return "person" if isinstance(spec, PersonSpec) else spec.name


def _render_thing(rng, spec, image_size) -> Sprite | None:
    if isinstance(spec, PersonSpec):
        return render_person(rng, spec, image_size)
    return render_shape(rng, spec, image_size)


def _render_crowd(rng, crowd: CrowdSpec, image_size) -> Sprite | None:
    """Members drawn in order into one sprite (their union is the crowd region); no keypoints."""
    parts = [s for s in (_render_thing(rng, m, image_size) for m in crowd.members) if s is not None]
    if not parts:
        return None
    x0 = min(p.x0 for p in parts)
    y0 = min(p.y0 for p in parts)
    x1 = max(p.box[2] for p in parts)
    y1 = max(p.box[3] for p in parts)
    mask = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    rgb = np.zeros((y1 - y0, x1 - x0, 3), dtype=np.float32)
    for p in parts:
        sl = (slice(p.y0 - y0, p.box[3] - y0), slice(p.x0 - x0, p.box[2] - x0))
        mask[sl] |= p.mask
        rgb[sl][p.mask] = p.rgb[p.mask]
    return Sprite(x0, y0, mask, rgb)


def _paint_owner(owner: np.ndarray, sprites: list[Sprite | None], keep: np.ndarray) -> None:
    owner.fill(0)
    for k, s in enumerate(sprites):
        if s is not None and keep[k]:
            x0, y0, x1, y1 = s.box
            owner[y0:y1, x0:x1][s.mask] = k + 1


def _tight_box(mask: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """``float32 [4]`` XYXY pixel-edge box of a non-empty crop mask placed at ``(x0, y0)``."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1], dtype=np.float32)


def keypoint_visibility(keypoints: np.ndarray, owner: np.ndarray, own_id: int) -> np.ndarray:
    """The rule of this module, vectorised: ``float32 [K, 3]`` (x, y, v) from ``keypoints [K, 2]``,
    the ownership map and the person's owner value. Coordinates are rounded to 0.01 px first (as
    written to JSON, so a point never rounds across the image border); v = 0 points get (0, 0)."""
    h, w = owner.shape
    kp = np.round(np.asarray(keypoints, dtype=np.float64), 2)  # what the JSON files hold
    x, y = kp[:, 0], kp[:, 1]
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    pix = keypoint_pixels(kp)  # the pixel render_person paints for each point
    cols, rows = np.clip(pix[:, 0], 0, w - 1), np.clip(pix[:, 1], 0, h - 1)
    at = owner[rows, cols]
    if np.any(inside & (at < own_id)):
        raise RuntimeError("internal error: a keypoint pixel is not painted by its own person")  # see render_person
    v = np.where(inside, np.where(at == own_id, 2, 1), 0).astype(np.float32)
    out = np.zeros((keypoints.shape[0], 3), np.float32)
    out[:, 0] = np.where(v > 0, x, 0)
    out[:, 1] = np.where(v > 0, y, 0)
    out[:, 2] = v
    return out


def render_scene(rng: np.random.Generator, layout: SceneLayout, cfg: SyntheticConfig) -> Scene:
    """Render ``layout`` and derive its annotations (see the module docstring for occlusion and the
    keypoint visibility rule). Thing classes must be among ``cfg.thing_classes`` and stuff classes
    among ``cfg.stuff_classes``."""
    h, w = cfg.image_size
    cmap = cfg.category_map
    names = [t.name if isinstance(t, CrowdSpec) else _thing_name(t) for t in layout.things]
    for n in list(names) + list(layout.stuff.classes):
        if n not in cmap.names:
            raise ValueError(f"render_scene: class {n!r} is not selected in the config (classes: {cmap.names})")
    if layout.stuff.boundaries.shape[1] != w:
        raise ValueError(f"render_scene: stuff boundaries have {layout.stuff.boundaries.shape[1]} columns, image width is {w}")

    # background
    stuff_img, band = render_stuff(rng, layout.stuff, h, w)
    band_to_label = np.array([cmap.names.index(c) for c in layout.stuff.classes], dtype=np.uint8)
    stuff_labels = band_to_label[band]

    # things -> sprites, then ownership with small leftovers removed
    sprites = [(_render_crowd(rng, t, (h, w)) if isinstance(t, CrowdSpec) else _render_thing(rng, t, (h, w)))
               for t in layout.things]
    n = len(sprites)
    keep = np.array([s is not None for s in sprites], dtype=bool)
    owner = np.zeros((h, w), dtype=np.int32)
    _paint_owner(owner, sprites, keep)
    visible = np.bincount(owner.ravel(), minlength=n + 1)[1:]
    small = keep & (visible < cfg.min_visible_area)
    if small.any():
        keep &= ~small
        _paint_owner(owner, sprites, keep)

    # image: stuff, then the visible part of each kept thing, then sensor noise
    image = stuff_img
    for k, s in enumerate(sprites):
        if keep[k]:
            x0, y0, x1, y1 = s.box
            np.copyto(image[y0:y1, x0:x1], s.rgb, where=(owner[y0:y1, x0:x1] == k + 1)[:, :, None])
    sigma = rng.uniform(0.0, cfg.noise_std)
    if sigma > 0:
        image += sensor_noise(rng, image.shape) * np.float32(sigma)
    image += np.float32(0.5)  # round half up in the cast below
    image = np.clip(image, 0, 255, out=image).astype(np.uint8)

    # instances and panoptic segments (things first, in drawing order)
    instances: list[SceneInstance] = []
    segments: list[SegmentInfo] = []
    owner_to_segment = np.zeros(n + 1, dtype=np.int32)
    owner_to_label = np.zeros(n + 1, dtype=np.uint8)
    for k, s in enumerate(sprites):
        if not keep[k]:
            continue
        x0, y0, x1, y1 = s.box
        vis = owner[y0:y1, x0:x1] == k + 1
        mask = np.zeros((h, w), dtype=bool)
        mask[y0:y1, x0:x1] = vis
        spec = layout.things[k]
        crowd = isinstance(spec, CrowdSpec)
        label = cmap.names.index(names[k])
        seg_id = len(segments) + 1
        box = _tight_box(vis, x0, y0)
        kps = None if crowd or s.keypoints is None else keypoint_visibility(s.keypoints, owner, k + 1)
        instances.append(SceneInstance(label=label, category_id=cmap.to_id(label), mask=mask, bbox=box,
                                       iscrowd=crowd, keypoints=kps, segment_id=seg_id, layout_index=k))
        segments.append(SegmentInfo(id=seg_id, category_id=cmap.to_id(label), label=label, isthing=True,
                                    iscrowd=crowd, area=int(vis.sum()),
                                    bbox=(float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1]))))
        owner_to_segment[k + 1] = seg_id
        owner_to_label[k + 1] = label
    is_stuff = owner == 0
    label_to_segment = np.zeros(len(cmap), dtype=np.int32)
    stuff_counts = np.bincount(stuff_labels[is_stuff], minlength=len(cmap))
    for label in np.flatnonzero(stuff_counts):
        seg_id = len(segments) + 1
        label_to_segment[label] = seg_id
        where = is_stuff & (stuff_labels == label)
        box = _tight_box(where, 0, 0)
        segments.append(SegmentInfo(id=seg_id, category_id=cmap.to_id(int(label)), label=int(label), isthing=False,
                                    iscrowd=False, area=int(stuff_counts[label]),
                                    bbox=(float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1]))))
    panoptic = np.where(is_stuff, label_to_segment[stuff_labels], owner_to_segment[owner])
    semantic = np.where(is_stuff, stuff_labels, owner_to_label[owner]).astype(np.uint8)
    return Scene(image=image, instances=instances, stuff=stuff_labels, semantic=semantic,
                 panoptic=panoptic.astype(np.int32), segments=segments, categories=cmap)


def generate_scene(rng: np.random.Generator, cfg: SyntheticConfig) -> Scene:
    """Sample a layout and render it: one random scene, in memory."""
    return render_scene(rng, sample_layout(rng, cfg), cfg)
