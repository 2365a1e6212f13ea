"""The semantic models' explanation pictures (issue 29 s2): every view is drawn to a PNG for random-weight
small models, and the numbers in each Explanation's data are the model's modules' numbers."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sceneparse.errors import ConfigError
from sceneparse.models.segmentation import deeplabv3_resnet18, segnet, unet
from sceneparse.viz.explain import write_explanations


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _image(seed: int = 0, h: int = 72, w: int = 96) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(3, h // 8, w // 8, generator=g)
    return F.interpolate(base[None], size=(h, w), mode="bilinear")[0].clamp(0, 1)


SIZES = dict(num_classes=4, min_size=72, max_size=96)
MODELS = {"unet": (unet, dict(base_channels=8, depth=3)),
          "segnet": (segnet, dict(channels=(8, 16, 16), convs_per_stage=(1, 1, 1))),
          "deeplabv3_resnet18": (deeplabv3_resnet18, {})}  # the zoo's builders of these names


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: build(**SIZES, **kw).eval() for name, (build, kw) in MODELS.items()}


@pytest.fixture(scope="module")
def image():
    return _image()


@pytest.fixture(scope="module")
def explained(models, image):
    return {name: {v: m.explain(image, what=v)[0] for v in m.explain_views()} for name, m in models.items()}


def test_every_view_is_a_png(models, explained, tmp_path):
    assert models["unet"].explain_views() == ("probabilities", "upsampling")
    assert models["deeplabv3_resnet18"].explain_views() == ("probabilities", "aspp", "upsampling")
    for name, views in explained.items():
        paths = write_explanations(list(views.values()), tmp_path / name, name)
        assert [p.name for p in paths] == [f"{name}_semantic_{v}.png" for v in views]
        for p, e in zip(paths, views.values()):
            with Image.open(p) as im:
                assert im.format == "PNG" and im.size[0] > 300
            assert len(e.caption) > 150


def test_probabilities_are_predicts_scores(models, image, explained):
    for name, m in models.items():
        d = explained[name]["probabilities"].data
        res = m.predict([image], return_scores=True)[0]
        assert torch.allclose(d["scores"], res.scores, atol=1e-6)
        assert torch.equal(d["labels"], res.labels)
        assert torch.allclose(d["scores"].sum(0), torch.ones(image.shape[1:]), atol=1e-5)
        assert len(explained[name]["probabilities"].panels) == 4


def test_aspp_branches_are_the_aspps(models, image, explained):
    m = models["deeplabv3_resnet18"]
    d = explained["deeplabv3_resnet18"]["aspp"].data
    aspp = m.head.aspp
    assert d["rates"] == [6, 12, 18] and len(d["outputs"]) == 5
    with torch.no_grad():  # the branches, concatenated and projected, are what the ASPP returns in the forward
        fused = aspp.dropout(aspp.project(torch.cat(d["outputs"], 1)))
        trunk = m.backbone(m.prepare([image])[0].tensor)[-1]
    assert torch.equal(d["input"], trunk)
    assert torch.allclose(fused, d["output"], atol=1e-6)
    pool = d["outputs"][-1]
    assert torch.equal(pool, pool[..., :1, :1].expand_as(pool))  # image pooling: one vector everywhere
    h, w = trunk.shape[-2:]
    u, v = d["unit"]
    for taps, inside, r in zip(d["taps"][1:4], d["taps_inside"][1:4], d["rates"]):
        assert taps.shape == (9, 2) and torch.equal(taps[4], torch.tensor([u, v]))
        assert int(inside.sum()) == sum(0 <= u + a * r < w and 0 <= v + b * r < h for a in (-1, 0, 1)
                                        for b in (-1, 0, 1))


def test_upsampling_variants(models, image, explained):
    # SegNet: the view's max-unpooling is the first step of SegNet's own decoder
    m = models["segnet"]
    d = explained["segnet"]["upsampling"].data
    seen = {}
    hook = m.decoder[-1].register_forward_hook(lambda mod, i, o: seen.setdefault("in", i[0]))
    with torch.no_grad():
        m(m.prepare([image])[0])
    hook.remove()
    assert d["operand"] == "segnet" and not d["own_transposed"]
    with torch.no_grad():
        y = m.decoder[-1][0](d["unpooled"])  # decoder[-1] runs on max_unpool(pooled encoder features) (no convs before)
    assert torch.equal(seen["in"], d["unpooled"])
    x = d["input"]
    assert torch.equal(d["nearest"], F.interpolate(d["pooled"], size=x.shape[-2:], mode="nearest-exact"))
    assert torch.equal(d["bilinear"], F.interpolate(d["pooled"], size=x.shape[-2:], mode="bilinear",
                                                    align_corners=False))
    # max-unpooling: each pooled value back at its maximum, zeros elsewhere
    assert torch.equal(d["unpooled"].flatten(2).gather(2, d["indices"].flatten(2)), d["pooled"].flatten(2))
    assert int((d["unpooled"] != 0).sum()) <= d["pooled"].numel()
    assert y.shape[-2:] == x.shape[-2:]
    # the fresh transposed conv is FCN's bilinear upsampler: = bilinear away from the border
    assert torch.allclose(d["transposed"][..., 1:-1, 1:-1], d["bilinear"][..., 1:-1, 1:-1], atol=1e-5)
    # U-Net: its own pool and its own up-convolution
    u = explained["unet"]["upsampling"].data
    mu = models["unet"]
    assert u["operand"] == "unet" and u["own_transposed"]
    with torch.no_grad():
        assert torch.equal(u["pooled"], mu.pool(u["input"]))
        assert torch.equal(u["transposed"], mu.up[1](u["pooled"])[..., : u["input"].shape[-2], : u["input"].shape[-1]])


def test_options_are_checked(models, image):
    with pytest.raises(ConfigError, match="no explanation view 'aspp'"):
        models["unet"].explain(image, what="aspp")
    with pytest.raises(ConfigError, match="unknown option"):
        models["unet"].explain(image, what="probabilities", level=1)
    with pytest.raises(ConfigError, match="top_k"):
        models["unet"].explain(image, what="probabilities", top_k=0)


def test_nearest_overlays_draw_flat_cells():
    """The renderer's ``resample="nearest"`` (added for these views): each cell one flat colour."""
    import numpy as np

    from sceneparse.structures.explain import ColorScale, Panel, ScalarMap
    from sceneparse.viz.explain import render_panel

    values = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    black = np.zeros((40, 40, 3), dtype=np.uint8)
    flat = render_panel(Panel(black, overlay=ScalarMap(values, scale=ColorScale(0, 1), alpha=1.0, resample="nearest")))
    smooth = render_panel(Panel(black, overlay=ScalarMap(values, scale=ColorScale(0, 1), alpha=1.0)))
    q = flat[:, :400]  # the panel is drawn at 400 px (10 px per image pixel), colour bar on the right
    assert len(np.unique(q[5:195, 5:195].reshape(-1, 3), axis=0)) == 1  # one cell, one colour
    assert not np.array_equal(q[5:195, 5:195].reshape(-1, 3)[0], q[205:395, 5:195].reshape(-1, 3)[0])
    assert len(np.unique(smooth[5:195, 5:195].reshape(-1, 3), axis=0)) > 10
    with pytest.raises(ValueError, match="resample"):
        ScalarMap(values, resample="cubic")


def test_cli_explain_options(tmp_path, capsys):
    from sceneparse.cli import main

    out = tmp_path / "out"
    rc = main(["explain", "--model", "unet", "--random", "synthetic:1", "--imgsz", "64", "--what", "probabilities",
               "--top-k", "2", "--num-classes", "3", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    path = out / "synthetic1_semantic_probabilities.png"
    assert path.is_file() and text.startswith(f"{path}: Per-class probability maps")
    assert "the 2 classes with the highest mean probability (of 3)" in text
    assert main(["explain", "--model", "unet", "--random", "synthetic", "--imgsz", "64", "--level", "1",
                 "--out", str(out)]) == 1
    assert "got unknown option(s) ['level']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["explain", "--model", "unet", "--random", "synthetic", "--at", "1"])
    assert "expected 2 comma-separated numbers" in capsys.readouterr().err
