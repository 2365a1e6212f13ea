"""Tensors as arguments without importing torch: ``sceneparse.evaluation`` scores JSON files and PNGs
with numpy only, so that ``import sceneparse.evaluation`` does not pay for torch (~1 s). A tensor (or
a :mod:`sceneparse.structures` object holding one) can only be passed once its caller has imported
torch; so torch is looked up in ``sys.modules``, never imported here.
"""
from __future__ import annotations

import sys

import numpy as np


def loaded_torch():
    """The ``torch`` module if something has imported it, else ``None`` (then nothing is a tensor)."""
    return sys.modules.get("torch")


def is_tensor(x) -> bool:
    torch = loaded_torch()
    return torch is not None and isinstance(x, torch.Tensor)


def to_numpy(x) -> np.ndarray:
    """A tensor (any device) or array-like as a numpy array."""
    return x.detach().cpu().numpy() if is_tensor(x) else np.asarray(x)


__all__ = ["is_tensor", "loaded_torch", "to_numpy"]
