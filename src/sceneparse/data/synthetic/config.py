"""``SyntheticConfig``: every knob of the synthetic scene generator, validated once."""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from ...conventions import CategoryMap
from ...errors import ConfigError
from .categories import STUFF_NAMES, THING_NAMES, synth_category_map

IMAGE_FORMATS = ("png", "jpg")


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate. Sizes are in pixels unless named ``*_frac`` (fraction of ``min(height, width)``).

    Attributes:
        height, width: image size.
        num_images: images in all splits together (``write_dataset`` splits them by ``val_fraction``).
        val_fraction: share of ``num_images`` that goes to the ``val`` split.
        seed: dataset seed; image ``i`` uses ``SeedSequence([seed, i])`` (see ``image_rng``), so images
            do not depend on how many workers draw them or in which order.
        thing_classes, stuff_classes: class names to use (subsets of ``THING_NAMES`` / ``STUFF_NAMES``).
        min_objects, max_objects: number of separate things placed in a non-empty image (uniform); some
            of them may later vanish behind others (see ``min_visible_area``).
        empty_prob: probability that an image carries no thing at all (stuff only).
        crowd_prob: probability that an image carries one crowd region (a tight cluster of
            ``crowd_members`` small things of one class, annotated as one ``iscrowd=1`` RLE).
        crowd_members: inclusive range of the number of things in a crowd.
        crowd_person_prob: probability that a crowd is made of persons (COCO's crowds mostly are).
        size_frac: range of a shape's extent (log-uniform), which spans COCO's small / medium / large.
        person_height_frac: range of a person's height, head to ankles (log-uniform).
        crowd_size_frac: range of the extent of one crowd member.
        min_visible_area: things with fewer visible pixels after occlusion are removed from the scene
            (and from the image: their pixels show what lies below them).
        noise_std: largest standard deviation of the additive sensor noise (per image U(0, noise_std)).
        image_format: ``jpg`` (quality 95, 4:4:4; fast and small) or ``png`` (lossless, ~15x slower to encode).
    """

    height: int = 512
    width: int = 512
    num_images: int = 1000
    val_fraction: float = 0.2
    seed: int = 0
    thing_classes: tuple[str, ...] = THING_NAMES
    stuff_classes: tuple[str, ...] = STUFF_NAMES
    min_objects: int = 1
    max_objects: int = 8
    empty_prob: float = 0.05
    crowd_prob: float = 0.15
    crowd_members: tuple[int, int] = (6, 14)
    crowd_person_prob: float = 0.5
    size_frac: tuple[float, float] = (0.04, 0.5)
    person_height_frac: tuple[float, float] = (0.12, 0.85)
    crowd_size_frac: tuple[float, float] = (0.025, 0.06)
    min_visible_area: int = 24
    noise_std: float = 4.0
    image_format: str = "jpg"
    _category_map: CategoryMap | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("thing_classes", "stuff_classes", "crowd_members", "size_frac", "person_height_frac",
                     "crowd_size_frac"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        problems = []

        def bad(name: str, why: str) -> None:
            problems.append(f"SyntheticConfig.{name}: {why} (got {getattr(self, name)!r})")

        if self.height < 16 or self.width < 16:
            bad("height" if self.height < 16 else "width", "images must be at least 16 px on each side")
        if self.num_images < 0:
            bad("num_images", "must be >= 0")
        if not 0.0 <= self.val_fraction <= 1.0:
            bad("val_fraction", "must lie in [0, 1]")
        unknown = [n for n in self.thing_classes if n not in THING_NAMES]
        if unknown or len(set(self.thing_classes)) != len(self.thing_classes):
            bad("thing_classes", f"must be distinct names among {THING_NAMES}")
        unknown = [n for n in self.stuff_classes if n not in STUFF_NAMES]
        if unknown or len(set(self.stuff_classes)) != len(self.stuff_classes) or not self.stuff_classes:
            bad("stuff_classes", f"must be one or more distinct names among {STUFF_NAMES} (stuff covers the background)")
        if not 0 <= self.min_objects <= self.max_objects:
            bad("max_objects", f"need 0 <= min_objects ({self.min_objects}) <= max_objects")
        if not self.thing_classes and self.max_objects > 0 and self.empty_prob < 1:
            bad("thing_classes", "is empty but images are asked to carry objects")
        for name in ("empty_prob", "crowd_prob", "crowd_person_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                bad(name, "must be a probability in [0, 1]")
        lo, hi = self.crowd_members
        if not 2 <= lo <= hi:
            bad("crowd_members", "need 2 <= low <= high")
        for name in ("size_frac", "person_height_frac", "crowd_size_frac"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi <= 4:
                bad(name, "need 0 < low <= high <= 4")
        if self.min_visible_area < 1:
            bad("min_visible_area", "must be >= 1 pixel")
        if self.noise_std < 0:
            bad("noise_std", "must be >= 0")
        if self.image_format not in IMAGE_FORMATS:
            bad("image_format", f"must be one of {IMAGE_FORMATS}")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.height, self.width

    @property
    def category_map(self) -> CategoryMap:
        """Contiguous labels of the selected classes (things first: their ids are lower)."""
        if self._category_map is None:
            object.__setattr__(self, "_category_map", synth_category_map(self.thing_classes + self.stuff_classes))
        return self._category_map  # type: ignore[return-value]

    def split_sizes(self) -> dict[str, int]:
        """``{"train": n - n_val, "val": n_val}`` with ``n_val = round(num_images * val_fraction)``."""
        n_val = int(round(self.num_images * self.val_fraction))
        return {"train": self.num_images - n_val, "val": n_val}

    def to_dict(self) -> dict:
        """Plain values (for ``dataset.yaml``)."""
        out = {}
        for f in fields(self):
            if f.init:
                v = getattr(self, f.name)
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out
