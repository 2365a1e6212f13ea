"""Shared pieces of the engine tests: a tiny synthetic dataset and tiny model settings."""
from __future__ import annotations

from pathlib import Path

from sceneparse.config import Config, load_config

#: U-Net small enough for milliseconds per iteration on 64x64 images
UNET = {"base_channels": 4, "depth": 2, "min_size": 64, "max_size": 64}
#: Faster R-CNN (ResNet-18 FPN) with slim heads at 64 px
FRCNN = {"min_size": 64, "max_size": 64, "fpn_channels": 16, "box_representation_size": 32,
         "rpn_pre_nms_top_n": [100, 50], "rpn_post_nms_top_n": [50, 20], "box_batch_size_per_image": 32,
         "box_detections_per_img": 10}
MASK = {**FRCNN, "mask_conv_channels": [16]}
KEYPOINT = {**FRCNN, "keypoint_conv_channels": [16]}


def make_synth(root: Path, train: int = 8, val: int = 4, size: int = 64, seed: int = 0) -> Path:
    from sceneparse.data.synthetic import SyntheticConfig, write_dataset

    cfg = SyntheticConfig(height=size, width=size, num_images=train + val, seed=seed, empty_prob=0.0, crowd_prob=0.3)
    write_dataset(root, cfg, splits={"train": train, "val": val}, workers=1, progress=False, overwrite=True)
    return root


def _yaml(v) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_yaml(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_yaml(x) for x in v) + "]"
    return str(v).lower() if isinstance(v, bool) else str(v)


def tiny_config(root: Path, out: Path, model: str = "unet", kwargs: dict | None = None, *overrides: str) -> Config:
    kwargs = UNET if kwargs is None and model == "unet" else (kwargs or {})
    base = [f"data.root={root}", f"model.name={model}", f"model.kwargs={_yaml(kwargs)}", f"train.out={out}",
            "data.batch_size=2", "train.epochs=2", "train.threads=1", "optim.warmup_iters=2", "optim.lr=0.02",
            "train.log_every=1"]
    return load_config(None, base + list(overrides))
