"""ultralytics checkpoints -> :class:`~sceneparse.models.yolo.detector.YOLODetector`.

An ultralytics ``.pt`` file is a torch zip archive holding a pickled dict ``{'model': DetectionModel
(fp16), 'ema': ..., 'train_args': {...}, ...}`` (training checkpoints: ``'model': None`` and the weights
in ``'ema'``). It is read with :func:`sceneparse.models.yolo.restricted_pickle.load_module_checkpoint` (nothing
of ultralytics is imported or run), the module tree is flattened into a state dict (fp16 -> fp32),
and the keys are renamed: ultralytics numbers its layers ``model.<i>.`` (``yolov8.yaml``: 0..9
backbone, 12/15/16/18/19/21 neck, 22 Detect; ``yolo11.yaml``: 0..10, 13/16/17/19/20/22, 23), below
which the block names are the same as ours (``cv1.conv.weight``, ``m.0.cv2.bn.running_mean``, ...);
the Detect head's ``cv2`` / ``cv3`` are our ``head.box`` / ``head.cls``, and its ``dfl.conv.weight``
(the fixed bins ``0..15``) is checked and dropped. Class names come from the model's ``names``.

Plain ultralytics state dicts (``model.<i>.…`` keys, with or without a leading ``model.``) load too.
A file that does not fit raises :class:`~sceneparse.errors.CheckpointError` with the missing,
unexpected and mis-shaped keys and the variant the file looks like (from its ``yaml`` or its shapes).
"""
from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any, Mapping

import torch

from .restricted_pickle import Placeholder, is_module_placeholder, load_module_checkpoint, module_state_dict, plain
from ...errors import CheckpointError

if TYPE_CHECKING:  # pragma: no cover
    from ..zoo import LoadResult
    from .detector import YOLODetector

#: ultralytics layer index -> our module path, per family
LAYER_PATHS: dict[str, dict[int, str]] = {
    "yolov8": {**{i: f"backbone.layers.{i}" for i in range(10)}, 12: "neck.top_down_p4", 15: "neck.top_down_p3",
               16: "neck.down_p3", 18: "neck.bottom_up_p4", 19: "neck.down_p4", 21: "neck.bottom_up_p5",
               22: "head"},
    "yolo11": {**{i: f"backbone.layers.{i}" for i in range(11)}, 13: "neck.top_down_p4", 16: "neck.top_down_p3",
               17: "neck.down_p3", 19: "neck.bottom_up_p4", 20: "neck.down_p4", 22: "neck.bottom_up_p5",
               23: "head"},
}
_KEY = re.compile(r"^(?:model\.)?model\.(\d+)\.(.+)$")
_HEAD = {"cv2": "box", "cv3": "cls"}


def _is_ultralytics_zip(path: str) -> bool:
    """A torch zip whose pickle names ultralytics classes (read from the archive's ``data.pkl`` bytes)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
            return name is not None and b"ultralytics" in z.read(name)
    except (zipfile.BadZipFile, OSError):
        return False


def read_ultralytics(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An ultralytics ``.pt`` file -> (its model's state dict in fp32, meta: ``names``, ``yaml``,
    ``train_args``, ``source`` = which entry the weights came from)."""
    obj = load_module_checkpoint(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected ultralytics' checkpoint dict, got {type(obj).__name__}", path=os.fspath(path))
    source = "model" if is_module_placeholder(obj.get("model")) else "ema" if is_module_placeholder(obj.get("ema")) \
        else None
    if source is None:
        raise CheckpointError("the checkpoint holds no model ('model' and 'ema' are both empty or not modules)",
                              path=os.fspath(path))
    root: Placeholder = obj[source]
    state = {k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
             for k, v in module_state_dict(root).items()}
    attrs = root.attributes
    names = plain(attrs.get("names"))
    meta = {"names": names, "yaml": plain(attrs.get("yaml")), "train_args": plain(obj.get("train_args")),
            "source": source, "version": obj.get("version")}
    return state, meta


def guess_variant(state: Mapping[str, Any], yaml: Mapping[str, Any] | None = None) -> str:
    """What YOLO a state dict (ultralytics keys) looks like, e.g. ``yolov8s (80 classes)``."""
    if isinstance(yaml, Mapping):
        f = str(yaml.get("yaml_file", "") or "")
        m = re.search(r"(yolov8|yolo11)([nsmlx])?", os.path.basename(f))
        if m:
            scale = m.group(2) or str(yaml.get("scale", "") or "")
            nc = yaml.get("nc")
            return f"{m.group(1)}{scale}" + (f" ({nc} classes)" if nc is not None else "")
    from .detector import SCALES, YOLOSpec

    keys = {(_KEY.match(k).group(1), _KEY.match(k).group(2)): v for k, v in state.items() if _KEY.match(k)}
    family = "yolo11" if any(i == "10" and r.startswith("m.0.attn") for i, r in keys) else "yolov8"
    stem = keys.get(("0", "conv.weight"))
    if stem is None:
        return "not an ultralytics YOLO (no model.0.conv.weight)"
    width = stem.shape[0]
    head = max((int(i) for i, _ in keys), default=0)
    nc = next((v.shape[0] for (i, r), v in keys.items() if int(i) == head and re.fullmatch(r"cv3\.0\.2\.weight", r)),
              None)
    repeats = len({r.split(".")[1] for i, r in keys if i == "2" and r.startswith("m.")})
    cands = [s for s in SCALES[family] if YOLOSpec(family, s).ch(64) == width
             and YOLOSpec(family, s).n(3 if family == "yolov8" else 2) == repeats]
    scale = "/".join(cands) or f"? (stem width {width})"
    return f"{family}{scale}" + (f" ({nc} classes)" if nc is not None else "")


def map_ultralytics_keys(state: Mapping[str, Any], family: str) -> tuple[dict[str, Any], list[str]]:
    """Rename ultralytics keys to ours. Returns the mapped dict and the keys no rule matched (the DFL
    bins are checked and dropped)."""
    paths = LAYER_PATHS[family]
    out, unmatched = {}, []
    for key, value in state.items():
        m = _KEY.match(key)
        if m is None or int(m.group(1)) not in paths:
            unmatched.append(key)
            continue
        path, rest = paths[int(m.group(1))], m.group(2)
        if path == "head":
            if rest == "dfl.conv.weight":
                bins = torch.arange(value.numel(), dtype=torch.float32).view_as(value.float())
                if not torch.equal(value.float(), bins):
                    unmatched.append(key)  # not the fixed DFL integral: not a checkpoint we understand
                continue
            branch, _, tail = rest.partition(".")
            if branch not in _HEAD:
                unmatched.append(key)
                continue
            rest = f"{_HEAD[branch]}.{tail}"
        out[f"{path}.{rest}"] = value
    return out, unmatched


def load_ultralytics(model: "YOLODetector", source: Any, *, strict: bool = True) -> "LoadResult | None":
    """Load an ultralytics file / state dict into ``model``; ``None`` when ``source`` is something else
    (a sceneparse checkpoint, a file without ultralytics classes)."""
    from ..zoo import LoadResult

    path = None
    meta: dict[str, Any] = {}
    if isinstance(source, Mapping):
        if not any(isinstance(k, str) and _KEY.match(k) for k in source):
            return None
        state = {k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                 for k, v in source.items()}
    else:
        path = os.fspath(source)
        if not os.path.isfile(path) or not _is_ultralytics_zip(path):
            return None
        state, meta = read_ultralytics(path)
    mapped, unmatched = map_ultralytics_keys(state, model.spec.family)
    own = model.state_dict()
    missing = sorted(k for k in own if k not in mapped and not k.endswith("num_batches_tracked"))
    unexpected = sorted(unmatched + [k for k in mapped if k not in own])
    mismatched = sorted(f"{k} (checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)})" for k, v in mapped.items()
                        if k in own and (not isinstance(v, torch.Tensor) or v.shape != own[k].shape))
    if strict and (missing or unexpected or mismatched):
        looks = guess_variant(state, meta.get("yaml"))
        raise CheckpointError(f"ultralytics checkpoint does not fit {model.spec.name} with {model.num_classes} "
                              f"classes; the file looks like {looks}", missing=missing, unexpected=unexpected,
                              mismatched=mismatched, path=path)
    bad = {m.split(" ")[0] for m in mismatched}
    fitting = {k: v for k, v in mapped.items() if k in own and k not in bad}
    model.load_state_dict(fitting, strict=False)
    names = meta.get("names")
    if isinstance(names, Mapping):
        names = [names[k] for k in sorted(names)]
    if isinstance(names, (list, tuple)) and len(names) == model.num_classes:
        model.class_names = tuple(str(n) for n in names)
    return LoadResult(sorted(fitting), missing, unexpected, mismatched)


__all__ = ["LAYER_PATHS", "guess_variant", "load_ultralytics", "map_ultralytics_keys", "read_ultralytics"]
