"""Run configuration: dataclasses, a YAML file, and ``key=value`` overrides. Unknown keys are errors.

    cfg = load_config("my.yaml", ["optim.lr=0.01", "train.epochs=5"])

Values in overrides are parsed as YAML scalars/lists (``train.amp=true``, ``optim.steps=[8,11]``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from .errors import ConfigError


@dataclass
class DataConfig:
    """Where the data lives and how it is batched.

    ``root`` is a dataset folder in COCO layout (as ``sceneparse data synth`` writes it:
    ``annotations/instances_{split}.json``, ``images/{split}``, ...) or a COCO JSON path when
    ``train_json``/``val_json`` are given.
    """

    root: str = "data/synth"
    train_split: str = "train"
    val_split: str = "val"
    train_json: str | None = None
    val_json: str | None = None
    train_images: str | None = None
    val_images: str | None = None
    train_semantic: str | None = None  # label PNG folder (semantic models) when train_json is given
    val_semantic: str | None = None
    batch_size: int = 4
    workers: int = 0
    cache: bool = False  # decoded images and label maps kept in RAM (read once, up front for training)
    hflip: float = 0.5
    scale_jitter: tuple[float, float] = (1.0, 1.0)
    max_images: int | None = None  # use only the first N training images (quick runs)
    max_val_images: int | None = None


@dataclass
class ModelConfig:
    name: str = "maskrcnn_resnet18_fpn"
    weights: str | None = None  # a local checkpoint file (torchvision or sceneparse)
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra constructor arguments (min_size, ...)


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adamw
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine | wsd (constant, then linear to 0 over decay_fraction) | step | constant
    decay_fraction: float = 0.25  # wsd: the final part of the run over which the LR decays
    steps: tuple[int, ...] = ()  # epochs at which "step" multiplies lr by gamma
    gamma: float = 0.1
    warmup_iters: int = 100
    warmup_factor: float = 0.001
    clip_grad_norm: float | None = 10.0


@dataclass
class TrainConfig:
    epochs: int = 12
    out: str = "runs/train"
    seed: int = 0
    amp: bool = False  # mixed precision: float16 on CUDA, bfloat16 on CPUs with AVX512-BF16 / AMX
    # 4-D weights and activations in NHWC order: oneDNN's convolutions skip their layout reorders
    # (CPU, bf16: U-Net step -25 %, DeepLabv3-R18 -10 %; R-CNN: no gain, RoIAlign wants NCHW)
    channels_last: bool = False
    ema: bool = False
    ema_decay: float = 0.9998
    eval_every: int = 1
    primary_metric: str = "auto"  # e.g. bbox_AP, segm_AP, keypoints_AP, miou; auto picks by task
    device: str = "auto"
    log_every: int = 10
    threads: int | None = None
    max_iters_per_epoch: int | None = None
    checkpoint_every: int = 0  # also write last.pt every N iterations inside an epoch (0: at epoch ends only)
    time_limit_min: float | None = None  # wall-clock budget in minutes; sets the number of epochs (like ultralytics' time=)
    freeze_bn: bool = False  # keep BatchNorm layers in eval mode (running statistics fixed; affine still trained)
    exist_ok: bool = False  # allow training into an output folder that already holds a run


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _coerce(value: Any, current: Any, key: str) -> Any:
    """Coerce a parsed YAML value to the type of the default it replaces."""
    if current is None or value is None:
        return value
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if isinstance(current, int) and not isinstance(current, bool):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if isinstance(current, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if isinstance(current, tuple):
        if not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(value)
    if isinstance(current, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if isinstance(current, str) and not isinstance(value, str):
        return str(value)
    return value


def _apply(obj: Any, data: dict, prefix: str = "") -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    names = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key {full!r}; known keys here: {sorted(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _apply(current, value, full + ".")
        elif isinstance(current, dict) and isinstance(value, dict):
            merged = dict(current)
            merged.update(value)
            setattr(obj, key, merged)
        else:
            setattr(obj, key, _coerce(value, current, full))


def parse_overrides(overrides: Sequence[str]) -> dict:
    """``["optim.lr=0.01", "model.kwargs.min_size=320"]`` -> nested dict with YAML-parsed values."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. optim.lr=0.01)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: cannot parse value: {e}") from None
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} was given a value, it has no sub-keys")
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            _merge(node[parts[-1]], value)  # model.kwargs.a=1 then model.kwargs={b: 2} keeps a
        else:
            node[parts[-1]] = value
    return out


def _merge(into: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (), base: Config | None = None) -> Config:
    """Defaults (or ``base``) <- YAML file <- overrides."""
    cfg = base if base is not None else Config()
    if path is not None:
        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {p}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML: {e}") from None
        try:
            _apply(cfg, data)
        except ConfigError as e:
            raise ConfigError(f"{p}: {e}") from None
    for item in overrides:  # one at a time, so that an error names the override that caused it
        try:
            _apply(cfg, parse_overrides([item]))
        except ConfigError as e:
            msg = str(e)
            raise ConfigError(msg if msg.startswith("override ") else f"override {item!r}: {msg}") from None
    return cfg


def config_from_dict(data: dict) -> Config:
    cfg = Config()
    _apply(cfg, data)
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    from .fileio import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
