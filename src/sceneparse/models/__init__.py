"""sceneparse.models: the model zoo and the model-family contract.

``build(name, num_classes=..., weights=PATH)`` and ``available()`` come from :mod:`.zoo`;
:class:`SceneModel` / :class:`ModelInfo` from :mod:`.base` (what every family implements / declares).
"""
from .base import InferenceSettings, ModelInfo, SceneModel, SizePolicy, model_info
from .zoo import available, build, check_kwargs, load_checkpoint, register

__all__ = ["InferenceSettings", "ModelInfo", "SceneModel", "SizePolicy", "available", "build", "check_kwargs",
           "load_checkpoint", "model_info", "register"]
