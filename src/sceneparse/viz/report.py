"""A self-contained HTML report of a run: metrics tables, figures and annotated images.

The report is a folder: ``index.html`` plus the PNGs it shows, referenced by *relative* paths so the
folder can be zipped, copied or served as it is. Nothing is fetched from the network (no scripts,
no web fonts). Values are HTML-escaped; numbers are formatted with a fixed precision.

    report = Report("sceneparse demo")
    report.text("Trained maskrcnn_resnet18_fpn for 4 min on 400 synthetic images.")
    report.table("COCO box AP", {"AP": 0.51, "AP50": 0.80})
    report.figure("loss_curve.png", "training loss")
    report.gallery(["pred/0001.png", "pred/0002.png"], "predictions on held-out images")
    report.write("runs/demo/report")        # -> runs/demo/report/index.html
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..fileio import atomic_write_text

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
     color:#222;padding:0 1em}
h1{font-size:1.6em;border-bottom:2px solid #ddd;padding-bottom:.3em}
h2{font-size:1.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.25em .7em;text-align:right;font-variant-numeric:tabular-nums}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:.4em;vertical-align:top}
figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.85em;color:#555}
.gallery figure{width:31%} .gallery img{width:100%}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto}
"""


def _fmt(v: Any, digits: int) -> str:
    if isinstance(v, bool) or v is None:
        return html.escape(str(v))
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.{digits}f}"
    return html.escape(str(v))


@dataclass
class Report:
    """Sections appended in order and written as one HTML page (see module docstring)."""

    title: str
    _parts: list[str] = field(default_factory=list)
    _files: list[str] = field(default_factory=list)

    def heading(self, text: str) -> "Report":
        self._parts.append(f"<h2>{html.escape(text)}</h2>")
        return self

    def text(self, text: str) -> "Report":
        self._parts.append(f"<p>{html.escape(text)}</p>")
        return self

    def code(self, text: str) -> "Report":
        self._parts.append(f"<pre>{html.escape(text)}</pre>")
        return self

    def table(self, title: str | None, data: Mapping[str, Any] | Sequence[Mapping[str, Any]], *,
              digits: int = 3) -> "Report":
        """A ``{name: value}`` mapping becomes a two-column table; a list of row mappings becomes a table
        whose columns are the union of the rows' keys, in first-seen order."""
        rows = [dict(data)] if isinstance(data, Mapping) else [dict(r) for r in data]
        if title:
            self.heading(title)
        if isinstance(data, Mapping):
            body = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{_fmt(v, digits)}</td></tr>"
                           for k, v in data.items())
            self._parts.append(f"<table><tr><th>metric</th><th>value</th></tr>{body}</table>")
            return self
        cols: list[str] = []
        for r in rows:
            cols += [k for k in r if k not in cols]
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c, ''), digits)}</td>" for c in cols) + "</tr>"
                       for r in rows)
        self._parts.append(f"<table><tr>{head}</tr>{body}</table>")
        return self

    def figure(self, path: str, caption: str = "") -> "Report":
        """An image by path *relative to the report folder* (checked to exist when writing)."""
        self._files.append(path)
        self._parts.append(f'<figure><img src="{html.escape(_url(path))}" alt="{html.escape(caption)}">'
                           f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        return self

    def gallery(self, paths: Sequence[str], title: str | None = None,
                captions: Sequence[str] | None = None) -> "Report":
        if title:
            self.heading(title)
        captions = list(captions) if captions is not None else [Path(p).name for p in paths]
        self._files += list(paths)
        items = "".join(f'<figure><img src="{html.escape(_url(p))}" alt="{html.escape(c)}">'
                        f"<figcaption>{html.escape(c)}</figcaption></figure>" for p, c in zip(paths, captions))
        self._parts.append(f'<div class="gallery">{items}</div>')
        return self

    def render(self) -> str:
        return ("<!doctype html><html><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>"
                f"<h1>{html.escape(self.title)}</h1>" + "\n".join(self._parts) + "</body></html>\n")

    def write(self, folder: str | os.PathLike) -> Path:
        """Write ``folder/index.html`` atomically. Every referenced image must exist in ``folder``:
        a report with broken pictures is an error, not a surprise for the reader."""
        folder = Path(folder)
        missing = [p for p in self._files if not (folder / p).is_file()]
        if missing:
            raise FileNotFoundError(f"report {folder}: referenced images are missing: {missing[:5]}"
                                    + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""))
        folder.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(folder / "index.html", self.render())


def _url(path: str) -> str:
    return Path(path).as_posix()
