"""``sceneparse view``: the JSON API against sceneparse's evaluation (plain HTTP), and the client in a
real browser (headless Chromium from the system packages, driven by selenium).

The dataset is 8 synthetic val images (``sceneparse data synth``, 128 px); ``good.json`` holds
jittered copies of the ground truth (some relabelled, some with the object's mask), ``broken.json``
names an image id the ground truth does not have, ``notjson.json`` is not JSON. The server runs in
a thread of the test process on a free port.
"""
from __future__ import annotations

import json
import shutil
import time
import urllib.request

import numpy as np
import pytest
import torch

from sceneparse.cli import main as cli_main
from sceneparse.evaluation.errors import average_precision, tide_errors, tide_from_columns
from sceneparse.evaluation.validate import coco_columns
from sceneparse.viewer import Dataset, Viewer, per_image_ap, serve_in_thread


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fake_predictions(gt: dict, seed: int) -> list[dict]:
    """Three jittered copies of each ground-truth box (15 % relabelled; the first copy of every
    third object carries the object's mask), plus one background box per image."""
    rng = np.random.default_rng(seed)
    cats = [c["id"] for c in gt["categories"]]
    out = []
    for n, a in enumerate(gt["annotations"]):
        x, y, w, h = a["bbox"]
        for k in range(3):
            j = rng.normal(0, 0.15 * k + 0.02, 4)
            c = a["category_id"] if rng.random() > 0.15 else int(rng.choice(cats))
            r = {"image_id": a["image_id"], "category_id": c, "score": round(float(rng.random()), 4),
                 "bbox": [x + j[0] * w, y + j[1] * h, w * abs(1 + j[2]), h * abs(1 + j[3])]}
            if k == 0 and n % 3 == 0 and isinstance(a.get("segmentation"), dict):
                r["segmentation"] = a["segmentation"]
            out.append(r)
    for im in gt["images"]:
        out.append({"image_id": im["id"], "category_id": cats[0], "bbox": [1, 1, 10, 10], "score": 0.3})
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("view")
    data = root / "synth"
    assert cli_main(["data", "synth", "--out", str(data), "--images", "16", "--size", "128", "--val-fraction", "0.5",
                     "--workers", "1", "--no-progress", "--seed", "3"]) == 0
    gt_file = data / "annotations" / "instances_val.json"
    gt = json.loads(gt_file.read_text())
    (root / "good.json").write_text(json.dumps(fake_predictions(gt, 0)))
    (root / "broken.json").write_text(json.dumps(
        [{"image_id": gt["images"][0]["id"], "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5},
         {"image_id": 987654, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}]))
    (root / "notjson.json").write_text("{this is not json")
    viewer = Viewer(Dataset(data), [str(root / "good.json"), str(root / "broken.json"), str(root / "notjson.json")],
                    cache_dir=root / "cache", processes=False)
    server, thread = serve_in_thread(viewer, port=0)
    viewer.wait(120)
    yield {"url": server.url, "viewer": viewer, "gt": gt, "gt_file": gt_file, "root": root}
    server.shutdown()
    server.server_close()


def get(site, path: str):
    """GET a path; JSON is decoded, with each image's prediction columns turned into one dict per object."""
    with urllib.request.urlopen(site["url"] + path.lstrip("/"), timeout=60) as r:
        body = r.read()
        if r.headers["Content-Type"] != "application/json":
            return r.headers["Content-Type"], body
    out = json.loads(body)
    for im in out.get("images", [out] if "preds" in out else []):
        for name, cols in im["preds"].items():
            im["preds"][name] = [dict(zip(cols, vals)) for vals in zip(*cols.values())]
    return out


# ------------------------------------------------------------------------- facts (no browser)
def test_per_image_ap_equals_the_loop_form():
    """The segment-sum AP of every (image, class) group = evaluation.errors.average_precision per group."""
    rng = np.random.default_rng(0)
    n, n_img, k = 400, 7, 4
    image, label = rng.integers(0, n_img, n), rng.integers(0, k, n)
    score = rng.choice([0.1, 0.5, 0.7, 0.9], n)  # ties: broken by the order column
    tp = rng.random(n) < 0.4
    order = rng.permutation(n)
    num_pos = rng.integers(0, 6, (n_img, k))
    num_pos = np.maximum(num_pos, np.bincount(image[tp] * k + label[tp], minlength=n_img * k).reshape(n_img, k))
    got = per_image_ap(image, label, score, tp, order, num_pos)
    for i in range(n_img):
        sel = image == i
        want = average_precision(label[sel], score[sel], tp[sel], order[sel], num_pos[i])[1]
        np.testing.assert_allclose(got[i], want, rtol=0, atol=1e-12)
    assert np.isnan(got[num_pos == 0]).all() and np.isfinite(got[num_pos > 0]).all()


def test_api_facts_equal_the_evaluation(site):
    """TP / FP / FN, error types per detection and per image, and per-image AP from the API = tide_errors."""
    page = get(site, "/api/images?size=100")
    assert page["total"] == 8 == len(page["images"])
    results = json.loads((site["root"] / "good.json").read_text())
    tide = tide_errors(str(site["gt_file"]), results)
    kinds = {}
    for im in page["images"]:
        for o in im["preds"]["good"]:
            kinds[o["i"]] = o["kind"]
    assert len(kinds) == len(results)
    assert [kinds[i] for i in range(len(results))] == tide.det_kind.tolist()
    facts = [im["facts"]["good"] for im in page["images"]]
    assert sum(f["tp"] for f in facts) == int((tide.det_kind == "TP").sum()) > 0
    for t in ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss"):
        assert sum(f["errors"][t] for f in facts) == tide.counts[next(e for e in tide.counts if e.value == t)]
    assert sum(f["fp"] for f in facts) == sum(v for e, v in tide.counts.items() if e.value != "Miss")
    gt = site["gt"]
    for im, f in zip(page["images"], facts):
        g = {**gt, "images": [x for x in gt["images"] if x["id"] == im["id"]],
             "annotations": [a for a in gt["annotations"] if a["image_id"] == im["id"]]}
        r = [x for x in results if x["image_id"] == im["id"]]
        one = tide_from_columns(coco_columns(g, r))
        regular = sum(1 for a in g["annotations"] if not a["iscrowd"])
        assert f["tp"] == int((one.det_kind == "TP").sum()) and f["fn"] == regular - f["tp"]
        if regular:
            assert f["ap"] == pytest.approx(one.ap50, abs=1e-4)  # rounded to 4 places in JSON
        else:
            assert f["ap"] is None
        assert sorted(im["missed"]["good"]) == sorted(one.missed_gt.tolist())


def test_broken_files_are_reported_and_the_others_served(site):
    st = {s["name"]: s for s in get(site, "/api/status")["sources"]}
    assert st["good"]["state"] == "ready"
    assert st["broken"]["state"] == "error" and "broken.json" in st["broken"]["error"]
    assert "result 1 (image_id 987654)" in st["broken"]["error"] and "image_id" in st["broken"]["error"]
    assert st["notjson"]["state"] == "error" and "notjson.json" in st["notjson"]["error"]
    assert "not valid JSON" in st["notjson"]["error"]
    page = get(site, "/api/images?size=4")
    assert set(page["images"][0]["preds"]) == {"good"}


def test_sort_and_filter(site):
    v = site["viewer"]
    f = v.sources["good"].facts_at(0.5)
    dupes = f.errors["Dupe"][v.sources["good"].ds2pair]
    page = get(site, "/api/images?sort=Dupe&src=good&order=desc&size=100")
    vals = [im["errors"] if False else im["facts"]["good"]["errors"]["Dupe"] for im in page["images"]]
    assert vals == sorted(vals, reverse=True) and vals[0] == dupes.max()
    page = get(site, "/api/images?filter=Bkg&src=good&size=100")
    assert page["total"] == int((f.errors["Bkg"] > 0).sum())
    assert all(im["facts"]["good"]["errors"]["Bkg"] > 0 for im in page["images"])
    page = get(site, "/api/images?sort=ap&src=good&order=asc&size=100")
    aps = [im["facts"]["good"]["ap"] for im in page["images"]]
    defined = [a for a in aps if a is not None]
    assert defined == sorted(defined) and aps[:len(defined)] == defined  # undefined last
    # worst images for one class: only images with that class, by the class's AP
    cls = int(np.bincount(v.ds.ann_label).argmax())
    page = get(site, f"/api/images?sort=ap&src=good&cls={cls}&order=asc&size=100")
    for im in page["images"]:
        assert any(o["label"] == cls for o in im["gt"] + im["preds"]["good"])
    page = get(site, "/api/images?sort=ap_diff&src=good&src2=broken&size=10")
    assert "waits for source" in page["note"]  # a failed source cannot be compared, and the page says so
    page = get(site, "/api/images?iou=0.75&sort=tp&src=good&order=desc&size=100")
    assert "matching good at IoU 0.75" in page["note"] or page["images"][0]["facts"]  # matched in a thread
    _wait(lambda: {s["name"]: s for s in get(site, "/api/status")["sources"]}["good"]["facts"].get("0.75") == "ready",
          what="facts at IoU 0.75", status=lambda: get(site, "/api/status"))
    page = get(site, "/api/images?iou=0.75&sort=tp&src=good&order=desc&size=100")
    assert sum(im["facts"]["good"]["tp"] for im in page["images"]) == \
        int((tide_errors(str(site["gt_file"]), str(site["root"] / "good.json"), t_f=0.75, t_b=0.1).det_kind == "TP").sum())


def test_images_overlays_and_plots(site):
    ctype, body = get(site, "/thumb/0?s=64")
    assert ctype == "image/jpeg" and body[:2] == b"\xff\xd8"
    assert (site["root"] / "cache" / "thumbs" / "0_64.jpg").is_file()  # made once, on disk
    ctype, body = get(site, "/overlay/panoptic/0.png")
    assert ctype == "image/png" and body[:4] == b"\x89PNG"
    ctype, body = get(site, "/plot/good/errors.png")
    assert ctype == "image/png" and body[:4] == b"\x89PNG"
    with pytest.raises(urllib.error.HTTPError) as e:
        get(site, "/plot/broken/errors.png")
    assert e.value.code == 409 and "broken.json" in json.loads(e.value.read())["error"]


def test_cli_registers_view():
    from sceneparse.cli import MODES, build_parser

    p = build_parser("view")
    args = p.parse_args(["view", "data", "--pred", "a.json", "--pred", "b.json", "--port", "0"])
    assert args.pred == ["a.json", "b.json"] and args.port == 0 and args.host == "127.0.0.1"
    assert "view" in MODES


# ------------------------------------------------------------------------- the browser
def _chrome():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("headless Chromium not installed (apt-get install -y chromium chromium-driver; .ci/run does)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000"):
        opts.add_argument(a)
    opts.binary_location = chromium
    return webdriver.Chrome(options=opts, service=Service(driver))


@pytest.fixture(scope="module")
def browser():
    d = _chrome()
    d.set_script_timeout(30)
    yield d
    d.quit()


def _wait(fn, timeout: float = 30.0, what: str = "condition", status=None):
    end = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.time() > end:
            raise AssertionError(f"timed out waiting for {what}" + (f"; status {status()}" if status else ""))
        time.sleep(0.1)


def _drawn(browser) -> list[dict]:
    return browser.execute_script(
        "return [...document.querySelectorAll('#grid .card canvas')].map(c => Object.fromEntries("
        "[...c.attributes].filter(a => a.name.startsWith('data-drawn-')).map(a => [a.name.slice(11), +a.value])))")


def test_browser_grid_toggles_slider_image_sort_and_errors(site, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    api = get(site, "/api/images?size=48")
    browser.get(site["url"])
    _wait(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#grid .card")) == 8, what="8 cards")
    _wait(lambda: all("good" in d for d in _drawn(browser)), what="predictions drawn")
    # thumbnails arrived and were drawn under the objects
    _wait(lambda: browser.execute_script("return S.items.every(i => i._img.complete && i._img.naturalWidth > 0)"),
          what="thumbnails")
    drawn = _drawn(browser)
    assert [d["gt"] for d in drawn] == [len(im["gt"]) for im in api["images"]]
    assert [d["good"] for d in drawn] == [len(im["preds"]["good"]) for im in api["images"]]
    # the broken files' errors are on the page, naming the file and the record / field
    errs = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#errors .source-error"), what="error banners")
    text = " ".join(e.text for e in errs)
    assert "broken.json" in text and "image_id 987654" in text and "notjson.json" in text

    # a class toggle: objects of that class disappear from every canvas
    cls = int(np.bincount([o["label"] for im in api["images"] for o in im["gt"]]).argmax())
    browser.find_element(By.CSS_SELECTOR, f'[data-toggle="class:{cls}"]').click()
    drawn = _drawn(browser)
    assert [d["gt"] for d in drawn] == [sum(o["label"] != cls for o in im["gt"]) for im in api["images"]]
    assert [d["good"] for d in drawn] == [sum(o["label"] != cls for o in im["preds"]["good"]) for im in api["images"]]
    browser.find_element(By.CSS_SELECTOR, f'[data-toggle="class:{cls}"]').click()
    # the score slider (clicked in its middle): only predictions at or above its value are drawn
    slider = browser.find_element(By.ID, "score")
    slider.click()
    thr = float(slider.get_attribute("value"))
    assert 0.2 < thr < 0.8
    drawn = _drawn(browser)
    assert [d["good"] for d in drawn] == [sum(o["score"] >= thr for o in im["preds"]["good"]) for im in api["images"]]
    assert [d["gt"] for d in drawn] == [len(im["gt"]) for im in api["images"]]  # ground truth has no score
    # a source toggle hides the whole source
    browser.find_element(By.CSS_SELECTOR, '[data-toggle="src:good"]').click()
    assert all("good" not in d for d in _drawn(browser))
    browser.find_element(By.CSS_SELECTOR, '[data-toggle="src:good"]').click()

    # sort by an error type: duplicates, most first
    Select(browser.find_element(By.ID, "src")).select_by_value("good")
    Select(browser.find_element(By.ID, "order")).select_by_value("desc")
    before = browser.find_element(By.ID, "grid").get_attribute("data-loaded")
    Select(browser.find_element(By.ID, "sort")).select_by_value("Dupe")
    _wait(lambda: browser.find_element(By.ID, "grid").get_attribute("data-loaded") != before, what="re-sorted grid")
    want = get(site, "/api/images?sort=Dupe&src=good&order=desc&size=48")
    ids = [int(c.get_attribute("data-id")) for c in browser.find_elements(By.CSS_SELECTOR, "#grid .card")]
    assert ids == [im["id"] for im in want["images"]]

    # one image: click the first card, side panel lists its objects; arrows walk the sorted order; Esc
    browser.find_elements(By.CSS_SELECTOR, "#grid .card")[0].click()
    _wait(lambda: browser.find_element(By.ID, "image-view").is_displayed(), what="image view")
    first = want["images"][0]
    _wait(lambda: str(first["id"]) in browser.find_element(By.ID, "image-title").text, what="first image")
    rows = browser.find_elements(By.CSS_SELECTOR, "#objects tr.obj")
    n_pred = sum(o["score"] >= thr for o in first["preds"]["good"])
    assert len(rows) == len(first["gt"]) + n_pred
    assert browser.find_element(By.ID, "image-link").get_attribute("href").endswith(f"/file/{first['index']}")
    big = browser.find_element(By.ID, "big-canvas")
    assert int(big.get_attribute("data-drawn-good")) == n_pred
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_RIGHT)
    second = want["images"][1]
    _wait(lambda: str(second["id"]) in browser.find_element(By.ID, "image-title").text, what="next image (->)")
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_LEFT)
    _wait(lambda: str(first["id"]) in browser.find_element(By.ID, "image-title").text, what="previous image (<-)")
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    _wait(lambda: browser.find_element(By.ID, "grid-view").is_displayed(), what="grid after Esc")


def test_browser_plots_page(site, browser):
    from selenium.webdriver.common.by import By

    browser.get(site["url"] + "#plots")
    box = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, '#plots .source[data-source="good"] img'), what="plots")
    assert len(box) == 3
    _wait(lambda: browser.execute_script(
        "return [...document.querySelectorAll('#plots img')].every(i => i.complete && i.naturalWidth > 0)"),
        timeout=90, what="plots rendered")
    err = browser.find_element(By.CSS_SELECTOR, '#plots .source[data-source="broken"] .source-error')
    assert "image_id 987654" in err.text


def test_browser_decodes_masks_as_pycocotools(site, browser):
    """The client's RLE decoder (compressed strings and count lists) paints exactly pycocotools' pixels."""
    from pycocotools import mask as mask_utils

    browser.get(site["url"])
    _wait(lambda: browser.execute_script("return S.meta !== null"), what="meta")
    rng = np.random.default_rng(5)
    m = np.zeros((23, 31), np.uint8, order="F")
    m[3:17, 4:9] = 1
    m[rng.random(m.shape) < 0.2] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    compressed = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    counts, v, run = [], 0, 0
    for px in m.flatten(order="F"):  # an uncompressed RLE: column-major runs starting with zeros
        if px != v:
            counts.append(run)
            v, run = px, 0
        run += 1
    counts.append(run)
    for seg in (compressed, {"size": [23, 31], "counts": counts}):
        alpha = browser.execute_script(
            "const c = maskCanvas(arguments[0], 0, 1); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "const a = []; for (let i = 3; i < d.length; i += 4) a.push(d[i] > 0 ? 1 : 0); return a;", seg)
        got = np.array(alpha, np.uint8).reshape(23, 31)
        np.testing.assert_array_equal(got, mask_utils.decode(rle))


def test_explain_button_without_a_model_says_how(site):
    req = urllib.request.Request(site["url"] + "api/explain/0", method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=30) as r:
        res = json.loads(r.read())
    assert res["pictures"] == [] and "--model" in res["error"]


@pytest.mark.slow  # a spawned interpreter importing sceneparse: 10-30 s on a loaded 2-core machine
def test_sources_load_in_a_child_process_as_in_a_thread(site):
    """The CLI's mode: results read and matched in a spawned child process; same columns and facts,
    and a broken file's message comes back from the child as it is."""
    v = site["viewer"]
    child = Viewer(v.ds, [str(site["root"] / "good.json"), str(site["root"] / "broken.json")],
                   cache_dir=site["root"] / "cache_child", processes=True)
    try:
        child.start_loading()
        child.wait(120)
        a, b = v.sources["good"], child.sources["good"]
        assert b.state == "ready", b.error
        np.testing.assert_array_equal(a.order, b.order)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        fa, fb = a.facts_at(0.5), b.facts_at(0.5)
        assert fa.tide.det_kind.tolist() == fb.tide.det_kind.tolist()
        np.testing.assert_array_equal(fa.ap, fb.ap)
        assert child.sources["broken"].state == "error"
        assert child.sources["broken"].error == v.sources["broken"].error
    finally:
        child.close()


def test_semantic_overlay_colours_labels_and_leaves_void_transparent(site):
    from PIL import Image
    import io

    v = site["viewer"]
    path = v.ds.semantic_path(0)
    assert path is not None
    labels = np.asarray(Image.open(path))
    ctype, body = get(site, "/overlay/semantic/0.png")
    rgba = np.asarray(Image.open(io.BytesIO(body)))
    assert rgba.shape == labels.shape + (4,)
    void = labels == 255
    assert (rgba[void, 3] == 0).all() and (rgba[~void, 3] == 255).all()
    np.testing.assert_array_equal(rgba[~void, :3], v.ds.palette[labels[~void]])


def test_ground_truth_carries_the_layouts_keypoints(site):
    """Persons get their keypoints from person_keypoints_SPLIT.json (matched by annotation id), with
    the skeleton in the metadata for the client."""
    kp = json.loads((site["gt_file"].parent / "person_keypoints_val.json").read_text())
    want = {a["id"]: a["keypoints"] for a in kp["annotations"]}
    page = get(site, "/api/images?size=100")
    got = {o["id"]: o["kp"] for im in page["images"] for o in im["gt"] if "kp" in o}
    assert got and set(got) == set(want)
    for i, k in got.items():
        np.testing.assert_allclose(k, want[i], atol=0.05)
    meta = get(site, "/api/meta")
    assert len(meta["keypoints"]["names"]) == 17 and [15, 13] in meta["keypoints"]["skeleton"]



def test_facts_at_another_iou_are_ready_whoever_asks_first(site):
    """A request for a new IoU that arrives while a matching thread holds the lock waits for it, then
    finds the facts made and says 'ready' (it once started a second thread that found them made and
    never said 'ready': the page polled 'computing' for ever -- a CI failure under xdist)."""
    import threading

    from sceneparse.viewer.facts import compute_facts

    src = site["viewer"].sources["good"]
    iou = 0.65
    got = {}
    with src.lock:  # as a matching thread does while it computes
        t = threading.Thread(target=lambda: got.setdefault("second", src.facts_later(iou)))
        t.start()  # passes the lock-free check (nothing made yet), then waits for the lock
        time.sleep(0.3)
        src.facts_state[iou] = "computing"
        src.facts[iou] = compute_facts(src.pair, iou)
        src.facts_state[iou] = "ready"
    t.join(10)
    assert got["second"] is src.facts[iou]
    time.sleep(0.3)  # a stray thread, if one was started, has finished by now
    assert src.facts_state[iou] == "ready"
