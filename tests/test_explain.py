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


# ---- models and images ----------------------------------------------------------------------------
SMALL_DETR = dict(dim=64, heads=8, ffn_dim=128, encoder_layers=2, decoder_layers=2, num_queries=20,
                  min_size=96, max_size=128)


@pytest.fixture(scope="module")
def centernet():
    from sceneparse.data.synthetic import THING_NAMES
    from sceneparse.models.centernet import centernet_resnet18

    torch.manual_seed(0)
    m = centernet_resnet18(num_classes=len(THING_NAMES), min_size=128, max_size=128).eval()
    with torch.no_grad():  # spread the heatmap so that peaks and sizes differ visibly (random weights)
        m.heatmap_head[-1].bias.copy_(torch.linspace(-3.0, -1.0, len(THING_NAMES)))
        m.size_head[-1].bias.fill_(6.0)
    m.class_names = tuple(THING_NAMES)
    return m


@pytest.fixture(scope="module")
def detr():
    from sceneparse.models.detr import detr_resnet18

    torch.manual_seed(1)
    return detr_resnet18(num_classes=3, **SMALL_DETR).eval()


def _synthetic(seed: int = 0, size: int = 160) -> torch.Tensor:
    from sceneparse.data.images import pixels_to_tensor
    from sceneparse.data.synthetic import SyntheticConfig, generate_scene, image_rng

    return pixels_to_tensor(generate_scene(image_rng(seed, 0), SyntheticConfig(height=size, width=size)).image)


def _photo() -> torch.Tensor:
    """A photo-sized (480 x 640) natural-looking image: smooth gradients, blobs and noise."""
    g = torch.Generator().manual_seed(3)
    y, x = torch.meshgrid(torch.linspace(0, 1, 480), torch.linspace(0, 1, 640), indexing="ij")
    img = torch.stack([0.3 + 0.5 * y, 0.5 + 0.3 * torch.sin(6 * x), 0.7 - 0.4 * x])
    for cx, cy, r, c in ((0.3, 0.6, 0.12, (0.9, 0.2, 0.1)), (0.7, 0.4, 0.2, (0.1, 0.3, 0.8))):
        blob = ((x - cx) ** 2 + (y - cy) ** 2 < r * r).float()
        img = img * (1 - blob) + blob * torch.tensor(c)[:, None, None]
    return (img + 0.03 * torch.randn(img.shape, generator=g)).clamp(0, 1)


def _png_ok(path, min_size):
    from PIL import Image

    assert path.is_file() and path.suffix == ".png"
    with Image.open(path) as im:
        assert im.mode == "RGB" and im.width >= min_size[1] and im.height >= min_size[0], im.size


# ---- CenterNet ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("image_kind", ["synthetic", "photo"])
def test_centernet_peaks_drawn_are_predicts_detections(centernet, image_kind, tmp_path):
    from sceneparse.viz import write_explanations

    image = _synthetic() if image_kind == "synthetic" else _photo()
    expl = centernet.explain(image, conf=0.1, max_det=25)
    assert [e.name for e in expl] == ["centernet_heatmap", "centernet_sizes"]
    r = centernet.predict([image], conf=0.1, max_det=25)[0]
    assert 0 < len(r) <= 25
    heat, sizes = expl
    d = heat.data
    # exactly predict's detections, same order, same scores, labels and boxes
    assert torch.equal(d["scores"], r.scores) and torch.equal(d["labels"], r.labels) and torch.equal(d["boxes"], r.boxes)
    assert d["scores"].tolist() == sorted(d["scores"].tolist(), reverse=True)
    panel = heat.panels[0]
    assert len(panel.points) == len(r)
    for i, p in enumerate(panel.points):
        assert p.xy == pytest.approx(tuple(d["points"][i].tolist()))
        assert p.label_index == int(r.labels[i])
        if p.label:
            assert p.label.startswith(f"{i + 1}: {centernet.class_names[int(r.labels[i])]} {float(r.scores[i]):.2f}")
    # the marks are the decoder's geometry: point = cell * R / scale, centre + offset, centre +- size / 2 = box
    (sy, sx), R = centernet.prepare([image])[0].scales[0], d["stride"]
    assert torch.allclose(d["points"], d["cells"].float() * R / torch.tensor([sx, sy]), atol=1e-4)
    assert torch.allclose(d["centers"], (d["cells"].float() + d["offsets"]) * R / torch.tensor([sx, sy]), atol=1e-4)
    half = d["sizes"] * R / torch.tensor([sx, sy]) / 2
    h, w = image.shape[1:]
    box = torch.cat([d["centers"] - half, d["centers"] + half], 1)
    box = torch.stack([box[:, 0].clamp(0, w), box[:, 1].clamp(0, h), box[:, 2].clamp(0, w), box[:, 3].clamp(0, h)], 1)
    assert torch.allclose(box, r.boxes, atol=1e-3)
    arrows = sizes.panels[0].arrows
    assert len(arrows) == 5 * len(r)  # offset + four half-size vectors per peak
    for i in range(len(r)):
        off, right = arrows[5 * i], arrows[5 * i + 1]
        assert off.start == pytest.approx(tuple(d["points"][i].tolist()), abs=1e-4)
        assert off.end == pytest.approx(tuple(d["centers"][i].tolist()), abs=1e-4)
        assert right.end[0] - right.start[0] == pytest.approx(float(half[i, 0]), abs=1e-3)
    assert [b.box for b in sizes.panels[1].boxes] == [tuple(b) for b in r.boxes.tolist()]
    paths = write_explanations(expl, tmp_path, image_kind)
    assert [p.name for p in paths] == [f"{image_kind}_centernet_heatmap.png", f"{image_kind}_centernet_sizes.png"]
    for p in paths:
        _png_ok(p, image.shape[1:] if image_kind == "photo" else (400, 400))


def test_centernet_one_view_and_unknown_view(centernet):
    image = _synthetic(1, 96)
    assert [e.name for e in centernet.explain(image, what="sizes", max_det=3)] == ["centernet_sizes"]
    empty = centernet.explain(image, what="sizes", conf=0.99)[0]  # no peak above the threshold: empty marks
    assert len(empty.data["scores"]) == 0 and empty.panels[0].arrows == () and empty.panels[1].boxes == ()
    with pytest.raises(ConfigError, match="no explanation view 'corners'; its views: heatmap, sizes"):
        centernet.explain(image, what="corners")
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['query'\]"):
        centernet.explain(image, query=3)
    with pytest.raises(ConfigError, match=r"float image \[3, H, W\]"):
        centernet.explain(torch.zeros(3, 8, 8, dtype=torch.uint8))
    centernet.train()
    centernet.explain(image, what="heatmap", max_det=2)
    assert centernet.training  # the mode is restored
    centernet.eval()


# ---- DETR --------------------------------------------------------------------------------------------
def _naive_cross_attention(layer, q_in, k_in, padding):
    """The cross-attention weights by torch's own multi-head attention (need_weights, per head)."""
    attn = layer.cross_attn
    D = attn.dim
    _, w = torch.nn.functional.multi_head_attention_forward(
        q_in.transpose(0, 1), k_in.transpose(0, 1), k_in.transpose(0, 1), D, attn.heads, attn.in_proj_weight,
        attn.in_proj_bias, None, None, False, 0.0, attn.out_proj.weight, attn.out_proj.bias, training=False,
        key_padding_mask=padding, need_weights=True, average_attn_weights=False)
    return w


def test_detr_attention_capture_changes_nothing_and_is_a_distribution(detr):
    images = [_synthetic(2, 128), _photo()[:, :200, :150]]  # two sizes: a padded batch
    batch, _ = detr.prepare(images)
    with torch.no_grad():
        plain = detr(batch)
        seen = detr(batch, attention=True)
    assert plain.cross_attention is None
    assert torch.equal(plain.logits, seen.logits) and torch.equal(plain.boxes, seen.boxes)  # bit-identical
    att = seen.cross_attention  # [L, B, heads, N, h, w]
    L, B, H, N = att.shape[:4]
    assert (L, B, H, N) == (2, 2, 8, 20)
    assert torch.allclose(att.sum((-2, -1)), torch.ones(L, B, H, N), atol=1e-5)
    feat = detr.backbone(batch.tensor)[-1]
    valid = torch.nn.functional.interpolate(detr.valid_mask(batch)[None].float(), size=feat.shape[-2:])[0].bool()
    assert not valid.all() and (att.permute(1, 0, 2, 3, 4, 5)[~valid[:, None, None, None].expand_as(
        att.permute(1, 0, 2, 3, 4, 5))] == 0).all()  # padding cells get no attention
    # the weights are those of torch's multi-head attention on the same projections (last layer)
    from sceneparse.models.detr.transformer import sine_position_encoding

    with torch.no_grad():
        src = detr.input_proj(feat)
        pos = sine_position_encoding(valid, src.shape[1] // 2)
        x, p = src.flatten(2).transpose(1, 2), pos.flatten(2).transpose(1, 2)
        padding = ~valid.flatten(1)
        memory = detr.transformer.encoder(x, p, padding)
        qp = detr.query_embed.weight[None].expand(B, -1, -1)
        t = torch.zeros_like(qp)
        layers = detr.transformer.decoder.layers
        for layer in layers[:-1]:
            t = layer(t, memory, p, qp, padding)
        last = layers[-1]
        t1 = last.norm1(t + last.self_attn(t + qp, t + qp, t))
        ref = _naive_cross_attention(last, t1 + qp, memory + p, padding)
    assert torch.allclose(att[-1].flatten(-2), ref, atol=1e-5)


@pytest.mark.parametrize("image_kind", ["synthetic", "photo"])
def test_detr_views_show_predicts_numbers(detr, image_kind, tmp_path):
    from sceneparse.viz import write_explanations

    image = _synthetic(4) if image_kind == "synthetic" else _photo()
    expl = detr.explain(image)
    assert [e.name for e in expl] == ["detr_queries", "detr_attention"]
    r = detr.predict([image], conf=0.0, max_det=100)[0]  # every query, in query order
    queries, attention = expl
    d = queries.data
    assert len(r) == 20 and torch.equal(d["boxes"], r.boxes) and torch.equal(d["scores"], r.scores)
    marks = queries.panels[0].boxes
    assert len(marks) == 20  # every query's box
    by_box = {m.box: m for m in marks}
    for i in range(20):
        m = by_box[tuple(r.boxes[i].tolist())]
        assert m.value == pytest.approx(float(r.scores[i]))
        assert (m.alpha < 1) == bool(d["no_object"][i])
    assert torch.equal(d["no_object"], d["probs"].argmax(-1) == 3)
    a = attention.data
    q = a["query"]
    assert q == int(r.scores.argmax())  # default: the highest-scoring query
    assert torch.equal(a["box"], r.boxes[q]) and float(a["score"]) == float(r.scores[q])
    assert float(a["attention"].sum()) == pytest.approx(1.0, abs=1e-5)
    panel = attention.panels[0]
    assert panel.boxes[0].box == tuple(r.boxes[q].tolist())
    assert panel.overlay.values.shape == a["grid"] and panel.overlay.extent[2:] == pytest.approx(
        (image.shape[2], image.shape[1]), rel=0.02)
    chosen = detr.explain(image, what="attention", query=7)[0]
    assert chosen.data["query"] == 7 and torch.equal(chosen.data["box"], r.boxes[7])
    with pytest.raises(ConfigError, match="query index 0..19"):
        detr.explain(image, what="attention", query=20)
    paths = write_explanations(expl, tmp_path, image_kind)
    for p in paths:
        _png_ok(p, image.shape[1:] if image_kind == "photo" else (400, 400))


# ---- the renderer and the Python entry point -----------------------------------------------------------
def test_render_draws_overlay_marks_and_caption(tmp_path):
    from sceneparse.viz.explain import render_explanation, render_panel

    img = np.full((50, 100, 3), 128, np.uint8)
    values = np.zeros((5, 10), np.float32)
    values[0, 0] = 1.0  # the top-left cell only
    plain = render_panel(Panel(img, ""))
    over = render_panel(Panel(img, "", overlay=ScalarMap(values, scale=ColorScale(0, 1, "viridis"))))
    s = plain.shape[0] / 50  # enlarged to a 400 px short side
    assert s == 8 and plain.shape[1] == 800  # no colour bar without a scale
    assert over.shape[1] > 800  # + the colour bar
    top_left, bottom_right = over[int(5 * s), int(5 * s)], over[int(45 * s), int(95 * s)]
    assert not np.array_equal(top_left, bottom_right)
    box = render_panel(Panel(img, "", boxes=[BoxMark(box=(10, 10, 20, 20), color=(255, 0, 0))]))
    assert (box[int(10 * s), int(15 * s)] == (255, 0, 0)).all()  # the outline, at the scaled place
    assert (box[int(15 * s), int(15 * s)] == 128).all()  # inside: the image
    e = Explanation("t", "Title", "word " * 200, [Panel(img, "a"), Panel(img, "b")])
    pic = render_explanation(e)
    assert pic.shape[1] >= 2 * 800 and pic.shape[0] > 400 + 100  # side by side, several caption lines


def test_python_entry_point_writes_pngs(centernet, tmp_path):
    import sceneparse.viz as viz
    from PIL import Image

    f = tmp_path / "photo.jpg"
    Image.fromarray((_photo()[:, :120, :160].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(f)
    paths = viz.explain(centernet, f, "heatmap", out=tmp_path / "out", max_det=5)
    assert [p.name for p in paths] == ["photo_centernet_heatmap.png"]
    _png_ok(paths[0], (400, 400))
    with pytest.raises(ConfigError, match="PlainDetector has no explanation views"):
        viz.explain(_plain_model(), torch.rand(3, 16, 16), out=tmp_path)


# ---- the command line ----------------------------------------------------------------------------------
def test_cli_explain_zoo_name_and_checkpoint(detr, tmp_path, capsys):
    from sceneparse.cli import main
    from sceneparse.engine.checkpoint import save_checkpoint

    out = tmp_path / "out"
    rc = main(["explain", "--model", "centernet_resnet18", "--random", "synthetic:1", "--imgsz", "128",
               "--max-det", "5", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    for view in ("heatmap", "sizes"):
        path = out / f"synthetic1_centernet_{view}.png"
        _png_ok(path, (400, 400))
        assert f"{path}: CenterNet" in text
    ckpt = tmp_path / "detr.pt"
    save_checkpoint(ckpt, detr, config={"model": {"name": "detr_resnet18", "kwargs": SMALL_DETR}},
                    categories=[{"id": i + 1, "name": n} for i, n in enumerate(("a", "b", "c"))])
    rc = main(["explain", "--model", str(ckpt), "synthetic:2", "--what", "attention", "--query", "4",
               "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert text.startswith(f"{out / 'synthetic2_detr_attention.png'}: DETR's decoder") and "query 4" in text


def test_cli_explain_errors_name_the_file(tmp_path, capsys):
    from sceneparse.cli import main

    assert main(["explain", "--model", "centernet_resnet18", "synthetic"]) == 1
    assert "give --weights FILE to load weights, or --random" in capsys.readouterr().err
    missing = tmp_path / "nope.jpg"
    assert main(["explain", "--model", "centernet_resnet18", "--random", str(missing), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err and "not found" in err
    assert main(["explain", "--model", str(tmp_path / "gone.pt"), "synthetic"]) == 1
    assert f"{tmp_path / 'gone.pt'}: --model: checkpoint file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["explain", "--model", str(bad), "synthetic"]) == 1
    assert str(bad) in capsys.readouterr().err
    assert main(["explain", "--model", "centernet_resnet18", "--random", "synthetic", "--query", "1",
                 "--imgsz", "64", "--out", str(tmp_path)]) == 1
    assert "centernet_resnet18: CenterNet.explain got unknown option(s) ['query']" in capsys.readouterr().err
