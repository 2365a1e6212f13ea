import colorsys
import csv

import numpy as np
import pytest
import torch
from PIL import Image

from sceneparse.structures import Instances, PanopticMap, SegmentInfo, SemanticMap
from sceneparse.viz.colors import class_color, class_colors, instance_shades, palette, text_color
from sceneparse.viz.draw import (LEFT_COLOR, detections_to_draw, draw_heatmaps, draw_instances, draw_legend,
                                 draw_panoptic, draw_semantic, save_image, tile, to_uint8_image)
from sceneparse.viz.plots import (confusion_figure, draw_series, error_figure, plot_class_iou, plot_curves,
                                  plot_label_stats, plot_pr_curves, plot_threshold_sweep, pr_figure, read_csv_series)

H, W = 100, 120
NAMES = ["person", "car", "dog"]


def black():
    return np.zeros((H, W, 3), dtype=np.uint8)


def rect(y0, y1, x0, x1):
    m = torch.zeros(H, W, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def half(c):
    return np.round(0.5 * np.asarray(c, dtype=np.float64)).astype(np.uint8)


# ---- colours -------------------------------------------------------------------------------
def test_palette_is_golden_ratio_hsv_and_stable():
    ref = []
    for k in range(40):
        s = 0.75 if (k // 6) % 2 == 0 else 0.55
        v = 0.95 if (k // 12) % 2 == 0 else 0.75
        ref.append([round(c * 255) for c in colorsys.hsv_to_rgb((0.08 + k * 0.6180339887498949) % 1.0, s, v)])
    assert np.abs(palette(40).astype(int) - np.array(ref)).max() <= 1
    assert class_color(7) == tuple(int(c) for c in palette(8)[7]) == class_color(7)
    p = palette(20).astype(float)
    d = np.sqrt(((p[:, None] - p[None]) ** 2).sum(-1)) + np.eye(20) * 1e9
    assert d.min() > 40  # the first 20 classes are far apart in RGB
    over = class_colors(3, [[1, 2, 3]])
    assert over[0].tolist() == [1, 2, 3] and over[1].tolist() == list(class_color(1))


def test_instance_shades_and_text_color():
    s = instance_shades((200, 50, 50), 5)
    assert s[0].tolist() == [200, 50, 50]
    assert len({tuple(c) for c in s.tolist()}) == 5
    assert s[1].tolist() == [208, 81, 81]  # 0.45 / 3 of the way to white
    assert s[2].tolist() == [170, 42, 42]  # 0.45 / 3 of the way to black
    assert text_color((255, 255, 0)) == (0, 0, 0) and text_color((0, 0, 128)) == (255, 255, 255)


# ---- instances -----------------------------------------------------------------------------
def test_draw_instances_mask_alpha_outline_box_and_threshold():
    inst = Instances((H, W), boxes=torch.tensor([[30.0, 20.0, 90.0, 60.0], [5.0, 70.0, 40.0, 95.0]]),
                     labels=torch.tensor([1, 2]), scores=torch.tensor([0.9, 0.2]),
                     masks=torch.stack([rect(20, 60, 30, 90), rect(70, 95, 5, 40)]))
    out = draw_instances(black(), inst, NAMES, score_threshold=0.5, alpha=0.5)
    c1 = class_color(1)
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    assert out[40, 60].tolist() == half(c1).tolist()  # inside the mask: 50 % of the class colour
    assert out[59, 60].tolist() == list(c1)  # mask outline / box edge: solid class colour
    assert out[40, 30].tolist() == list(c1)
    assert out[80, 20].tolist() == [0, 0, 0]  # score 0.2 < 0.5: not drawn at all
    assert out[62, 100].tolist() == [0, 0, 0]
    assert (out[:20, 30:90] != 0).any()  # the label "car 0.90" sits above the box
    everything = draw_instances(black(), inst, NAMES, alpha=0.5, show_labels=False)
    assert everything[80, 20].tolist() == half(class_color(2)).tolist()
    with pytest.raises(ValueError, match="image is"):
        draw_instances(np.zeros((10, 10, 3), np.uint8), inst, NAMES)


def test_higher_scores_are_drawn_on_top():
    inst = Instances((H, W), boxes=torch.tensor([[10.0, 10.0, 60.0, 60.0], [30.0, 30.0, 90.0, 90.0]]),
                     labels=torch.tensor([0, 1]), scores=torch.tensor([0.95, 0.6]),
                     masks=torch.stack([rect(10, 60, 10, 60), rect(30, 90, 30, 90)]))
    out = draw_instances(black(), inst, NAMES, alpha=0.5, show_boxes=False, show_labels=False)
    assert out[45, 45].tolist() == half(class_color(0)).tolist()  # overlap: the 0.95 person wins
    assert out[75, 75].tolist() == half(class_color(1)).tolist()


def test_keypoints_and_skeleton_only_where_visible():
    kp = torch.zeros(1, 17, 3)
    kp[0, 0] = torch.tensor([60.0, 40.0, 2.0])  # nose
    kp[0, 1] = torch.tensor([80.0, 40.0, 2.0])  # left_eye
    kp[0, 2] = torch.tensor([40.0, 40.0, 0.0])  # right_eye: unlabeled
    base = dict(boxes=torch.tensor([[0.0, 0.0, 1.0, 1.0]]), labels=torch.tensor([0]), keypoints=kp)
    out = draw_instances(black(), Instances((H, W), **base), NAMES, show_boxes=False, show_labels=False)
    assert out[40, 70].tolist() == list(LEFT_COLOR)  # nose - left_eye edge, coloured by its left end
    assert out[40, 80].tolist() == list(LEFT_COLOR)  # the left-eye dot
    assert out[40, 50].tolist() == [0, 0, 0] and out[40, 40].tolist() == [0, 0, 0]  # nothing toward right_eye
    # with scores: the left eye at 0.1 is hidden at threshold 0.5, and so is its edge
    ks = torch.zeros(1, 17)
    ks[0, 0], ks[0, 1] = 0.9, 0.1
    out = draw_instances(black(), Instances((H, W), scores=torch.tensor([1.0]), keypoint_scores=ks, **base), NAMES,
                         keypoint_threshold=0.5, show_boxes=False, show_labels=False)
    assert out[40, 70].tolist() == [0, 0, 0] and out[40, 80].tolist() == [0, 0, 0]
    assert out[40, 60].tolist() != [0, 0, 0]  # the nose stays


# ---- dense maps ----------------------------------------------------------------------------
def test_draw_semantic_tints_by_class_and_leaves_ignore():
    gray = np.full((H, W, 3), 100, dtype=np.uint8)
    lab = torch.zeros(H, W, dtype=torch.long)
    lab[50:] = 2
    lab[:10, :10] = 255
    out = draw_semantic(gray, SemanticMap(lab), NAMES, alpha=0.4, show_names=False)
    expect = lambda k: np.round(0.6 * 100 + 0.4 * np.asarray(class_color(k), dtype=np.float64)).astype(np.uint8)
    assert out[30, 60].tolist() == expect(0).tolist()
    assert out[80, 60].tolist() == expect(2).tolist()
    assert out[5, 5].tolist() == [100, 100, 100]
    assert out[50, 60].tolist() == (expect(2).astype(np.float32) * 0.35).astype(np.uint8).tolist()  # boundary
    named = draw_semantic(gray, SemanticMap(lab), NAMES, alpha=0.4)
    assert (named != out).any()  # class names written inside their regions


def test_draw_panoptic_things_in_shades_stuff_in_class_colour_white_outlines():
    gray = np.full((H, W, 3), 100, dtype=np.uint8)
    ids = torch.zeros(H, W, dtype=torch.long)
    ids[:50] = 1  # stuff "dog" (label 2 used as stuff here)
    ids[60:90, 10:40] = 10  # person #1
    ids[60:90, 60:90] = 11  # person #2
    segs = [SegmentInfo(1, 7, label=2, isthing=False), SegmentInfo(10, 1, label=0), SegmentInfo(11, 1, label=0)]
    out = draw_panoptic(gray, PanopticMap(ids, segs), NAMES, alpha=0.5, show_names=False)
    blend = lambda c: np.round(50 + 0.5 * np.asarray(c, dtype=np.float64)).astype(np.uint8).tolist()
    shades = instance_shades(class_color(0), 2)
    assert out[25, 60].tolist() == blend(class_color(2))
    assert out[75, 25].tolist() == blend(shades[0]) and out[75, 75].tolist() == blend(shades[1])
    assert out[75, 25].tolist() != out[75, 75].tolist()
    assert out[95, 100].tolist() == [100, 100, 100]  # void
    assert out[49, 60].tolist() == [255, 255, 255] and out[60, 25].tolist() == [255, 255, 255]


def test_draw_heatmaps_peak_lands_on_the_right_pixel():
    gray = np.full((H, W, 3), 128, dtype=np.uint8)
    hm = torch.zeros(2, 25, 30)  # stride 4
    hm[1, 10, 20] = 3.0  # above 1: divided by the maximum
    out = draw_heatmaps(gray, hm, alpha=0.8)
    change = np.abs(out.astype(int) - 128).sum(-1)
    y, x = np.unravel_index(np.argmax(change), change.shape)
    assert abs(y - 41.5) <= 2 and abs(x - 81.5) <= 2  # heatmap cell (10, 20) covers pixels 40..43 x 80..83
    assert change[:20].max() == 0
    assert np.array_equal(draw_heatmaps(gray, torch.zeros(25, 30)), gray)


def test_draw_legend_panel():
    out = draw_legend(black(), NAMES, colors=None, font_size=12)
    assert out.shape[0] == H and out.shape[1] > W
    assert np.array_equal(out[:, :W], black())
    # first swatch at (4, 4)..(16, 16) of the panel, second one row (18 px) lower
    assert out[10, W + 10].tolist() == list(class_color(0))
    assert out[28, W + 10].tolist() == list(class_color(1))
    many = draw_legend(black(), [f"class{i}" for i in range(30)], font_size=12)
    assert many.shape[1] - W > 2 * (out.shape[1] - W) - 40  # 30 names need several columns


def test_to_uint8_image_and_save_image(tmp_path):
    t = torch.zeros(3, 2, 4)
    t[0, 1, 3] = 1.0
    t[2, 0, 0] = 0.5
    a = to_uint8_image(t)
    assert a.shape == (2, 4, 3) and a[1, 3].tolist() == [255, 0, 0] and a[0, 0].tolist() == [0, 0, 128]
    assert to_uint8_image(np.full((2, 2), 7, np.uint8)).shape == (2, 2, 3)
    img = (np.arange(H * W * 3) % 251).astype(np.uint8).reshape(H, W, 3)
    p = save_image(tmp_path / "sub" / "x.png", img)
    assert np.array_equal(np.asarray(Image.open(p)), img)
    save_image(tmp_path / "sub" / "x.jpg", img)
    assert Image.open(tmp_path / "sub" / "x.jpg").format == "JPEG"
    with pytest.raises(ValueError, match="unknown image suffix"):
        save_image(tmp_path / "sub" / "x.nope", img)
    assert sorted(f.name for f in (tmp_path / "sub").iterdir()) == ["x.jpg", "x.png"]  # no temp files left


# ---- plots ---------------------------------------------------------------------------------
def test_read_csv_series_with_gaps(tmp_path):
    path = tmp_path / "log.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "step", "loss", "bbox_AP", "note"])
        w.writerows([[0, 10, 2.0, "", "x"], [0, 20, 1.5, "", ""], [1, 30, 1.0, 0.25, ""], [1, 40, 0.5, "", ""]])
    xname, s = read_csv_series(path)
    assert xname == "step" and sorted(s) == ["bbox_AP", "loss"]
    assert s["loss"][0].tolist() == [10, 20, 30, 40] and s["loss"][1].tolist() == [2.0, 1.5, 1.0, 0.5]
    assert s["bbox_AP"][0].tolist() == [30] and s["bbox_AP"][1].tolist() == [0.25]
    out = plot_curves(path, tmp_path / "curves.png", title="run")
    im = Image.open(out)
    assert im.size == (1200, 420)  # two panels (losses, metrics) of 6 x 4.2 in at 100 dpi
    one = plot_curves({"loss": [3, 2, 1]}, tmp_path / "one.png")
    assert Image.open(one).size == (600, 420)
    with pytest.raises(ValueError, match="no numeric series"):
        plot_curves({"loss": []}, tmp_path / "none.png")


def test_plot_pr_curves_draws_each_class_and_the_mean(tmp_path):
    from sceneparse.evaluation.curves import PRCurve

    r = np.linspace(0, 1, 101)
    ap_b = float(np.mean(1 - r ** 2))
    curves = {1: PRCurve(1, "a", r, 1 - r, 0.5), 2: PRCurve(2, "b", r, 1 - r ** 2, ap_b),
              3: PRCurve(3, "c", r, np.full(101, np.nan), float("nan"))}  # c has no ground truth: left out
    labels = pr_figure(curves).axes[0].get_legend_handles_labels()[1]
    m_ap = float(np.mean(np.mean([1 - r, 1 - r ** 2], axis=0)))  # the mean curve over classes with data
    # one unit everywhere: AP as a fraction in [0, 1], as the tables print it
    assert labels == [f"b (AP {ap_b:.3f})", "a (AP 0.500)", f"mean (mAP {m_ap:.3f})"]
    out = plot_pr_curves(curves, tmp_path / "plots" / "pr.png")
    im = np.asarray(Image.open(out).convert("RGB"))
    assert im.shape == (605, 825, 3) and (im < 50).all(-1).sum() > 500  # the black mean curve is there
    assert [p.name for p in out.parent.iterdir()] == ["pr.png"]  # written atomically, no temp file left



def test_pr_curves_keep_only_the_given_classes(tmp_path):
    from sceneparse.evaluation.curves import PRCurve

    r = np.linspace(0, 1, 101)
    curves = {1: PRCurve(1, "star", r, 1 - r, 0.5), 2: PRCurve(2, "ring", r, 1 - r, 0.5),
              3: PRCurve(3, "sky", r, np.zeros(101), 0.0)}  # a stuff class a thing detector never predicts
    out = plot_pr_curves(curves, tmp_path / "pr.png", classes=["star", "ring"])
    assert out.is_file()
    labels = pr_figure({k: c for k, c in curves.items() if c.name != "sky"}).axes[0].get_legend_handles_labels()[1]
    assert not any("sky" in l for l in labels) and labels[-1] == "mean (mAP 0.500)"


def test_one_point_curve_is_a_marker_with_its_value(tmp_path):
    from matplotlib.figure import Figure

    ax = Figure().add_subplot(1, 1, 1)
    draw_series(ax, [40], [0.0185], "bbox_AP")
    (line,) = ax.lines
    assert line.get_marker() == "o" and line.get_linestyle() == "None"  # a point, not an invisible line
    assert [t.get_text() for t in ax.texts] == ["0.0185"]
    ax2 = Figure().add_subplot(1, 1, 1)
    draw_series(ax2, [1, 2, 3], [3.0, 2.0, 1.0], "loss")
    assert ax2.lines[0].get_marker() == "o" and not ax2.texts  # short series: line with markers, no labels
    # through plot_curves: a lone metric point is drawn (its colour is on the canvas), on a whole-number axis
    out = plot_curves({"loss": ([1, 2, 3, 4], [4.0, 3.0, 2.5, 2.0]), "bbox_AP": ([4], [0.25])}, tmp_path / "c.png",
                      panels={"loss": ["loss"], "held-out": ["bbox_AP"]})
    im = np.asarray(Image.open(out).convert("RGB")).astype(int)
    right = im[:, im.shape[1] // 2:]
    blue = (np.abs(right - np.array([31, 119, 180])).sum(-1) < 40).sum()  # matplotlib's first colour
    assert blue > 30  # the marker (and its value label) of the one-point series


def test_plot_curves_panels(tmp_path):
    out = plot_curves({"loss": [3, 2, 1], "lr": [0.1, 0.2, 0.3]}, tmp_path / "p.png",
                      panels={"loss": ["loss"], "learning rate": ["lr"], "metrics": ["missing"]})
    assert Image.open(out).size == (1200, 420)  # two panels: the one without a series is left out
    with pytest.raises(ValueError, match="none of the series"):
        plot_curves({"loss": [1.0]}, tmp_path / "n.png", panels={"x": ["y"]})


def test_confusion_and_error_figures_use_the_given_classes_and_fractions():
    from sceneparse.evaluation.confusion import DetectionConfusionMatrix
    from sceneparse.evaluation.errors import MAIN_ERRORS, TideErrors

    m = np.zeros((4, 4), np.int64)
    m[0, 0], m[1, 1], m[0, 3] = 3, 2, 1
    cm = DetectionConfusionMatrix(m, ["star", "ring", "sky"], [1, 2, 101], 0.5, 0.25)
    ax = confusion_figure(cm, classes=["star", "ring"]).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["star", "ring", "background"]
    assert "score>=0.25" in ax.get_title()
    errs = TideErrors(ap50=0.018, counts={t: 1 for t in MAIN_ERRORS}, delta_ap={t: 0.01 for t in MAIN_ERRORS},
                      delta_ap_false_pos=0.024, delta_ap_false_neg=0.484, det_kind=np.array([]),
                      det_target=np.array([]), missed_gt=np.array([]))
    ax = error_figure(errs).axes[0]
    assert ax.get_title() == "error breakdown, AP50 = 0.018"  # not "AP50 = 1.8"
    assert "0.484" in [t.get_text().strip() for t in ax.texts]


def test_class_iou_plot_in_fractions(tmp_path):
    from sceneparse.evaluation.semantic import semantic_metrics

    res = semantic_metrics(np.array([[8, 2], [1, 9]]), ["sky", "road"])
    out = plot_class_iou(res, tmp_path / "iou.png")
    assert out.is_file() and 0 < res.miou < 1


def test_threshold_sweep_and_label_stats_write_pngs(tmp_path):
    t = np.arange(0.05, 0.96, 0.05)
    out = plot_threshold_sweep(t, 1 - t / 2, 1 - t, 2 * (1 - t / 2) * (1 - t) / (2 - 1.5 * t), tmp_path / "s.png",
                               chosen=0.25)
    assert out.is_file()
    out = plot_label_stats(["star", "ring"], {"train": [5, 3], "val": [1, 0]},
                           {"train": [10.0, 40.0, 100.0], "val": [20.0]}, tmp_path / "l.png",
                           per_image={"train": [2, 3, 3], "val": [1]})
    im = Image.open(out)
    assert im.size[0] > im.size[1]  # three panels side by side


# ---- what a picture shows --------------------------------------------------------------------
def test_detections_to_draw_falls_back_to_the_top_ones():
    inst = Instances((H, W), boxes=torch.tensor([[0.0, 0, 10, 10]] * 7), labels=torch.zeros(7, dtype=torch.long),
                     scores=torch.tensor([0.10, 0.161, 0.05, 0.12, 0.02, 0.14, 0.13]))
    shown, what, fell_back = detections_to_draw(inst, 0.25, top_k=3)
    assert fell_back and len(shown) == 3
    assert shown.scores.tolist() == pytest.approx([0.161, 0.14, 0.13])
    assert "0.25" in what and "highest score 0.161" in what and "top 3 of 7" in what
    shown, what, fell_back = detections_to_draw(inst, 0.125)
    assert not fell_back and len(shown) == 3 and what == "3 detection(s) with score >= 0.125"
    empty = Instances.empty((H, W))
    shown, what, fell_back = detections_to_draw(empty, 0.25)
    assert len(shown) == 0 and not fell_back


def test_tile_puts_images_side_by_side_under_titles():
    a = np.full((H, W, 3), 10, np.uint8)
    b = np.full((H // 2, W, 3), 200, np.uint8)
    out = tile([a, b], ["ground truth (3)", "predicted"], gap=4)
    bar = out.shape[0] - H
    assert out.shape[1] == 2 * W + 4 and bar > 10
    assert (out[bar:, :W] == 10).all() and (out[bar:bar + H // 2, W + 4:] == 200).all()
    assert (out[bar + H // 2:, W + 4:] == 255).all()  # the smaller image sits top-left; the rest is background
    assert (out[:bar, :W] < 128).any() and (out[:bar, W + 4:] < 128).any()  # each title is written
    grid = tile([a] * 5, None, columns=2, gap=0)
    assert grid.shape == (3 * H, 2 * W, 3)

# ---- sceneparse show -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    from sceneparse.data.synthetic import SyntheticConfig, write_dataset

    root = tmp_path_factory.mktemp("synth")
    cfg = SyntheticConfig(height=64, width=80, num_images=2, val_fraction=0.5, seed=1, empty_prob=0.0,
                          image_format="png")  # lossless: unchanged pixels compare equal
    write_dataset(root, cfg, workers=1, progress=False, overwrite=True)
    return root


def test_show_draws_every_kind_of_a_synthetic_folder(synth_root, tmp_path, capsys):
    from sceneparse.cli import main

    out = tmp_path / "show"
    assert main(["show", str(synth_root), "--out", str(out), "--num", "1", "--min-size", "0"]) == 0
    first = sorted((synth_root / "images" / "val").iterdir())[0]
    stem = first.stem
    raw = np.asarray(Image.open(first).convert("RGB"))
    sem = np.asarray(Image.open(synth_root / "semantic" / "val" / f"{stem}.png"))
    for kind in ("instances", "keypoints", "semantic", "panoptic"):
        drawn = np.asarray(Image.open(out / kind / f"{stem}.png"))
        assert drawn.shape[0] >= 64 and drawn.shape[1] > 80, kind  # the image plus a legend panel
        changed = (drawn[:64, :80] != raw).any(-1)
        assert changed.mean() > 0.01, kind
        if kind == "semantic":  # every labelled pixel is tinted (or outlined / written on)
            assert changed[sem != 255].mean() > 0.97
    assert "wrote 4 drawing(s)" in capsys.readouterr().out
    # enlarged for readability: the shorter side becomes --min-size
    assert main(["show", str(synth_root), "--out", str(tmp_path / "big"), "--num", "1", "--kind", "panoptic",
                 "--min-size", "128"]) == 0
    assert np.asarray(Image.open(tmp_path / "big" / "panoptic" / f"{stem}.png")).shape[0] == 128


def test_show_reads_coco_files_and_reports_user_errors(synth_root, tmp_path, capsys):
    from sceneparse.cli import main

    ann, images = synth_root / "annotations", synth_root / "images" / "val"
    assert main(["show", str(ann / "panoptic_val.json"), "--images", str(images), "--out", str(tmp_path),
                 "--min-size", "0"]) == 0
    assert len(list((tmp_path / "panoptic").iterdir())) == 1 and not (tmp_path / "instances").exists()
    assert main(["show", str(ann / "instances_val.json"), "--images", str(images), "--out", str(tmp_path),
                 "--kind", "instances"]) == 0
    assert len(list((tmp_path / "instances").iterdir())) == 1
    capsys.readouterr()
    assert main(["show", str(ann / "instances_val.json"), "--out", str(tmp_path)]) == 1
    assert "needs --images DIR" in capsys.readouterr().err
    assert main(["show", str(ann / "instances_val.json"), "--images", str(images), "--out", str(tmp_path),
                 "--kind", "semantic"]) == 1
    assert "cannot draw semantic: no --semantic DIR given" in capsys.readouterr().err
