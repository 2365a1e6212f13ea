"""Model zoo: one NAME -> builder registry, and loading of local checkpoints (no downloads).

* ``@register(name)`` adds a builder ``fn(*, num_classes=None, **kw) -> nn.Module``; ``build(name,
  num_classes=..., weights=PATH, **kw)`` calls it and, if ``weights`` is given, loads that file.
* :func:`load_torchvision_checkpoint` loads a *torchvision* state dict (e.g. the released
  ``maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth``) into a sceneparse model through the model's
  key-mapping table (``model.torchvision_key_rules()``, e.g.
  :data:`sceneparse.models.detectors.rcnn.TORCHVISION_RCNN_KEY_RULES`).
* A model whose foreign checkpoints need more than renaming (tensors split or packed) converts them
  in ``model.convert_foreign_state_dict(state) -> state``, called before the renaming rules.
* sceneparse's own checkpoints (``{model, config, categories, sceneparse_version}``) load as they are
  (a model may rename keys of an older layout of its own: ``upgrade_state_dict(state) -> state``).

A checkpoint that does not fit raises :class:`~sceneparse.errors.CheckpointError` listing the
missing, unexpected and shape-mismatched keys. Files are read with ``torch.load(...,
weights_only=True)``: a checkpoint cannot run code.
"""
from __future__ import annotations

import importlib
import inspect
import os
import re
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError

Builder = Callable[..., nn.Module]
_REGISTRY: dict[str, Builder] = {}
#: Packages under ``sceneparse.models`` that hold shared parts, not model families.
SHARED_PACKAGES: frozenset[str] = frozenset({"backbones", "heads", "layers", "necks"})


def family_packages() -> tuple[str, ...]:
    """The model families: every package under ``sceneparse.models`` other than the shared parts
    (:data:`SHARED_PACKAGES`). Importing a family package registers its builders (``@register`` in its
    modules, imported by the package's ``__init__``). Imported lazily by :func:`build` /
    :func:`available`, so importing the zoo stays light; a new family is a new folder, listed nowhere."""
    import pkgutil

    from .. import models

    return tuple(sorted(f"{models.__name__}.{m.name}" for m in pkgutil.iter_modules(models.__path__)
                        if m.ispkg and m.name not in SHARED_PACKAGES and not m.name.startswith("_")))


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator: ``@register("fcn_resnet50") def build_fcn(*, num_classes=None, **kw) -> nn.Module``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, got {name!r}")

    def deco(fn: Builder) -> Builder:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"model name {name!r} is already registered (by {_REGISTRY[name].__module__})")
        _REGISTRY[name] = fn
        return fn

    return deco


def _load_plugins() -> None:
    for pkg in family_packages():
        importlib.import_module(pkg)


def available() -> list[str]:
    """All registered model names, sorted."""
    _load_plugins()
    return sorted(_REGISTRY)


def build(name: str, num_classes: int | None = None, weights: str | os.PathLike | Mapping[str, Any] | None = None,
          **kwargs) -> nn.Module:
    """Build the model ``name``; ``num_classes`` = foreground classes (``None``: the builder's default);
    ``weights``: a local checkpoint file (torchvision or sceneparse) or a state dict; other keyword
    arguments go to the builder."""
    if name not in _REGISTRY:
        _load_plugins()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = _REGISTRY[name](**kwargs)
    if weights is not None:
        load_checkpoint(model, weights)
    return model


def accepted_kwargs(name: str) -> tuple[set[str], bool]:
    """The keyword arguments builder ``name`` takes: its own parameters and, where it forwards
    ``**kwargs`` to the class of its return annotation, that class's ``__init__`` parameters (through
    the class hierarchy while each forwards ``**kwargs``). Returns ``(names, complete)``; ``complete``
    is False when a ``**kwargs`` leads nowhere that can be read (then any name may be valid)."""
    if name not in _REGISTRY:
        _load_plugins()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    fn = _REGISTRY[name]
    names: set[str] = set()

    def add(sig: inspect.Signature, skip_first: bool) -> bool:
        params = list(sig.parameters.values())[1 if skip_first else 0:]
        names.update(p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
        return any(p.kind == p.VAR_KEYWORD for p in params)

    if not add(inspect.signature(fn), False):
        return names, True
    try:
        cls = typing.get_type_hints(fn).get("return")
    except Exception:  # noqa: BLE001 -- an annotation that does not resolve: cannot say more
        cls = None
    if not isinstance(cls, type) or cls is nn.Module:
        return names, False
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        if klass in (nn.Module, object):
            return names, True
        if not add(inspect.signature(klass.__init__), True):
            return names, True
    return names, True


def check_kwargs(name: str, kwargs: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` naming the keys of ``kwargs`` that model ``name`` does not take,
    with the valid names (``num_classes`` and ``weights`` are set by sceneparse itself)."""
    names, complete = accepted_kwargs(name)
    if not complete:
        return
    unknown = sorted(k for k in kwargs if k not in names)
    if unknown:
        valid = sorted(n for n in names if n not in ("num_classes", "backbone", "preprocessor", "roi_mask", "roi_keypoint"))
        raise ConfigError(f"model.kwargs {unknown} not accepted by {name}; valid keys: {', '.join(valid)}")


# ---- checkpoint loading -------------------------------------------------------------------------

@dataclass
class LoadResult:
    """What a non-strict load did: keys loaded, and those skipped (missing/unexpected/mismatched)."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)


#: globals a weights-only load accepts without running code (a plain pickle naming only these is data)
_DATA_GLOBALS = ("torch.", "collections.OrderedDict", "_codecs.encode", "builtins.set", "builtins.frozenset",
                 "builtins.bytearray", "builtins.complex", "builtins.slice", "builtins.range")


def _pickle_globals(data: bytes) -> list[str]:
    """The globals (``module.name``) that the pickle(s) at the start of ``data`` ask for, read with
    :mod:`pickletools` (which parses and never runs anything). Legacy ``torch.save`` files are
    several pickles in a row; a parse error ends the scan."""
    import pickletools

    found: list[str] = []
    pos = 0
    for _ in range(8):
        if pos >= len(data) or data[pos] != 0x80:  # every pickle of protocol >= 2 starts with PROTO
            break
        memo: dict[int, Any] = {}
        strings: list[Any] = []
        try:
            for op, arg, at in pickletools.genops(data[pos:]):
                name = op.name
                if name == "GLOBAL":
                    found.append(".".join(str(arg).split(" ", 1)))
                elif name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif "UNICODE" in name or name.endswith("STRING"):
                    strings.append(arg)
                elif name == "MEMOIZE" and strings:
                    memo[len(memo)] = strings[-1]
                elif name in ("PUT", "BINPUT", "LONG_BINPUT") and strings:
                    memo[int(arg)] = strings[-1]
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    strings.append(memo.get(int(arg)))
                if name == "STOP":
                    pos += at + 1
                    break
            else:
                break
        except Exception:  # noqa: BLE001 -- truncated or not a pickle: what was found so far
            break
    return found


def describe_load_error(path: str | os.PathLike, error: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in words for a user: an empty file, a
    truncated or corrupt archive, a file that is not a checkpoint, or one that holds code-bearing
    objects (naming the global it wanted; sceneparse never runs it). PyTorch's own text advises
    ``weights_only=False``, which would run that code: it is never passed on."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(1 << 20)
    except OSError as e:
        return f"cannot read the file ({e.strerror or type(e).__name__})"
    if size == 0:
        return "empty file (0 bytes): not a checkpoint (what an interrupted copy or download leaves); copy it again"
    text = str(error)
    wanted = re.findall(r"GLOBAL ([\w.]+)", text)
    if not wanted and not head.startswith(b"PK"):
        wanted = [g for g in _pickle_globals(head) if not g.startswith(_DATA_GLOBALS)]
    if wanted:
        return (f"the file holds code-bearing objects: its pickle asks for the global {wanted[0]}, which would "
                "run when loaded. sceneparse reads checkpoints as data only (tensors, numbers, strings, lists, "
                "dicts) and will not run it; use a checkpoint written by sceneparse (or a torchvision state dict)")
    if head.startswith(b"PK"):
        reason = "the zip archive is incomplete" if isinstance(error, (EOFError, OSError)) or "central directory" in \
            text else "the zip archive is damaged"
        first = text.splitlines()[0].split(". ")[0][:160] if text else type(error).__name__
        return (f"truncated or corrupt checkpoint ({reason}: {first}; {size} bytes); "
                "it was probably not copied or written completely: copy it again")
    if head[:1] != b"\x80":
        return (f"not a PyTorch checkpoint: neither a zip archive (what torch.save writes) nor a pickle "
                f"(the file starts with {head[:8]!r}, {size} bytes)")
    if isinstance(error, EOFError):
        return f"truncated checkpoint (the pickle data ends early, {size} bytes): copy it again"
    reason = next((ln.strip() for ln in text.splitlines() if ln.strip().startswith("Unsupported")), "")
    return ("not a PyTorch checkpoint, or a corrupt one: the pickle data cannot be read as plain data"
            + (f" ({reason})" if reason else f" ({type(error).__name__})"))


def _read(source, what: str) -> tuple[Any, str | None]:
    if isinstance(source, Mapping):
        return source, None
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} checkpoint file not found", path=path)
    try:
        with warnings.catch_warnings():  # e.g. the unpickler's protocol notes: the error says what matters
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True), path
    except Exception as e:  # unpickling / zip errors: report them as a bad checkpoint, naming the file
        raise CheckpointError(f"cannot read {what} checkpoint: {describe_load_error(path, e)}", path=path) from e


def _is_sceneparse_checkpoint(obj: Any) -> bool:
    return isinstance(obj, Mapping) and "sceneparse_version" in obj and isinstance(obj.get("model"), Mapping)


def load_checkpoint(model: nn.Module, source, *, strict: bool = True) -> LoadResult:
    """Load a sceneparse checkpoint (``{model, ...}``) or, failing that, a torchvision state dict.
    A model that reads another toolkit's files itself (``model.load_foreign_checkpoint(source, strict=)``
    -> :class:`LoadResult`, or ``None`` when ``source`` is not such a file) is asked first."""
    foreign = getattr(model, "load_foreign_checkpoint", None)  # e.g. ultralytics' pickled modules, read as data
    if callable(foreign):
        result = foreign(source, strict=strict)
        if result is not None:
            return result
    obj, path = _read(source, "model")
    if _is_sceneparse_checkpoint(obj):
        state = dict(obj["model"])
        upgrade = getattr(model, "upgrade_state_dict", None)  # keys of older sceneparse layouts
        return _load_mapped(model, upgrade(state) if callable(upgrade) else state, path, strict, "sceneparse")
    return load_torchvision_checkpoint(model, obj if path is None else path, strict=strict)


def _rules_for(model: nn.Module) -> Sequence[tuple[str, Callable[[re.Match], str]]]:
    """The model's own torchvision key-mapping rules (``torchvision_key_rules()``; none: keys as they are)."""
    own = getattr(model, "torchvision_key_rules", None)
    return tuple(own()) if callable(own) else ()


def map_torchvision_keys(state_dict: Mapping[str, Any], rules) -> tuple[dict[str, Any], list[str]]:
    """Rename keys by ``rules`` (identity when no rule matches). Returns the mapping and the keys that
    no rule matched (only meaningful when rules are given)."""
    compiled = [(re.compile(p), f) for p, f in rules]
    out, unmatched = {}, []
    for key, value in state_dict.items():
        for pattern, fn in compiled:
            m = pattern.match(key)
            if m:
                out[fn(m)] = value
                break
        else:
            out[key] = value
            if compiled:
                unmatched.append(key)
    return out, unmatched


def load_torchvision_checkpoint(model: nn.Module, source, *, strict: bool = True, rules=None) -> LoadResult:
    """Load torchvision weights (a path or a state dict) into ``model`` via its key-mapping table.

    ``strict=True`` raises :class:`CheckpointError` if any key is missing, unexpected or of another
    shape; ``strict=False`` loads what fits (e.g. a COCO checkpoint into a model with another number
    of classes: the class-specific layers are skipped) and reports the rest in the result.
    """
    obj, path = _read(source, "torchvision")
    if _is_sceneparse_checkpoint(obj):
        raise CheckpointError("this is a sceneparse checkpoint, not a torchvision state dict; "
                              "use load_checkpoint / build(weights=...)", path=path)
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping) and not any(
            isinstance(v, torch.Tensor) for v in obj.values()):
        obj = obj["model"]  # torchvision's training references save {"model": state_dict, ...}
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise CheckpointError(f"expected a state dict (str -> Tensor), got {type(obj).__name__}", path=path)
    convert = getattr(model, "convert_foreign_state_dict", None)  # layouts a renaming cannot reach (e.g.
    if callable(convert):  # separate q/k/v projections -> one packed tensor); returns the state dict as it is
        obj = convert(dict(obj))  # when it is not such a layout
    mapped, _ = map_torchvision_keys(obj, _rules_for(model) if rules is None else rules)
    return _load_mapped(model, mapped, path, strict, "torchvision")


def _load_mapped(model: nn.Module, state: dict[str, Any], path: str | None, strict: bool, kind: str) -> LoadResult:
    own = model.state_dict()
    # BatchNorm's step counter is bookkeeping, not a weight: FrozenBatchNorm has none, and a
    # FrozenBatchNorm checkpoint loaded into BatchNorm keeps the model's own counter.
    state = {k: v for k, v in state.items() if not (k.endswith("num_batches_tracked") and k not in own)}
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in own)
    mismatched = sorted(f"{k} (checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)})"
                        for k, v in state.items()
                        if k in own and (not isinstance(v, torch.Tensor) or v.shape != own[k].shape))
    if strict and (missing or unexpected or mismatched):
        raise CheckpointError(f"{kind} checkpoint does not fit {type(model).__name__}", missing=missing,
                              unexpected=unexpected, mismatched=mismatched, path=path)
    bad = {m.split(" ")[0] for m in mismatched}
    fitting = {k: v for k, v in state.items() if k in own and k not in bad}
    model.load_state_dict(fitting, strict=False)
    return LoadResult(sorted(fitting), missing, unexpected, mismatched)


__all__ = ["SHARED_PACKAGES", "family_packages", "accepted_kwargs", "check_kwargs", "describe_load_error", "register", "build", "available", "load_checkpoint", "load_torchvision_checkpoint",
           "map_torchvision_keys", "LoadResult"]
