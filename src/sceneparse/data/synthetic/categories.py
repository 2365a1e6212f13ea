"""Categories of the synthetic scenes: 7 thing classes (``person`` plus six shapes) and 5 stuff classes.

Ids are fixed (they never depend on which classes a :class:`~.config.SyntheticConfig` selects), so a
model trained on one synthetic dataset keeps its meaning on another. ``person`` is id 1 with COCO's
17 keypoints and skeleton, exactly as COCO's ``person_keypoints`` files describe it; stuff ids start
at 101 (COCO's panoptic stuff ids also sit above its thing ids). Contiguous labels come from
:class:`~sceneparse.conventions.CategoryMap` (sorted by id): things first, then stuff.
"""
from __future__ import annotations

from ...conventions import Category, CategoryMap
from ...structures.keypoints import COCO_KEYPOINT_NAMES, COCO_SKELETON

#: Thing classes, in id order (ids 1..7).
THING_NAMES: tuple[str, ...] = ("person", "ellipse", "rectangle", "triangle", "star", "ring", "cross")
#: Stuff classes, in id order (ids 101..105).
STUFF_NAMES: tuple[str, ...] = ("sky", "grass", "water", "road", "sand")

_THING_COLORS = {
    "person": (220, 20, 60), "ellipse": (0, 130, 200), "rectangle": (245, 130, 48), "triangle": (145, 30, 180),
    "star": (255, 225, 25), "ring": (70, 240, 240), "cross": (240, 50, 230),
}
_STUFF_COLORS = {
    "sky": (135, 206, 235), "grass": (60, 160, 60), "water": (30, 80, 160), "road": (110, 110, 110),
    "sand": (210, 190, 140),
}

#: Every category the generator knows (things and stuff), as :class:`~sceneparse.conventions.Category`.
SYNTH_CATEGORIES: list[Category] = [
    Category(id=1, name="person", isthing=True, supercategory="person", color=_THING_COLORS["person"],
             keypoints=COCO_KEYPOINT_NAMES, skeleton=COCO_SKELETON),
    *(Category(id=i + 2, name=n, isthing=True, supercategory="shape", color=_THING_COLORS[n])
      for i, n in enumerate(THING_NAMES[1:])),
    *(Category(id=101 + i, name=n, isthing=False, supercategory="stuff", color=_STUFF_COLORS[n])
      for i, n in enumerate(STUFF_NAMES)),
]

_BY_NAME = {c.name: c for c in SYNTH_CATEGORIES}


def category(name: str) -> Category:
    """The :class:`Category` of a synthetic class name (``KeyError`` lists the known names)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown synthetic class {name!r}; known: {sorted(_BY_NAME)}") from None


def synth_category_map(names: "tuple[str, ...] | list[str] | None" = None) -> CategoryMap:
    """CategoryMap of the selected class names (all when ``None``); labels follow the ids."""
    cats = SYNTH_CATEGORIES if names is None else [category(n) for n in names]
    return CategoryMap.from_categories(cats)


#: Map of every synthetic category: labels 0..6 are the things, 7..11 the stuff classes.
SYNTH_CATEGORY_MAP: CategoryMap = synth_category_map()
