"""The weights the demo ships and starts from: they load into the recipe's model (every key, every
shape), say how they were made, survive the int8 packing, and score above a floor on synthetic scenes
of a seed that neither they nor the demo trained on."""
from __future__ import annotations

import pytest
import torch

from sceneparse.cli.demo_cmd import RECIPES, WEIGHTS_DIR, pack_weights, read_shipped_weights, unpack_weights
from sceneparse.data.datasets import SceneDataset
from sceneparse.data.layout import load_split
from sceneparse.data.synthetic import SyntheticConfig, write_dataset
from sceneparse.engine.evaluator import evaluate_model
from sceneparse.models import zoo

SHIPPED = {name: r for name, r in RECIPES.items() if r.init_weights}
#: held-out floors on 24 scenes of seed 7 at 256 px: well below what the files scored on their own held-out
#: scenes (their ``meta["held_out"]``), well above what random weights give (0.0)
FLOORS = {"maskrcnn_resnet18_fpn": {"bbox_AP": 0.25, "segm_AP": 0.20}, "unet": {"miou": 0.50}}


def _build(name: str):
    recipe = SHIPPED[name]
    state, meta = read_shipped_weights(recipe.init_weights)
    kwargs = {"min_size": recipe.size, "max_size": recipe.size, **recipe.model_kwargs}
    model = zoo.build(name, num_classes=len(meta["class_names"]), **kwargs)
    missing, unexpected = model.load_state_dict(state, strict=False)
    return model, state, meta, missing, unexpected


def test_the_demo_models_have_shipped_weights():
    assert set(SHIPPED) == {"maskrcnn_resnet18_fpn", "unet"}
    for r in SHIPPED.values():
        assert (WEIGHTS_DIR / r.init_weights).is_file()
        assert (WEIGHTS_DIR / r.init_weights).stat().st_size < 8_000_000  # int8: a package, not a download


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_shipped_weights_load_say_how_they_were_made_and_score_above_a_floor(name, tmp_path):
    model, state, meta, missing, unexpected = _build(name)
    assert not missing and not unexpected
    # the record: the commands that made them, on a data seed the demo does not draw by default
    assert meta["model"] == name and meta["data_seed"] != 0 and meta["iterations"] > 0
    assert any(c.startswith(f"sceneparse train --model {name}") for c in meta["commands"])
    assert meta["held_out"] and meta["train_seconds"] > 0
    # scored on scenes of a third seed
    write_dataset(tmp_path, SyntheticConfig(height=256, width=256, num_images=24, val_fraction=1.0, seed=7),
                  splits={"val": 24}, progress=False, workers=1)
    semantic = name == "unet"
    aset = load_split(tmp_path, "val", "semantic" if semantic else "instances", things_only=not semantic)
    ds = SceneDataset(aset, load_masks=not semantic, load_keypoints=False, load_semantic=semantic)
    report = evaluate_model(model, ds, batch_size=4, progress=False)
    for metric, floor in FLOORS[name].items():
        assert report.metrics[metric] >= floor, (metric, report.metrics[metric])


def test_packing_rounds_weights_by_at_most_half_a_step_per_channel():
    g = torch.Generator().manual_seed(0)
    state = {"conv.weight": torch.randn(8, 4, 3, 3, generator=g) * torch.linspace(0.01, 2, 8)[:, None, None, None],
             "bn.weight": torch.randn(8, generator=g), "bn.num_batches_tracked": torch.tensor(5)}
    back = unpack_weights(pack_weights(state, {"what": "test"}))
    step = state["conv.weight"].abs().amax((1, 2, 3)) / 127
    err = (back["conv.weight"] - state["conv.weight"]).abs().amax((1, 2, 3))
    assert (err <= step / 2 + 1e-7).all()
    assert torch.allclose(back["bn.weight"], state["bn.weight"], atol=1e-3)  # float16
    assert back["bn.num_batches_tracked"].item() == 5 and back["bn.num_batches_tracked"].dtype == torch.int64
