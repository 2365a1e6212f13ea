import math
import random

import numpy as np
import pytest
import torch

from sceneparse.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from sceneparse.engine.ema import ModelEMA
from sceneparse.engine.schedule import lr_factor
from sceneparse.errors import CheckpointError


def test_lr_factor_warmup_cosine_step():
    assert lr_factor(0, total_iters=100, warmup_iters=10, warmup_factor=0.1) == pytest.approx(0.1)
    # halfway through warm-up: linear between 0.1 and 1, times cosine(5/100)
    exp = (0.1 * 0.5 + 0.5) * 0.5 * (1 + math.cos(math.pi * 5 / 100))
    assert lr_factor(5, total_iters=100, warmup_iters=10, warmup_factor=0.1) == pytest.approx(exp)
    assert lr_factor(100, total_iters=100) == pytest.approx(0.0)
    kw = dict(total_iters=100, schedule="step", steps=(2, 4), gamma=0.1, iters_per_epoch=10)
    assert [lr_factor(i, **kw) for i in (19, 20, 39, 40)] == pytest.approx([1, 0.1, 0.1, 0.01])
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor(0, total_iters=1, schedule="poly")


def test_ema_tracks_weights():
    m = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(m.weight)
    ema = ModelEMA(m, decay=0.5, tau=1e-9)  # decay ~0.5 from the first step
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema.update(m)
    assert torch.allclose(ema.ema.weight, torch.full((1, 2), 0.5))
    ema.update(m)
    assert torch.allclose(ema.ema.weight, torch.full((1, 2), 0.75))


def test_checkpoint_round_trip_and_errors(tmp_path):
    from sceneparse.models import zoo

    m = zoo.build("unet", num_classes=1, base_channels=4, depth=2)  # save_checkpoint stores a SceneModel's info
    p = tmp_path / "ck.pt"
    save_checkpoint(p, m, config={"a": 1}, categories=[{"id": 1, "name": "x"}], epoch=3)
    ck = load_checkpoint(p)
    assert ck["epoch"] == 3 and ck["categories"][0]["name"] == "x" and "sceneparse_version" in ck
    assert ck.keys() >= {"info", "task"} and all(torch.equal(v, m.state_dict()[k]) for k, v in ck["model"].items())
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weight": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a sceneparse checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")


def test_rng_state_round_trip_through_weights_only(tmp_path):
    random.seed(1); np.random.seed(2); torch.manual_seed(3)
    st = rng_state()
    torch.save(st, tmp_path / "r.pt")
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(torch.load(tmp_path / "r.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_model_from_checkpoint_rebuilds_the_same_model(tmp_path):
    import pytest
    from sceneparse.engine.checkpoint import model_from_checkpoint, save_checkpoint
    from sceneparse.errors import CheckpointError
    from sceneparse.models import zoo

    torch.manual_seed(0)
    model = zoo.build("unet", num_classes=3, base_channels=8).eval()
    cats = [{"id": 5, "name": "a"}, {"id": 7, "name": "b"}, {"id": 9, "name": "c"}]
    cfg = {"model": {"name": "unet", "kwargs": {"base_channels": 8}}}
    save_checkpoint(tmp_path / "m.pt", model, config=cfg, categories=cats, task="semantic")
    loaded = model_from_checkpoint(tmp_path / "m.pt")
    assert loaded.task == "semantic" and loaded.class_names == ["a", "b", "c"]
    images = [torch.rand(3, 32, 32)]
    with torch.no_grad():
        a = model(model.prepare(images)[0]).logits
        b = loaded.model(loaded.model.prepare(images)[0]).logits
    assert a.shape[1] == 3 and torch.equal(a, b)
    save_checkpoint(tmp_path / "bad.pt", model, config={"model": {}}, categories=cats)
    with pytest.raises(CheckpointError, match="config.model.name"):
        model_from_checkpoint(tmp_path / "bad.pt")
