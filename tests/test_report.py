import html.parser

import numpy as np
import pytest

from sceneparse.viz.draw import save_image
from sceneparse.viz.report import Report


class _Collect(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.cells, self.imgs = [], [], []
        self._cell = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._cell = tag in ("td", "th")
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])

    def handle_data(self, data):
        if self._cell:
            self.cells.append(data)

    def handle_endtag(self, tag):
        self._cell = False


def test_report_tables_figures_and_escaping(tmp_path):
    save_image(tmp_path / "curves" / "pr.png", np.zeros((4, 4, 3), np.uint8))
    save_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    r = Report("run <1>")
    r.table("metrics", {"AP": 0.51234, "AP50": float("nan"), "note": "<b>x</b>"})
    r.table("per class", [{"class": "star", "AP": 0.5}, {"class": "ring", "AP": 0.25, "AR": 1.0}], digits=2)
    r.figure("curves/pr.png", "PR")
    r.gallery(["a.png"], "predictions")
    out = r.write(tmp_path)
    text = out.read_text()
    assert "<b>x</b>" not in text and "&lt;b&gt;x&lt;/b&gt;" in text and "run &lt;1&gt;" in text
    p = _Collect()
    p.feed(text)
    assert p.imgs == ["curves/pr.png", "a.png"]
    # mapping table: metric/value rows with 3 digits; list table: union of columns, 2 digits, blanks
    assert p.cells[:8] == ["metric", "value", "AP", "0.512", "AP50", "nan", "note", "<b>x</b>"]
    assert p.cells[8:] == ["class", "AP", "AR", "star", "0.50", "ring", "0.25", "1.00"]


def test_report_refuses_missing_images(tmp_path):
    r = Report("x").figure("nope.png", "missing")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        r.write(tmp_path)
    assert not (tmp_path / "index.html").exists()
