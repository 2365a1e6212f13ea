"""Checkpoints: ``{model, config, categories, sceneparse_version, ...}``, written atomically and read
with ``torch.load(..., weights_only=True)`` (plain tensors, numbers, strings, lists and dicts only).

Training checkpoints add ``optimizer``, ``scheduler``, ``scaler``, ``ema``, ``epoch``, ``iteration``,
``best`` and the RNG states, so ``--resume`` continues exactly where a killed run stopped.
"""
from __future__ import annotations

import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..errors import CheckpointError, ConfigError
from ..fileio import atomic_open
from ..models.base import LEGACY_TASKS, ModelInfo, model_info, unwrap


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temp file in the same folder, fsync, then ``os.replace``: a reader (or a
    crash) never sees half a file. A full disk raises :class:`~sceneparse.fileio.DiskFullError` naming
    ``path`` (PyTorch's own error is an ``enforce fail at inline_container.cc``) and leaves nothing."""
    with atomic_open(path, "wb", durable=True) as f:
        torch.save(obj, f)


def rng_state() -> dict:
    """Python, NumPy and torch RNG states in weights_only-loadable form."""
    np_state = np.random.get_state()
    return {
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


#: the ``config["data"]`` entries that name files or folders
DATA_PATH_KEYS = ("root", "train_json", "val_json", "train_images", "val_images", "train_semantic", "val_semantic")


def absolute_data_paths(config: Any) -> Any:
    """``config`` with its relative ``data`` paths (:data:`DATA_PATH_KEYS`) made absolute against the
    current folder, so that ``val`` (and ``train --resume``) find the data from any folder. Other
    entries, and a config without a ``data`` mapping, are returned as they are (a new dict)."""
    if not isinstance(config, dict) or not isinstance(config.get("data"), dict):
        return config
    data = dict(config["data"])
    for key in DATA_PATH_KEYS:
        value = data.get(key)
        if isinstance(value, str) and value and "://" not in value:
            data[key] = os.path.abspath(os.path.expanduser(value))
    return {**config, "data": data}


def save_checkpoint(path: str | Path, model: torch.nn.Module, *, config: dict, categories: list[dict],
                    **extra: Any) -> None:
    """Write a checkpoint atomically. ``config`` is ``Config.to_dict()`` (stored with absolute data
    paths: :func:`absolute_data_paths`); ``categories`` COCO-style dicts in label order. The model's
    :class:`ModelInfo` (with the categories' names) is stored as ``info`` and its task as ``task``."""
    module = unwrap(model)
    info = model_info(module).named([str(c.get("name", c.get("id"))) for c in categories])
    payload = {"model": module.state_dict(), "config": absolute_data_paths(config), "categories": categories,
               "sceneparse_version": __version__, "task": info.task, "info": info.to_dict()}
    payload.update({k: v for k, v in extra.items() if k not in ("task", "info")})  # those are the model's
    atomic_torch_save(payload, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a sceneparse checkpoint safely (``weights_only=True``); clear errors for missing/foreign files."""
    from ..models.zoo import describe_load_error  # engine sits above models

    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint file not found" if not path.is_dir() else
                              "is a folder, not a checkpoint file (a run folder holds best.pt and last.pt)",
                              path=str(path))
    try:
        with warnings.catch_warnings():  # e.g. the unpickler's protocol notes: the error says what matters
            warnings.simplefilter("ignore", UserWarning)
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # empty, truncated, corrupt, not a checkpoint, or code-bearing (never run)
        raise CheckpointError(f"cannot read checkpoint: {describe_load_error(path, e)}", path=str(path)) from e
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        keys = sorted(ckpt)[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"not a sceneparse checkpoint (no 'model' entry; found {keys}); "
                              "torchvision state dicts load through models.build(name, weights=PATH)",
                              path=str(path))
    return ckpt


# ---- checkpoint -> ready model (the one contract between trainer, predictor, export and demo) ----

#: What a sceneparse model checkpoint holds, beyond ``model``:
#:   ``config``      ``Config.to_dict()`` of the run (``config["model"]["name"]`` / ``["kwargs"]`` rebuild it)
#:   ``categories``  COCO-style category dicts ``{id, name, ...}`` in label order (label i = categories[i])
#:   ``info``        :meth:`ModelInfo.to_dict` of the model (since 0.2; older checkpoints have none: the
#:                   rebuilt model's own info is used)
#:   ``task``        :attr:`ModelInfo.task` (checkpoints before 0.2: ``"detection"`` or ``"semantic"``)


class LoadedModel:
    """A model rebuilt from a sceneparse checkpoint, in eval mode, with what it was trained on."""

    def __init__(self, model: torch.nn.Module, categories: list[dict], config: dict, info: ModelInfo, path: str):
        self.model, self.categories, self.config, self.info, self.path = model, categories, config, info, path

    @property
    def task(self) -> str:
        return self.info.task

    @property
    def class_names(self) -> list[str]:
        return [str(c.get("name", c.get("id"))) for c in self.categories]

    def __repr__(self) -> str:
        return (f"LoadedModel({self.config.get('model', {}).get('name')!r}, task={self.task!r}, "
                f"classes={len(self.categories)}, path={self.path!r})")


def model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the model of a sceneparse checkpoint: ``zoo.build(config.model.name, num_classes=
    len(categories), **config.model.kwargs)``, load its weights strictly, move to ``device``, eval mode.
    The checkpoint's stored ``info`` / ``task`` must agree with the rebuilt model's."""
    from ..models import zoo  # engine sits above models

    ckpt = load_checkpoint(path)
    cfg = ckpt.get("config") or {}
    if not isinstance(cfg, dict):
        raise CheckpointError(f"config must be a mapping, got {type(cfg).__name__}", path=str(path))
    model_cfg = cfg.get("model") or {}
    name = model_cfg.get("name") if isinstance(model_cfg, dict) else None
    if not name or not isinstance(name, str):
        raise CheckpointError("checkpoint has no config.model.name; cannot rebuild the model", path=str(path))
    categories = ckpt.get("categories") or []
    if not isinstance(categories, list) or not categories or not all(isinstance(c, dict) for c in categories):
        raise CheckpointError("checkpoint has no categories (a list of {id, name} dicts); cannot size the model",
                              path=str(path))
    kwargs = model_cfg.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"config.model.kwargs must be a mapping, got {type(kwargs).__name__}", path=str(path))
    try:
        zoo.check_kwargs(name, kwargs)
        model = zoo.build(name, num_classes=len(categories), **kwargs)
    except ConfigError as e:
        raise CheckpointError(f"cannot rebuild the model: {e}", path=str(path)) from None
    except (TypeError, ValueError, RuntimeError, OverflowError) as e:  # a value of the wrong type or range
        raise CheckpointError(f"cannot rebuild {name} from config.model.kwargs {kwargs!r}: {type(e).__name__}: {e}",
                              path=str(path)) from None
    try:
        zoo.load_checkpoint(model, ckpt)
    except CheckpointError as e:
        if e.path is None:  # loaded from the dict read above: name the file
            raise CheckpointError(str(e), path=str(path)) from None
        raise
    model.class_names = tuple(str(c.get("name", c.get("id"))) for c in categories)
    info = model_info(model)
    stored = ckpt.get("info")
    stored_task = stored.get("task") if isinstance(stored, dict) else ckpt.get("task")
    if stored_task is not None:
        if isinstance(stored, dict) or stored_task not in LEGACY_TASKS:
            ok = stored_task == info.task
        else:  # before 0.2: "detection" (instance results) or "semantic"
            want = LEGACY_TASKS[stored_task]
            ok = info.result == "instances" if want is None else want == info.task
        if not ok:
            raise CheckpointError(f"the checkpoint says task {stored_task!r} but {name} rebuilt from its config is a "
                                  f"{info.task!r} model", path=str(path))
    model.to(device).eval()
    return LoadedModel(model, list(categories), cfg, info, str(path))
