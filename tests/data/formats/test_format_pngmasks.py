"""Semantic label PNGs: exact values through write / load, palettes, problems."""
import numpy as np
import pytest
import torch
from format_fixtures import write_images
from PIL import Image

from sceneparse.data.formats import load_semantic_map, read_semantic_pngs, voc_palette, write_semantic_png
from sceneparse.errors import DataError, FormatError
from sceneparse.structures import SemanticMap


def _labels(h, w, num_classes, seed=0):
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, num_classes, (h, w))
    lab[rng.random((h, w)) < 0.1] = 255
    return lab


def test_voc_palette_known_colours():
    pal = voc_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    # Pascal VOC SegmentationClass colours: background, aeroplane, bicycle, bird, ..., person (15)
    assert pal[0].tolist() == [0, 0, 0] and pal[1].tolist() == [128, 0, 0] and pal[2].tolist() == [0, 128, 0]
    assert pal[3].tolist() == [128, 128, 0] and pal[15].tolist() == [192, 128, 128]
    assert len({tuple(c) for c in pal}) == 256


@pytest.mark.parametrize("palette", [None, True])
def test_write_then_load_exact(tmp_path, palette):
    write_images(tmp_path / "img", [("a.png", 24, 40), ("b.png", 32, 32)])
    la, lb = _labels(24, 40, 5, 0), _labels(32, 32, 5, 1)
    write_semantic_png(tmp_path / "lab/a.png", la, palette=palette)
    write_semantic_png(tmp_path / "lab/b.png", torch.from_numpy(lb), palette=palette)
    with Image.open(tmp_path / "lab/a.png") as im:
        assert im.mode == ("L" if palette is None else "P")
    aset = read_semantic_pngs(tmp_path / "lab", tmp_path / "img", ["a", "b", "c", "d", "e"], strict=True,
                              check_images=True)
    assert aset.semantic_root == tmp_path / "lab" and [im.file_name for im in aset.images] == ["a.png", "b.png"]
    for im, ref in zip(aset.images, (la, lb)):
        sm = load_semantic_map(aset, im.id)
        assert sm.labels.dtype == torch.int64 and sm.ignore_index == 255
        np.testing.assert_array_equal(sm.labels.numpy(), ref)


def test_semantic_map_with_other_ignore_index_and_bad_values(tmp_path):
    lab = torch.tensor([[0, 1], [-1, 3]])
    write_semantic_png(tmp_path / "x.png", SemanticMap(lab, ignore_index=-1))
    assert np.asarray(Image.open(tmp_path / "x.png")).tolist() == [[0, 1], [255, 3]]
    with pytest.raises(ValueError, match=r"\[256, 300\]"):
        write_semantic_png(tmp_path / "y.png", np.array([[0, 256], [300, 1]]))
    with pytest.raises(ValueError, match="integers"):
        write_semantic_png(tmp_path / "y.png", np.zeros((2, 2), np.float32))
    assert not (tmp_path / "y.png").exists()


def test_inferred_classes_and_problems(tmp_path):
    write_images(tmp_path / "img", [("a.png", 8, 8), ("b.png", 8, 8), ("c.png", 8, 8)])
    write_semantic_png(tmp_path / "lab/a.png", np.full((8, 8), 3))
    write_semantic_png(tmp_path / "lab/b.png", np.full((6, 8), 1))  # wrong size
    write_semantic_png(tmp_path / "lab/c.png", np.array([[0, 7], [9, 255]]).repeat(4, 0).repeat(4, 1))
    write_semantic_png(tmp_path / "lab/d.png", np.zeros((8, 8), int))  # no image
    aset = read_semantic_pngs(tmp_path / "lab")  # no image root, no names: all PNGs kept, C from values
    assert len(aset.categories) == 10 and aset.problems == []
    aset = read_semantic_pngs(tmp_path / "lab", tmp_path / "img", [f"k{i}" for i in range(5)], check_images=True)
    got = [(p.file, p.record, p.field) for p in aset.problems]
    lab = tmp_path / "lab"
    assert got == [(str(lab / "b.png"), "image 2", "size"), (str(lab / "c.png"), "image 3", "labels"),
                   (str(lab / "d.png"), "image 4", "file_name")]
    assert aset.problems[1].value == [7, 9]
    assert [im.file_name for im in aset.images] == ["a.png"]
    with pytest.raises(DataError, match="label PNG is 6x8"):
        read_semantic_pngs(tmp_path / "lab", tmp_path / "img", [f"k{i}" for i in range(5)], strict=True)


def test_load_rejects_unknown_values_and_rgb(tmp_path):
    write_semantic_png(tmp_path / "lab/a.png", np.array([[0, 4]]))
    aset = read_semantic_pngs(tmp_path / "lab", class_names=["x", "y", "z"])
    with pytest.raises(DataError, match=r"unknown category ids.*\[4\]"):
        load_semantic_map(aset, aset.images[0].id)
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "lab/rgb.png")
    with pytest.raises(FormatError, match="single-channel"):
        read_semantic_pngs(tmp_path / "lab")
