"""``sceneparse convert`` on a tiny dataset: COCO -> YOLO -> COCO and COCO -> VOC -> COCO."""
import json

import numpy as np
import pytest
from format_fixtures import coco_instances, coco_keypoints, dump

from sceneparse.cli import main


def _boxes_by_file(coco):
    name = {im["id"]: im["file_name"] for im in coco["images"]}
    out = {}
    for a in coco["annotations"]:
        out.setdefault(name[a["image_id"]], []).append((a["category_id"], a["bbox"]))
    return out


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as e:
        main(["convert", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "sceneparse convert --from coco --to yolo" in out


def test_coco_yolo_coco(tmp_path, image_root, capsys):
    src = coco_instances()
    dump(src, tmp_path / "a.json")
    rc = main(["convert", "--from", "coco", "--to", "yolo", "--src", str(tmp_path / "a.json"),
               "--images", str(image_root), "--dst", str(tmp_path / "y"), "--copy-images"])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"read coco {tmp_path / 'a.json'}: 3 images, 5 objects, 3 categories" in out
    assert "wrote yolo (detect)" in out and "3 images, 4 objects" in out
    assert "not representable in yolo: 1 object(s)" in out
    assert "iscrowd: YOLO has no crowd regions [not written]: 1 (annotation 22)" in out
    assert (tmp_path / "y/images/img_b.png").read_bytes() == (image_root / "img_b.png").read_bytes()
    rc = main(["convert", "--from", "yolo", "--to", "coco", "--src", str(tmp_path / "y"),
               "--dst", str(tmp_path / "back.json")])
    assert rc == 0
    back = json.loads((tmp_path / "back.json").read_text())
    exp = {f: [b for b in v] for f, v in _boxes_by_file(src).items()}
    exp["img_b.png"] = [b for b, a in zip(exp["img_b.png"], [0, 1]) if a == 0]  # crowd 22 not in YOLO
    got = _boxes_by_file(back)
    assert sorted(got) == sorted(exp)
    for f in exp:
        assert [c for c, _ in got[f]] == [c for c, _ in exp[f]]
        np.testing.assert_allclose([b for _, b in got[f]], [b for _, b in exp[f]], atol=1e-3)


def test_coco_voc_coco_with_problems(tmp_path, image_root, capsys):
    src = coco_instances()
    src["annotations"][0]["bbox"] = [-3.0, 3.25, 10.0, 12.5]
    dump(src, tmp_path / "a.json")
    rc = main(["convert", "--from", "coco", "--to", "voc", "--src", str(tmp_path / "a.json"),
               "--images", str(image_root), "--dst", str(tmp_path / "xml")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "problems found in the source (repaired as noted): 1" in out
    assert "annotation 11: bbox: box (XYXY) outside" in out and "clipped to [0.0, 3.25, 7.0, 15.75]" in out
    assert "not representable in voc: 5" in out
    assert sorted(p.name for p in (tmp_path / "xml").iterdir()) == ["img_a.xml", "img_b.xml", "img_c.xml"]
    rc = main(["convert", "--from", "voc", "--to", "coco", "--src", str(tmp_path / "xml"), "--images", str(image_root),
               "--names", "cat,dog,car", "--dst", str(tmp_path / "back.json")])
    assert rc == 0
    back = json.loads((tmp_path / "back.json").read_text())
    assert [c["name"] for c in back["categories"]] == ["cat", "dog", "car"]
    got = _boxes_by_file(back)
    np.testing.assert_allclose(got["img_a.png"][0][1], [0.0, 3.25, 7.0, 12.5], atol=1e-3)
    assert len(back["annotations"]) == 5


def test_strict_stops_with_the_problem(tmp_path, image_root, capsys):
    src = coco_instances()
    src["annotations"][2]["category_id"] = 42
    dump(src, tmp_path / "a.json")
    rc = main(["convert", "--from", "coco", "--to", "yolo", "--src", str(tmp_path / "a.json"),
               "--dst", str(tmp_path / "y"), "--strict"])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"{tmp_path / 'a.json'}: annotation 21: category_id: unknown category id (got 42)" in err
    assert not (tmp_path / "y").exists()


def test_pose_conversion(tmp_path, image_root, capsys):
    dump(coco_keypoints(), tmp_path / "k.json")
    assert main(["convert", "--from", "coco", "--to", "yolo", "--task", "pose", "--src", str(tmp_path / "k.json"),
                 "--images", str(image_root), "--dst", str(tmp_path / "y")]) == 0
    assert "17 keypoints per object" in capsys.readouterr().out
    assert main(["convert", "--from", "yolo", "--to", "coco", "--task", "pose", "--src", str(tmp_path / "y/data.yaml"),
                 "--images", str(image_root), "--dst", str(tmp_path / "k2.json")]) == 0
    a = json.loads((tmp_path / "k.json").read_text())["annotations"]
    b = json.loads((tmp_path / "k2.json").read_text())["annotations"]
    np.testing.assert_allclose([x["keypoints"] for x in b], [x["keypoints"] for x in a], atol=1e-3)
    # detection-only sources cannot become pose labels
    dump(coco_instances(), tmp_path / "a.json")
    assert main(["convert", "--from", "coco", "--to", "yolo", "--task", "pose", "--src", str(tmp_path / "a.json"),
                 "--dst", str(tmp_path / "z")]) == 1
    assert "--task pose needs a source with keypoints" in capsys.readouterr().err
