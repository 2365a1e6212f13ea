"""One image reader (``sceneparse.data.images``): the dataset and the predictor call the same
functions, and files read as they did (modes, 16-bit, EXIF / size rule, errors naming the file)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from sceneparse.data import datasets as D
from sceneparse.data import images as I
from sceneparse.data.records import AnnotationSet, ImageRecord
from sceneparse.engine import predictor as P
from sceneparse.errors import DataError

SRC = Path(__file__).resolve().parents[2] / "src" / "sceneparse"


def _reference(path, exif=True):
    """The conversion both old readers did: PIL's RGB for 8-bit modes, 16-bit / float gray scaled."""
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im) if exif else im.copy()
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im).astype(np.float32)
        if im.mode != "F":
            a /= 65535.0
        return torch.from_numpy(np.clip(a, 0, 1)).expand(3, -1, -1)
    return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).float() / 255.0


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    out = {}
    for mode in ("RGB", "L", "1", "P", "LA", "RGBA", "CMYK", "YCbCr"):
        im = Image.fromarray(rgb).convert(mode)
        out[mode] = tmp_path / f"{mode}.{'jpg' if mode in ('CMYK', 'YCbCr') else 'png'}"
        im.save(out[mode])
    Image.fromarray((rng.integers(0, 65536, (6, 8))).astype(np.uint16)).save(tmp_path / "g16.png")
    out["I;16"] = tmp_path / "g16.png"
    Image.fromarray(rng.random((6, 8), dtype=np.float32) * 1.2 - 0.1, "F").save(tmp_path / "f.tif")
    out["F"] = tmp_path / "f.tif"
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: stored 6x8, displayed 8x6
    Image.fromarray(rgb).save(tmp_path / "rot.png", exif=exif)
    out["rot"] = tmp_path / "rot.png"
    return out


def test_dataset_and_predictor_share_one_reader():
    assert D.load_image is I.read_image and P.read_image is I.read_image
    assert P.to_image_tensor is I.to_image_tensor and D.pil_to_tensor is I.pil_to_tensor
    assert P._reason is I.exception_reason
    for rel in ("data/datasets.py", "engine/predictor.py"):
        text = (SRC / rel).read_text()
        assert "Image.open" not in text and "exif_transpose(" not in text and "def read_image" not in text, rel


def test_modes_16bit_float_and_exif_read_as_before(files):
    for name, path in files.items():
        want = _reference(path)
        for got in (I.read_image(path), D.load_image(path), P.read_image(path), P.to_image_tensor(str(path)),
                    I.pixels_to_tensor(I.read_pixels(path))):
            assert got.dtype == torch.float32 and got.shape == want.shape, name
            assert torch.equal(got, want), name
    assert I.read_image(files["rot"]).shape == (3, 8, 6)
    assert torch.equal(I.read_image(files["rot"], exif=False), _reference(files["rot"], exif=False))
    # compact form: 8-bit as uint8 HWC (what the dataset cache holds), 16-bit as the float tensor
    assert I.read_pixels(files["RGB"]).dtype == np.uint8 and I.read_pixels(files["RGB"]).shape == (6, 8, 3)
    assert isinstance(I.read_pixels(files["I;16"]), torch.Tensor)
    with Image.open(files["P"]) as im:
        assert torch.equal(P.to_image_tensor(im), _reference(files["P"]))


def test_size_rule_and_errors_in_both_wordings(files, tmp_path):
    rot = files["rot"]
    stored = _reference(rot, exif=False)
    assert torch.equal(I.read_image(rot, (6, 8)), stored)  # annotated on the stored pixels
    assert I.read_image(rot, (8, 6)).shape == (3, 8, 6) and I.read_image(rot, (0, 0)).shape == (3, 8, 6)
    with pytest.raises(DataError, match=r"rot\.png: the image is 8x6 \(HxW\) but the annotation file says 5x5"):
        I.read_image(rot, (5, 5))
    with pytest.raises(DataError, match=r"rot\.png: image 4: height/width: image file is 8x6 \(HxW\) but the record "
                                        r"says 5x5"):
        I.read_image(rot, (5, 5), record="image 4")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    buf = tmp_path / "cut.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 7).save(buf)
    buf.write_bytes(buf.read_bytes()[:60])
    for record, field, missing in ((None, None, "file not found"), ("image 2", "file_name", "image file not found")):
        cases = {"nope.png": missing, "empty.png": "empty file (0 bytes)", "junk.png": "unreadable image (",
                 "cut.png": "unreadable image ("}
        for name, message in cases.items():
            with pytest.raises(DataError) as e:
                I.read_image(tmp_path / name, record=record)
            (p,) = e.value.problems
            assert (p.file, p.record, p.field) == (str(tmp_path / name), record, field)
            assert p.message.startswith(message), p.message


def test_dataset_reads_through_the_reader_with_and_without_cache(files, tmp_path, monkeypatch):
    from sceneparse.conventions import Category, CategoryMap

    cats = CategoryMap([Category(id=1, name="thing")])
    recs = [ImageRecord(1, files["RGB"].name, 6, 8), ImageRecord(2, files["I;16"].name, 6, 8),
            ImageRecord(3, files["rot"].name, 6, 8), ImageRecord(4, files["rot"].name, 8, 6)]
    aset = AnnotationSet(cats, recs, [], image_root=tmp_path)
    calls = []
    for name in ("read_image", "read_pixels"):
        real = getattr(D, name)
        monkeypatch.setattr(D, name, lambda *a, _r=real, _n=name, **k: calls.append(_n) or _r(*a, **k))
    plain = [D.SceneDataset(aset)[i][0] for i in range(4)]
    assert calls == ["read_image"] * 4
    cached = D.SceneDataset(aset, cache=True)
    assert [torch.equal(cached[i][0], plain[i]) for i in range(4)] == [True] * 4
    assert calls == ["read_image"] * 4 + ["read_pixels"] * 4
    assert torch.equal(plain[2], _reference(files["rot"], exif=False)) and plain[3].shape == (3, 8, 6)
    (tmp_path / "empty.png").write_bytes(b"")  # a check the dataset gained from the predictor's reader
    aset.images[0] = ImageRecord(1, "empty.png", 6, 8)
    with pytest.raises(DataError, match=r"empty\.png: image 1: file_name: empty file \(0 bytes\)"):
        D.SceneDataset(aset)[0]
