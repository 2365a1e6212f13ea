"""Screenshots of ``sceneparse view`` for the README: the grid, one image, the plots page.

Draws a small synthetic set (``sceneparse data synth``, 24 images of 256 px, 12 in val), writes two
prediction files made from its ground truth (jittered boxes, some relabelled, masks on some: a
"good" and a "noisy" source) and one broken file, serves them with :mod:`sceneparse.viewer` and
photographs the pages in headless Chromium (selenium), then shrinks the PNGs (palette of 128
colours) into ``docs/img/view_grid.png``, ``view_image.png``, ``view_plots.png``.

    python benchmarks/screenshots_view.py [--out docs/img]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def predictions(gt: dict, seed: int, noise: float) -> list[dict]:
    """Jittered copies of the ground-truth boxes (two per object), 15 % relabelled, half with the mask."""
    rng = np.random.default_rng(seed)
    cats = [c["id"] for c in gt["categories"] if c.get("isthing", 1)]
    out = []
    for n, a in enumerate(gt["annotations"]):
        if a.get("iscrowd"):
            continue
        x, y, w, h = a["bbox"]
        for k in range(2):
            j = rng.normal(0, noise * (k + 1), 4)
            c = a["category_id"] if rng.random() > 0.15 else int(rng.choice(cats))
            r = {"image_id": a["image_id"], "category_id": c, "score": round(float(rng.uniform(0.2, 1)), 3),
                 "bbox": [x + j[0] * w, y + j[1] * h, w * abs(1 + j[2]), h * abs(1 + j[3])]}
            if k == 0 and n % 2 == 0 and isinstance(a.get("segmentation"), dict):
                r["segmentation"] = a["segmentation"]
            out.append(r)
    return out


def shrink(src: Path, dst: Path, width: int = 1000) -> None:
    from PIL import Image

    with Image.open(src) as im:
        im = im.convert("RGB")
        if im.width > width:
            im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
        im.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(dst, optimize=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/img")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    from sceneparse.cli import main as cli
    from sceneparse.viewer import Dataset, Viewer, serve_in_thread

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="sceneparse-shots-"))
    try:
        data = work / "synth"
        cli(["data", "synth", "--out", str(data), "--images", "24", "--size", "256", "--val-fraction", "0.5",
             "--workers", "1", "--no-progress", "--seed", "7"])
        gt = json.loads((data / "annotations" / "instances_val.json").read_text())
        (work / "model_a.json").write_text(json.dumps(predictions(gt, 0, 0.05)))
        (work / "model_b.json").write_text(json.dumps(predictions(gt, 1, 0.15)))
        (work / "old_run.json").write_text(json.dumps([{"image_id": 424242, "category_id": 1, "score": 0.9,
                                                        "bbox": [0, 0, 10, 10]}]))
        viewer = Viewer(Dataset(data), [str(work / n) for n in ("model_a.json", "model_b.json", "old_run.json")],
                        cache_dir=work / "cache", processes=False)
        server, _ = serve_in_thread(viewer, port=0)
        viewer.wait()
        opts = webdriver.ChromeOptions()
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1050",
                  "--hide-scrollbars"):
            opts.add_argument(a)
        opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
        d = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
        try:
            def settle(cond, timeout=60):
                end = time.time() + timeout
                while not d.execute_script(cond):
                    if time.time() > end:
                        raise RuntimeError(f"timed out: {cond}")
                    time.sleep(0.2)
                time.sleep(0.5)

            d.get(server.url)
            settle("return S.items && S.items.length && S.items.every(i => i._img.complete)")
            Select(d.find_element(By.ID, "sort")).select_by_value("ap_diff")
            Select(d.find_element(By.ID, "order")).select_by_value("desc")
            settle("return S.items && S.items.every(i => i._img.complete)")
            d.save_screenshot(str(work / "grid.png"))
            d.find_elements(By.CSS_SELECTOR, "#grid .card")[0].click()
            settle("return !document.getElementById('image-view').hidden && S.current && S.current._img.complete")
            d.save_screenshot(str(work / "image.png"))
            d.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
            d.get(server.url + "#plots")
            settle("const im = [...document.querySelectorAll('#plots img')]; "
                   "return im.length >= 6 && im.every(i => i.complete && i.naturalWidth > 0)", timeout=180)
            d.save_screenshot(str(work / "plots.png"))
        finally:
            d.quit()
            server.shutdown()
        for name in ("grid", "image", "plots"):
            shrink(work / f"{name}.png", out / f"view_{name}.png")
            print(f"wrote {out / f'view_{name}.png'} ({(out / f'view_{name}.png').stat().st_size / 1e3:.0f} kB)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
