"""The built-in synthetic scene generator: sceneparse's embedded default dataset.

Scenes have textured stuff (sky, grass, water, road, sand) covering the background and things
(``person`` stick figures with COCO's 17 keypoints, and ellipse / rectangle / triangle / star / ring /
cross shapes) that overlap, occlude each other, leave the image, span COCO's small / medium / large
areas, and sometimes form crowd regions; some images hold no thing at all.

In memory::

    cfg = SyntheticConfig(height=256, width=256)
    scene = generate_scene(image_rng(cfg.seed, 0), cfg)   # Scene: image, instances, semantic, panoptic
    target = scene.to_target()                           # sceneparse.structures.Target

On disk (COCO layout, see :mod:`.writer`)::

    write_dataset("data/synth", SyntheticConfig(num_images=200))   # or: sceneparse data synth --out ...
"""
from .categories import STUFF_NAMES, SYNTH_CATEGORIES, SYNTH_CATEGORY_MAP, THING_NAMES, synth_category_map
from .coco_layout import coco_dicts, corner_polygons, scene_records
from .config import SyntheticConfig
from .person import PersonSpec, keypoint_pixels, pose_keypoints, sample_person
from .scene import (CrowdSpec, Scene, SceneInstance, SceneLayout, generate_scene, image_rng, keypoint_visibility,
                    render_scene, sample_layout)
from .shapes import SHAPE_NAMES, ShapeSpec, sample_shape
from .stuff import StuffLayout, sample_stuff_layout
from .writer import AREA_RANGES, SplitPaths, SyntheticDataset, area_stats, split_paths, write_dataset

__all__ = [
    "AREA_RANGES", "CrowdSpec", "PersonSpec", "SHAPE_NAMES", "STUFF_NAMES", "SYNTH_CATEGORIES", "SYNTH_CATEGORY_MAP",
    "Scene", "SceneInstance", "SceneLayout", "ShapeSpec", "SplitPaths", "StuffLayout", "SyntheticConfig",
    "SyntheticDataset", "THING_NAMES", "area_stats", "coco_dicts", "corner_polygons", "generate_scene", "image_rng",
    "keypoint_pixels", "keypoint_visibility", "pose_keypoints", "render_scene", "sample_layout", "sample_person",
    "sample_shape", "sample_stuff_layout", "scene_records", "split_paths", "synth_category_map", "write_dataset",
]
