"""A self-contained HTML report of a run: headline numbers, notes, metrics tables, figures, annotated
images, links to the run's files.

The report is a folder: ``index.html`` plus the files it shows or links, referenced by *relative*
paths so the folder can be zipped, copied or served as it is. Nothing is fetched from the network (no
scripts, no web fonts). Values are HTML-escaped; floats are formatted with a fixed precision and
``None`` reads "n/a" (say why in a table's ``footnote``).

    report = Report("sceneparse demo")
    report.text("Trained maskrcnn_resnet18_fpn for 4 min on 400 synthetic images.")
    report.cards({"box AP": "0.512", "mask AP": "0.470"})
    report.note("No detection reached the drawing threshold 0.25.", kind="warn")
    report.heading("accuracy", anchor="accuracy")   # headings with an anchor go into the contents
    report.table("COCO box AP", {"AP": 0.51, "AP50": 0.80})
    report.figure("loss_curve.png", "training loss")
    report.gallery(["pred/0001.png", "pred/0002.png"], "predictions on held-out images")
    report.links([("train/best.pt", "best checkpoint")])
    report.write("runs/demo/report")        # -> runs/demo/report/index.html
"""
from __future__ import annotations

import html
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ..fileio import atomic_write_text

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em auto;max-width:1200px;
     color:#222;padding:0 1em;line-height:1.4}
h1{font-size:1.6em;border-bottom:2px solid #ddd;padding-bottom:.3em}
h2{font-size:1.3em;margin-top:1.8em;border-bottom:1px solid #eee;padding-bottom:.2em}
h3{font-size:1.05em;margin:1.2em 0 .3em}
table{border-collapse:collapse;margin:.4em 0}
th,td{border:1px solid #ccc;padding:.22em .7em;text-align:right;font-variant-numeric:tabular-nums}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
td.na{color:#999} td.t{text-align:left}
.foot{font-size:.85em;color:#666;margin:.2em 0 .8em}
figure{display:inline-block;margin:.4em .6em .4em 0;vertical-align:top;max-width:100%}
figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.85em;color:#555;max-width:36em}
.gallery{display:grid;grid-template-columns:repeat(var(--cols),1fr);gap:.6em}
.gallery figure{margin:0} .gallery img{width:100%}
pre{background:#f7f7f7;padding:.6em;white-space:pre-wrap;word-break:break-word}
.note{padding:.6em .9em;margin:.6em 0;border-left:4px solid #4e79a7;background:#eef3f9}
.note.warn{border-color:#e8a33d;background:#fdf5e6}
.note.bad{border-color:#d9534f;background:#fbeceb}
.cards{display:flex;flex-wrap:wrap;gap:.6em;margin:.8em 0}
.card{border:1px solid #ddd;border-radius:6px;padding:.3em .7em;min-width:5.5em;background:#fafafa}
.card .v{font-size:1.4em;font-weight:600;font-variant-numeric:tabular-nums}
.card .k{font-size:.8em;color:#666}
nav{font-size:.9em;margin:.4em 0 1em} nav a{margin-right:1em}
ul.links{padding-left:1.2em} ul.links code{font-size:.95em}
details{margin:.4em 0} summary{cursor:pointer;color:#355}
"""

#: how ``None`` (a metric that has no value, e.g. COCO's -1 for an empty area range) reads in a table
NA = "n/a"


def _fmt(v: Any, digits: int) -> str:
    if v is None:
        return NA
    if isinstance(v, bool):
        return html.escape(str(v))
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.{digits}f}"
    return html.escape(str(v))


def _cell(v: Any, digits: int) -> str:
    if v is None:
        return f'<td class="na">{NA}</td>'
    if isinstance(v, str):  # words read from the left; numbers line up on the right
        return f'<td class="t">{_fmt(v, digits)}</td>'
    return f"<td>{_fmt(v, digits)}</td>"


def _anchor(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-") or "section"


@dataclass
class Report:
    """Sections appended in order and written as one HTML page (see module docstring)."""

    title: str
    _parts: list[str] = field(default_factory=list)
    _files: list[str] = field(default_factory=list)
    _toc: list[tuple[str, str]] = field(default_factory=list)

    # ---- text -----------------------------------------------------------------------------------
    def heading(self, text: str, *, anchor: str | None = None, level: int = 2) -> "Report":
        """A section heading; with ``anchor`` (an id) it is listed in the contents at the top."""
        if anchor is not None:
            anchor = _anchor(anchor)
            self._toc.append((anchor, text))
            self._parts.append(f'<h{level} id="{anchor}">{html.escape(text)}</h{level}>')
        else:
            self._parts.append(f"<h{level}>{html.escape(text)}</h{level}>")
        return self

    def text(self, text: str) -> "Report":
        self._parts.append(f"<p>{html.escape(text)}</p>")
        return self

    def code(self, text: str) -> "Report":
        self._parts.append(f"<pre>{html.escape(text)}</pre>")
        return self

    def note(self, text: str, kind: str = "info") -> "Report":
        """A highlighted paragraph: ``kind`` is ``info``, ``warn`` (something the reader should know
        to read what follows) or ``bad`` (the result is poor)."""
        if kind not in ("info", "warn", "bad"):
            raise ValueError(f"note kind must be info, warn or bad, got {kind!r}")
        self._parts.append(f'<div class="note {kind}">{html.escape(text)}</div>')
        return self

    def cards(self, items: Mapping[str, Any], *, digits: int = 3) -> "Report":
        """Headline numbers as big values with a small label under each."""
        body = "".join(f'<div class="card"><div class="v">{_fmt(v, digits)}</div>'
                       f'<div class="k">{html.escape(str(k))}</div></div>' for k, v in items.items())
        self._parts.append(f'<div class="cards">{body}</div>')
        return self

    # ---- tables ---------------------------------------------------------------------------------
    def table(self, title: str | None, data: Mapping[str, Any] | Sequence[Mapping[str, Any]], *,
              digits: int = 3, footnote: str | None = None,
              header: Sequence[str] | None = ("metric", "value")) -> "Report":
        """A ``{name: value}`` mapping becomes a two-column table (``header``; ``None``: no header row);
        a list of row mappings becomes a table whose columns are the union of the rows' keys, in
        first-seen order. ``None`` values read :data:`NA`, text is left-aligned and numbers right-aligned;
        ``footnote`` is a line of small text under the table."""
        rows = [dict(data)] if isinstance(data, Mapping) else [dict(r) for r in data]
        if title:
            self.heading(title, level=3)
        if isinstance(data, Mapping):
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header) if header else ""
            body = "".join(f"<tr><td>{html.escape(str(k))}</td>{_cell(v, digits)}</tr>" for k, v in data.items())
        else:
            cols: list[str] = []
            for r in rows:
                cols += [k for k in r if k not in cols]
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
            body = "".join("<tr>" + "".join(_cell(r.get(c, ""), digits) for c in cols) + "</tr>" for r in rows)
        self._parts.append(f"<table>{f'<tr>{head}</tr>' if head else ''}{body}</table>")
        if footnote:
            self._parts.append(f'<p class="foot">{html.escape(footnote)}</p>')
        return self

    # ---- pictures -------------------------------------------------------------------------------
    def figure(self, path: str, caption: str = "") -> "Report":
        """An image by path *relative to the report folder* (checked to exist when writing)."""
        self._files.append(path)
        self._parts.append(f'<figure><img src="{html.escape(_url(path))}" alt="{html.escape(caption)}">'
                           f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        return self

    def gallery(self, paths: Sequence[str], title: str | None = None,
                captions: Sequence[str] | None = None, *, columns: int = 3) -> "Report":
        """Images in a grid of ``columns`` (each with a caption; default: the file name)."""
        if title:
            self.heading(title, level=3)
        captions = list(captions) if captions is not None else [Path(p).name for p in paths]
        return self.figures(list(zip(paths, captions)), columns=columns)

    def figures(self, items: Sequence[tuple[str, str]], *, columns: int = 2) -> "Report":
        """``(path, caption)`` images side by side in a grid of ``columns``, each scaled to its cell."""
        self._files += [p for p, _ in items]
        cells = "".join(f'<figure><img src="{html.escape(_url(p))}" alt="{html.escape(c)}">'
                        f"<figcaption>{html.escape(c)}</figcaption></figure>" for p, c in items)
        self._parts.append(f'<div class="gallery" style="--cols:{max(1, int(columns))}">{cells}</div>')
        return self

    # ---- files ----------------------------------------------------------------------------------
    def links(self, items: Sequence[tuple[str, str]], title: str | None = None) -> "Report":
        """A list of links to files ``(path relative to the report folder, what it is)``; like images,
        they must exist when the report is written."""
        if title:
            self.heading(title, level=3)
        self._files += [p for p, _ in items]
        body = "".join(f'<li><a href="{html.escape(_url(p))}"><code>{html.escape(_url(p))}</code></a>'
                       f" &mdash; {html.escape(d)}</li>" for p, d in items)
        self._parts.append(f'<ul class="links">{body}</ul>')
        return self

    @contextmanager
    def collapsed(self, summary: str) -> Iterator["Report"]:
        """Whatever is appended inside the ``with`` block is folded under ``summary`` (``<details>``)."""
        self._parts.append(f"<details><summary>{html.escape(summary)}</summary>")
        try:
            yield self
        finally:
            self._parts.append("</details>")

    # ---- output ---------------------------------------------------------------------------------
    def render(self) -> str:
        nav = ""
        if len(self._toc) > 1:
            nav = "<nav>" + "".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t in self._toc) + "</nav>"
        return ("<!doctype html><html><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>"
                f"<h1>{html.escape(self.title)}</h1>{nav}" + "\n".join(self._parts) + "</body></html>\n")

    def write(self, folder: str | os.PathLike) -> Path:
        """Write ``folder/index.html`` atomically. Every referenced image and linked file must exist in
        ``folder``: a report with broken pictures or links is an error, not a surprise for the reader."""
        folder = Path(folder)
        missing = [p for p in self._files if not (folder / p).is_file()]
        if missing:
            raise FileNotFoundError(f"report {folder}: referenced files are missing: {missing[:5]}"
                                    + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""))
        folder.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(folder / "index.html", self.render())


def _url(path: str) -> str:
    return Path(path).as_posix()
