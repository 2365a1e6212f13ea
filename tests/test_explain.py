"""Explanation pictures (issue 27 s5, issue 29 s2): the interface (structures/explain.py, SceneModel.explain),
the renderer (viz/explain.py), the CLI (sceneparse explain), and the CenterNet / DETR views with their numbers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sceneparse.errors import ConfigError
from sceneparse.structures.explain import (ArrowMark, BoxMark, ColorScale, Explanation, Panel, PointMark, ScalarMap,
                                           SegmentMark, TextMark, as_rgb8)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- the interface ------------------------------------------------------------------------------
def test_panel_converts_images_and_checks_marks():
    t = torch.rand(3, 20, 30)
    p = Panel(t, "t", boxes=[BoxMark(box=torch.tensor([1.0, 2.0, 5.0, 9.0]), label="a")])
    assert p.image.dtype == np.uint8 and p.image.shape == (20, 30, 3) and p.size == (20, 30)
    assert np.array_equal(p.image, as_rgb8(t.permute(1, 2, 0).numpy()))
    assert p.boxes[0].box == (1.0, 2.0, 5.0, 9.0)
    with pytest.raises(TypeError, match="BoxMark"):
        Panel(t, boxes=[PointMark(xy=(1, 2))])
    with pytest.raises(ValueError, match="finite"):
        BoxMark(box=(0, 0, float("nan"), 1))
    with pytest.raises(ValueError, match="alpha"):
        PointMark(xy=(1, 1), alpha=2)
    with pytest.raises(ValueError, match="colour"):
        ArrowMark(start=(0, 0), end=(1, 1), color=(300, 0, 0))
    with pytest.raises(ValueError, match="shape"):
        Panel(np.zeros((4, 5, 2)))


def test_scalar_map_and_explanation_checks():
    m = ScalarMap(torch.arange(6.0).view(2, 3))
    assert m.values.dtype == np.float32 and m.scale == ColorScale(0.0, 5.0)
    assert ColorScale(0, 2).normalise(np.array([-1.0, 1.0, 3.0])).tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="2-D"):
        ScalarMap(np.zeros(5))
    with pytest.raises(ValueError, match="extent"):
        ScalarMap(np.zeros((2, 2)), extent=(0, 0, 0, 1))
    panel = Panel(np.zeros((8, 8, 3), np.uint8), segments=[SegmentMark(start=(0, 0), end=(4, 4), label="d")],
                  texts=[TextMark(xy=(1, 1), label="x")])
    e = Explanation("a_b", "T", "C", [panel], {"k": 1})
    assert e.panels == (panel,) and e.data == {"k": 1}
    with pytest.raises(ValueError, match="file-name-safe"):
        Explanation("a/b", "T", "C", [panel])
    with pytest.raises(ValueError, match="Panel"):
        Explanation("a", "T", "C", [])


def _plain_model():
    from sceneparse.models.base import ModelInfo, SceneModel

    class PlainDetector(SceneModel):
        """A model that declares no explanation views (the base class's defaults)."""

        @property
        def info(self) -> ModelInfo:
            return ModelInfo("detect", 2, iou_types=("bbox",))

    return PlainDetector()


def test_model_without_views_raises_a_named_error():
    model = _plain_model()
    assert model.explain_views() == () and model.explain_options() == ()
    with pytest.raises(ConfigError, match="PlainDetector has no explanation views"):
        model.explain(torch.rand(3, 32, 32))
