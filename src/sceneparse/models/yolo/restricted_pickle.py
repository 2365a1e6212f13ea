"""Reading pickled model objects as data: a restricted unpickler for checkpoints that hold whole
``nn.Module`` objects (ultralytics' ``.pt`` files: ``{'model': DetectionModel, 'ema': ..., ...}``).

``torch.load(weights_only=True)`` refuses such files, and ``weights_only=False`` would import the
classes they name and run whatever their pickle asks for. :func:`load_module_checkpoint` does
neither: inside torch's zip format (``torch.load(..., pickle_module=RESTRICTED)``, whose tensor
storages are torch's own persistent loads) the unpickler's ``find_class`` answers

* torch's tensor rebuild functions, dtypes, ``torch.Size``, ``collections.OrderedDict`` and a few plain
  builtins with the real objects (they only build tensors and containers);
* a class of an allowed package (``ultralytics.*``, ``torch.nn.modules.*`` and the plain-data
  helpers numpy / pathlib / types / argparse use to pickle scalars, paths and namespaces) with an
  inert :class:`Placeholder` subclass named after it: creating one records its arguments, its
  pickled state (a module's ``__dict__``: ``_parameters``, ``_buffers``, ``_modules``, attributes)
  lands in ``state``, and nothing of the named class is imported or run;
* anything else (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ``builtins.getattr``, ...)
  with :class:`~sceneparse.errors.CheckpointError` naming the global it refused.

:func:`module_state_dict` walks a placeholder tree into a flat ``{dotted.key: Tensor}`` state dict
(persistent buffers only, as ``nn.Module.state_dict`` does).
"""
from __future__ import annotations

import _compat_pickle
import collections
import os
import pickle
import types
import warnings
from typing import Any, Mapping

import torch

from ...errors import CheckpointError

#: module prefixes whose classes become inert placeholders
PLACEHOLDER_PREFIXES = ("ultralytics.", "torch.nn.modules.")
#: plain-data helpers (scalars, paths, namespaces) that also become placeholders
PLACEHOLDER_GLOBALS = frozenset({
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.dtype",
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", "numpy.ndarray",
    "pathlib.PosixPath", "pathlib.WindowsPath", "pathlib.Path", "types.SimpleNamespace", "argparse.Namespace",
})
#: real objects the unpickler hands out: tensor rebuilding and plain containers
_REAL_GLOBALS: dict[str, Any] = {
    "collections.OrderedDict": collections.OrderedDict,
    "builtins.set": set, "builtins.frozenset": frozenset, "builtins.slice": slice, "builtins.complex": complex,
    "builtins.bytearray": bytearray, "torch.Size": torch.Size, "torch.device": torch.device,
    "torch._utils._rebuild_tensor": torch._utils._rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
    "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": torch._utils._rebuild_parameter_with_state,
    "torch.nn.parameter.Parameter": torch.nn.Parameter,
    "torch.Tensor": torch.Tensor,
    "torch._tensor._rebuild_from_type_v2": torch._tensor._rebuild_from_type_v2,
}
try:  # how protocol-2 pickles write bytes
    import _codecs

    _REAL_GLOBALS["_codecs.encode"] = _codecs.encode
except ImportError:  # pragma: no cover
    pass


class Placeholder:
    """Inert stand-in for a class named in a checkpoint (subclassed once per name, see ``qualname``).

    ``args``: what the pickle passed when creating it; ``state``: what it set as the object's state
    (``__setstate__`` / ``BUILD``; a module's ``__dict__``)."""

    qualname: str = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "Placeholder":
        obj = object.__new__(cls)
        obj.__dict__["args"] = args
        obj.__dict__["state"] = None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # REDUCE calls the class: record, run nothing
        self.__dict__["args"] = args

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:  # SETITEM(S) on a dict subclass
        self.__dict__.setdefault("items", {})[key] = value

    def append(self, value: Any) -> None:  # APPEND(S) on a list subclass
        self.__dict__.setdefault("items", []).append(value)

    def extend(self, values: Any) -> None:
        self.__dict__.setdefault("items", []).extend(values)

    def __repr__(self) -> str:
        return f"<placeholder {self.qualname}>"

    @property
    def attributes(self) -> dict[str, Any]:
        """The recorded ``__dict__`` (``{}`` when the pickle set none)."""
        s = self.state
        if isinstance(s, tuple) and len(s) == 2:  # (dict state, slot state)
            s = s[0]
        return s if isinstance(s, dict) else {}


_PLACEHOLDERS: dict[str, type] = {}


def placeholder_class(qualname: str) -> type:
    """The (cached) placeholder class for ``module.Name``."""
    cls = _PLACEHOLDERS.get(qualname)
    if cls is None:
        cls = type(qualname.rsplit(".", 1)[-1], (Placeholder,), {"qualname": qualname, "__module__": __name__})
        _PLACEHOLDERS[qualname] = cls
    return cls


_PY2_MODULES = frozenset(m for m, _ in _compat_pickle.NAME_MAPPING) | frozenset(_compat_pickle.IMPORT_MAPPING)


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals are the allow-list above (see the module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        if module in _PY2_MODULES:  # protocol-2 pickles (torch.save's) name Python 2 modules, e.g. __builtin__.set
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        qual = f"{module}.{name}"
        real = _REAL_GLOBALS.get(qual)
        if real is not None:
            return real
        if module == "torch" and isinstance(getattr(torch, name, None), (torch.dtype, torch.layout,
                                                                         torch.memory_format)):
            return getattr(torch, name)
        if qual.startswith(PLACEHOLDER_PREFIXES) or qual in PLACEHOLDER_GLOBALS:
            return placeholder_class(qual)
        raise CheckpointError(f"the checkpoint's pickle asks for the global {qual}, which sceneparse refuses: "
                              "it reads checkpoints as data (tensors, containers, inert stand-ins for model "
                              "classes) and never imports or runs what a file names")


#: a ``pickle_module`` for ``torch.load``: its ``Unpickler`` is :class:`RestrictedUnpickler`
RESTRICTED = types.ModuleType("sceneparse_restricted_pickle")
RESTRICTED.Unpickler = RestrictedUnpickler
RESTRICTED.load = lambda f, **kw: RestrictedUnpickler(f, **kw).load()
RESTRICTED.__dict__["UnpicklingError"] = pickle.UnpicklingError


def load_module_checkpoint(path: str | os.PathLike) -> Any:
    """Read a torch zip checkpoint that may hold pickled modules, as data (see the module docstring).
    Raises :class:`CheckpointError` naming the file (and the refused global, if that is why)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError("checkpoint file not found", path=path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", pickle_module=RESTRICTED, weights_only=False)
    except CheckpointError as e:
        raise CheckpointError(str(e), path=path) from None
    except Exception as e:  # zip / pickle damage
        raise CheckpointError(f"cannot read the checkpoint ({type(e).__name__}: {str(e)[:200]})", path=path) from e


def is_module_placeholder(obj: Any) -> bool:
    """A placeholder recorded with a module's state (``_parameters`` / ``_modules``)."""
    return isinstance(obj, Placeholder) and "_modules" in obj.attributes


def module_state_dict(root: Placeholder, prefix: str = "") -> dict[str, torch.Tensor]:
    """``nn.Module.state_dict()`` of a placeholder module tree: parameters and persistent buffers,
    dotted keys, tensors as stored (no dtype change)."""
    out: dict[str, torch.Tensor] = {}
    stack = [(prefix, root)]
    while stack:
        pre, node = stack.pop()
        attrs = node.attributes
        for k, v in (attrs.get("_parameters") or {}).items():
            if v is not None:
                out[pre + k] = v.detach() if isinstance(v, torch.Tensor) else v
        skip = attrs.get("_non_persistent_buffers_set") or set()
        for k, v in (attrs.get("_buffers") or {}).items():
            if v is not None and k not in skip:
                out[pre + k] = v
        children = attrs.get("_modules") or {}
        for k, v in reversed(list(children.items())):
            if isinstance(v, Placeholder):
                stack.append((f"{pre}{k}.", v))
    return dict(sorted(out.items(), key=lambda kv: _natural(kv[0])))


def _natural(key: str) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in key.split("."))


def plain(obj: Any, depth: int = 0) -> Any:
    """``obj`` with placeholders of plain data replaced where it is cheap (numpy scalars -> ``None``,
    paths / namespaces -> their recorded arguments / attributes); containers recursively."""
    if depth > 20:
        return None
    if isinstance(obj, Mapping):
        return {k: plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v, depth + 1) for v in obj) if not hasattr(obj, "_fields") else obj
    if isinstance(obj, Placeholder):
        if obj.qualname.startswith("pathlib."):
            return os.path.join(*[str(a) for a in obj.args]) if obj.args else ""
        if obj.qualname in ("types.SimpleNamespace", "argparse.Namespace") or obj.qualname.endswith("Namespace"):
            return plain(obj.attributes, depth + 1)
        return None if not is_module_placeholder(obj) else obj
    return obj


__all__ = ["PLACEHOLDER_GLOBALS", "PLACEHOLDER_PREFIXES", "Placeholder", "RESTRICTED", "RestrictedUnpickler",
           "is_module_placeholder", "load_module_checkpoint", "module_state_dict", "placeholder_class", "plain"]
