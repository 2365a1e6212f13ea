"""The HTTP side of ``sceneparse view``: a JSON API, images and plots, and the static client.

Built on the standard library's :class:`http.server.ThreadingHTTPServer` (one thread per request):
the viewer is a local, single-user tool bound to 127.0.0.1, the standard library's server is
maintained with CPython itself, and it adds no dependency to a toolkit whose users install it for
models; JSON is encoded by msgspec (already a dependency).

Routes (``I`` = image index in the dataset's file order)::

    GET  /                          the client (static/index.html; static/* for its JS and CSS)
    GET  /api/meta                  classes, palette, skeleton, maps present, sources and their state
    GET  /api/status                sources' state (loading / matching / ready / error with its message)
    GET  /api/images?page&size&sort&order&src&src2&cls&filter&iou   one page of the grid
    GET  /api/image/I?iou           one image: objects of every source, facts, neighbours in the order
    GET  /thumb/I?s=320             a JPEG thumbnail (made on demand, cached on disk)
    GET  /file/I                    the image file itself
    GET  /overlay/semantic/I.png    label PNG / panoptic PNG coloured by class (transparent void)
    GET  /plot/SRC/KIND.png?iou     KIND: pr | confusion | errors (viz.plots; rendered once, cached)
    POST /api/explain/I             runs 'sceneparse explain --model CKPT IMAGE' (with --model)
    GET  /explain/I/NAME.png        its pictures
"""
from __future__ import annotations

import mimetypes
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import msgspec
import numpy as np

from ..errors import SceneparseError
from .facts import ERROR_TYPES
from .store import PAGE_SIZE, Dataset, Source

STATIC = Path(__file__).resolve().parent / "static"
PLOT_KINDS = ("pr", "confusion", "errors")
#: sort keys that need a source's facts (plus every error type's name)
FACT_KEYS = ("ap", "tp", "fp", "fn", "ap_diff") + ERROR_TYPES


class Viewer:
    """A dataset, its prediction sources and a disk cache; loads sources in background threads.

    Args:
        dataset: the :class:`Dataset`. predictions: COCO results files (names: their stems, made unique).
        cache_dir: thumbnails, overlays, plots and explain pictures (default: a new temporary folder,
            removed by :meth:`close`). model: a checkpoint for the explain button. iou: first IoU.
        processes: read and match the prediction files in a child process (one, the files in turn), so
            that the server's threads keep answering while 500,000 results are decoded and matched;
            ``False``: in threads of this process (small sets, tests).
    """

    def __init__(self, dataset: Dataset, predictions: list[str] = (), *, cache_dir: str | Path | None = None,
                 model: str | None = None, iou: float = 0.5, processes: bool = True) -> None:
        self.ds = dataset
        self.iou = iou
        self.model = model
        self._own_cache = cache_dir is None
        self.cache = Path(cache_dir) if cache_dir is not None else Path(tempfile.mkdtemp(prefix="sceneparse-view-"))
        self.cache.mkdir(parents=True, exist_ok=True)
        self.sources: dict[str, Source] = {}
        for p in predictions:
            name = stem = Path(p).stem
            k = 2
            while name in self.sources:
                name, k = f"{stem}-{k}", k + 1
            self.sources[name] = Source(name, str(p))
        self._plot_lock = threading.Lock()  # matplotlib is not thread-safe
        self._file_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.processes = processes
        self._executor = None

    def start_loading(self) -> None:
        """Load every source in the background (a thread each, waiting on the child process)."""
        if self.processes and self.sources:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._executor = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        for s in self.sources.values():
            t = threading.Thread(target=s.load, args=(self.ds, self.iou, self._executor), name=f"view-load-{s.name}",
                                 daemon=True)
            t.start()
            self.threads.append(t)
        if self._executor is not None:
            threading.Thread(target=self._release, name="view-release", daemon=True).start()

    def _release(self) -> None:
        """Stop the child process once every source is loaded (its memory goes back)."""
        self.wait()
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    def wait(self, timeout: float | None = None) -> None:
        for t in self.threads:
            t.join(timeout)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._own_cache:
            shutil.rmtree(self.cache, ignore_errors=True)

    def _lock(self, key: str) -> threading.Lock:
        with self._locks_lock:
            return self._file_locks.setdefault(key, threading.Lock())

    # ---- JSON ------------------------------------------------------------------------------
    def meta(self) -> dict:
        return {**self.ds.meta(), "iou": self.iou, "page_size": PAGE_SIZE, "error_types": list(ERROR_TYPES),
                "explain": self.model is not None, "sources": [s.status() for s in self.sources.values()]}

    def status(self) -> dict:
        return {"sources": [s.status() for s in self.sources.values()]}

    def _facts(self, name: str | None, iou: float):
        s = self.sources.get(name) if name else None
        if s is None or s.state not in ("matching", "ready"):
            return s, None
        if s.state != "ready":
            return s, None
        return s, s.facts_later(iou)  # another IoU: matched in a thread, the page says so meanwhile

    def sort_values(self, key: str, src: str | None, src2: str | None, cls: int | None, iou: float
                    ) -> np.ndarray | None:
        """``float64 [I]`` value per dataset image of sort key ``key`` (NaN: not defined), or ``None``."""
        n = len(self.ds)
        if key == "index":
            return np.arange(n, dtype=np.float64)
        if key == "id":
            return self.ds.ids.astype(np.float64)
        if key == "objects":
            return np.diff(self.ds.offsets).astype(np.float64)
        s, f = self._facts(src, iou)
        if f is None:
            return None
        p = s.ds2pair
        if key == "ap":
            v = f.ap if cls is None else f.class_ap[:, self._cat_index(s, cls)]
            return v[p]
        if key == "ap_diff":
            s2, f2 = self._facts(src2, iou)
            if f2 is None:
                return None
            a = f.ap if cls is None else f.class_ap[:, self._cat_index(s, cls)]
            b = f2.ap if cls is None else f2.class_ap[:, self._cat_index(s2, cls)]
            return a[p] - b[s2.ds2pair]
        if key in ("tp", "fp", "fn"):
            return getattr(f, key)[p].astype(np.float64)
        if key in f.errors:
            return f.errors[key][p].astype(np.float64)
        return None

    def _cat_index(self, s: Source, label: int) -> int:
        cid = self.ds.aset.categories.to_id(int(label))
        return int(np.searchsorted(s.pair.cat_ids, cid))

    def page(self, q: dict[str, str]) -> dict:
        """One page of the grid: images (by the sort / filter asked for) with every source's objects."""
        t0, c0 = time.perf_counter(), time.thread_time()
        iou = float(q.get("iou", self.iou))
        size = max(1, min(int(q.get("size", PAGE_SIZE)), 500))
        page = max(0, int(q.get("page", 0)))
        key = q.get("sort", "index")
        src, src2 = q.get("src") or None, q.get("src2") or None
        cls = int(q["cls"]) if q.get("cls", "") not in ("", None) else None
        desc = q.get("order", "asc") == "desc"
        flt = q.get("filter") or None
        n = len(self.ds)
        keep = np.ones(n, dtype=bool)
        note = ""
        if cls is not None:
            counts = np.bincount(self.ds.ann_image[self.ds.ann_label == cls].clip(0), minlength=n) > 0
            for s in self.sources.values():
                if s.state in ("matching", "ready") and s.label is not None:
                    counts |= np.bincount(s.image[s.label == cls], minlength=n) > 0
            keep &= counts
        if flt:
            v = self.sort_values(flt, src, src2, None, iou)
            if v is None:
                note = f"filter {flt!r} needs a loaded source (src)"
            else:
                keep &= np.nan_to_num(v) > 0
        order = np.flatnonzero(keep)
        values = None
        if key not in ("index",):
            values = self.sort_values(key, src, src2, cls, iou)
            if values is None:
                note = note or f"sort {key!r} waits for source {src!r} (not loaded, or it failed)"
            else:
                v = values[order]
                finite = np.isfinite(v)
                srt = np.argsort(np.where(finite, -v if desc else v, 0.0), kind="stable")
                srt = np.concatenate([srt[finite[srt]], srt[~finite[srt]]])  # undefined last
                order = order[srt]
        elif desc:
            order = order[::-1]
        waiting = [n for n, s in self.sources.items() if s.state == "ready" and round(iou, 2) not in s.facts]
        if waiting:
            note = (note + "; " if note else "") + f"matching {', '.join(waiting)} at IoU {iou:g} ..."
        total = len(order)
        rows = order[page * size:(page + 1) * size]
        facts = {name: self._facts(name, iou)[1] for name in self.sources}
        preds = {name: s.objects_of(rows.tolist(), facts[name]) for name, s in self.sources.items()
                 if s.state in ("matching", "ready")}
        images = [self.image_json(i, facts, values, {n: p[j] for n, p in preds.items()})
                  for j, i in enumerate(rows.tolist())]
        return {"total": total, "page": page, "size": size, "images": images, "note": note,
                "order": order.tolist() if total <= 20000 else None, "iou": iou,
                "sources": [s.status() for s in self.sources.values()],
                "ms": round(1000 * (time.perf_counter() - t0), 2), "cpu_ms": round(1000 * (time.thread_time() - c0), 2)}

    def image_json(self, i: int, facts: dict, values: np.ndarray | None = None, preds: dict | None = None) -> dict:
        """One image for the client: record, ground truth, every loaded source's predictions (columns,
        see :meth:`Source.objects`) and facts, the ``Miss`` annotation ids per source, map URLs."""
        r = self.ds.images[i]
        out = {"index": i, "id": int(r.id), "file_name": r.file_name, "width": int(r.width), "height": int(r.height),
               "gt": self.ds.objects(i), "preds": {}, "facts": {}}
        if values is not None and np.isfinite(values[i]):
            out["value"] = round(float(values[i]), 4)
        missed = {}
        for name, s in self.sources.items():
            if s.state not in ("matching", "ready"):
                continue
            f = facts.get(name)
            out["preds"][name] = preds[name] if preds is not None and name in preds else s.objects(i, f)
            if f is not None:
                out["facts"][name] = s.image_facts(f, i)
                gone = s.missed_ids(f)
                missed[name] = [o["id"] for o in out["gt"] if o["id"] in gone]
        out["missed"] = missed
        if self.ds.semantic_path(i) is not None:
            out["semantic"] = f"/overlay/semantic/{i}.png"
        if int(r.id) in self.ds.panoptic:
            out["panoptic"] = f"/overlay/panoptic/{i}.png"
        return out

    # ---- files -----------------------------------------------------------------------------
    def thumbnail(self, i: int, size: int) -> Path:
        """A JPEG of image ``i`` whose longer side is at most ``size`` (made once, kept on disk)."""
        from PIL import Image

        size = int(min(max(size, 32), 2048))
        out = self.cache / "thumbs" / f"{i}_{size}.jpg"
        if out.is_file():
            return out
        with self._lock(str(out)):
            if not out.is_file():
                out.parent.mkdir(parents=True, exist_ok=True)
                with Image.open(self.ds.image_path(i)) as im:
                    im.draft("RGB", (size, size))
                    im = im.convert("RGB")
                    im.thumbnail((size, size))
                    tmp = out.with_suffix(".tmp")
                    im.save(tmp, "JPEG", quality=85)
                    os.replace(tmp, out)
        return out

    def overlay(self, kind: str, i: int) -> Path:
        """The semantic / panoptic map of image ``i`` as an RGBA PNG in the class colours."""
        from PIL import Image

        out = self.cache / kind / f"{i}.png"
        if out.is_file():
            return out
        with self._lock(str(out)):
            if out.is_file():
                return out
            pal = self.ds.palette
            rgba = np.zeros((256, 4), np.uint8)
            if kind == "semantic":
                path = self.ds.semantic_path(i)
                if path is None:
                    raise FileNotFoundError(f"no semantic map for image {i}")
                labels = np.asarray(Image.open(path)).astype(np.int64)
                n = min(len(pal), 255)  # 255: void, left transparent
                rgba[:n, :3] = pal[:n]
                rgba[:n, 3] = 255
                img = rgba[labels.clip(0, 255)]
            else:
                rec = self.ds.panoptic[int(self.ds.images[i].id)]
                rgb = np.asarray(Image.open(self.ds.panoptic_root / rec.file_name).convert("RGB")).astype(np.int64)
                ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
                seg_ids = np.array([int(s["id"]) for s in rec.segments_info], dtype=np.int64)
                cats = self.ds.aset.categories
                labels = np.array([cats.to_label(int(s["category_id"])) if cats.has_id(int(s["category_id"])) else -1
                                   for s in rec.segments_info], dtype=np.int64)
                srt = np.argsort(seg_ids)
                pos = np.searchsorted(seg_ids[srt], ids).clip(0, max(len(seg_ids) - 1, 0))
                found = (seg_ids[srt][pos] == ids) if len(seg_ids) else np.zeros(ids.shape, bool)
                lab = np.where(found, labels[srt][pos] if len(seg_ids) else -1, -1)
                img = np.zeros(ids.shape + (4,), np.uint8)
                ok = lab >= 0
                img[ok, :3] = pal[lab[ok]]
                img[ok, 3] = 255
                # segment borders in white: instances of one class stay apart
                edge = np.zeros(ids.shape, bool)
                edge[:, 1:] |= ids[:, 1:] != ids[:, :-1]
                edge[1:, :] |= ids[1:, :] != ids[:-1, :]
                img[edge & ok] = (255, 255, 255, 255)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".tmp")
            Image.fromarray(img, "RGBA").save(tmp, "PNG")
            os.replace(tmp, out)
        return out

    def plot(self, name: str, kind: str, iou: float) -> Path:
        """A plot of one source from :mod:`sceneparse.viz.plots` (rendered on first request, cached)."""
        s = self.sources[name]
        if s.state != "ready":
            raise LookupError(f"source {name} is not loaded ({s.state}{': ' + s.error if s.error else ''})")
        iou = round(float(iou), 2)
        out = self.cache / "plots" / f"{name}_{kind}_{iou:g}.png"
        if out.is_file():
            return out
        from ..viz import plots

        with self._plot_lock:
            if out.is_file():
                return out
            out.parent.mkdir(parents=True, exist_ok=True)
            things = [n for n, t in zip(self.ds.names, self.ds.things) if t]  # stuff has no boxes
            if kind == "errors":
                plots.plot_error_breakdown(s.facts_at(iou).tide, out)
            elif kind == "confusion":
                from ..evaluation.confusion import confusion_from_columns

                plots.plot_confusion_matrix(confusion_from_columns(s.pair, iou=iou), out, classes=things)
            else:
                from ..evaluation import evaluate_coco

                result = evaluate_coco(self.ds.gt_file, s.path, "bbox")
                t = min(np.linspace(0.5, 0.95, 10), key=lambda v: abs(v - iou))
                plots.plot_pr_curves(result, out, iou=float(t),
                                     names=dict(zip(self.ds.aset.categories.ids, self.ds.names)), classes=things)
        return out

    def explain(self, i: int, timeout: float = 600) -> dict:
        """Run ``sceneparse explain --model CKPT IMAGE --out DIR`` for image ``i``; its PNGs."""
        if self.model is None:
            return {"error": "start the viewer with --model CKPT to explain images", "pictures": []}
        out = self.cache / "explain" / str(i)
        with self._lock(str(out)):
            if not out.is_dir() or not any(out.glob("*.png")):
                out.mkdir(parents=True, exist_ok=True)
                cmd = [sys.executable, "-m", "sceneparse", "explain", "--model", str(self.model),
                       str(self.ds.image_path(i)), "--out", str(out)]
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
                if p.returncode != 0:
                    return {"error": (p.stderr or p.stdout).strip()[-2000:], "pictures": []}
        return {"error": "", "pictures": [f"/explain/{i}/{q.name}" for q in sorted(out.glob("*.png"))]}


class Handler(BaseHTTPRequestHandler):
    """Routes requests to the :class:`Viewer` in ``server.viewer``."""

    server_version = "sceneparse-view"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 -- quiet unless asked
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)

    @property
    def viewer(self) -> Viewer:
        return self.server.viewer  # type: ignore[attr-defined]

    def _send(self, body: bytes, ctype: str, status: int = 200, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200) -> None:
        self._send(msgspec.json.encode(obj), "application/json", status)

    def _file(self, path: Path, cache: bool = True) -> None:
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self._send(path.read_bytes(), ctype, cache=cache)

    def do_HEAD(self):  # noqa: N802
        self.do_GET()

    def do_GET(self):  # noqa: N802
        url = urlparse(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        path = url.path
        try:
            if path in ("/", "/index.html"):
                return self._file(STATIC / "index.html", cache=False)
            m = re.fullmatch(r"/static/([A-Za-z0-9_.-]+)", path)
            if m and (STATIC / m.group(1)).is_file():
                return self._file(STATIC / m.group(1), cache=False)
            if path == "/api/meta":
                return self._json(self.viewer.meta())
            if path == "/api/status":
                return self._json(self.viewer.status())
            if path == "/api/images":
                return self._json(self.viewer.page(q))
            m = re.fullmatch(r"/api/image/(\d+)", path)
            if m:
                v = self.viewer
                i = self._index(m.group(1))
                iou = float(q.get("iou", v.iou))
                facts = {n: v._facts(n, iou)[1] for n in v.sources}
                return self._json(v.image_json(i, facts))
            m = re.fullmatch(r"/thumb/(\d+)", path)
            if m:
                return self._file(self.viewer.thumbnail(self._index(m.group(1)), int(q.get("s", 320))))
            m = re.fullmatch(r"/file/(\d+)", path)
            if m:
                return self._file(self.viewer.ds.image_path(self._index(m.group(1))))
            m = re.fullmatch(r"/overlay/(semantic|panoptic)/(\d+)\.png", path)
            if m:
                return self._file(self.viewer.overlay(m.group(1), self._index(m.group(2))))
            m = re.fullmatch(r"/plot/([^/]+)/(pr|confusion|errors)\.png", path)
            if m:
                if m.group(1) not in self.viewer.sources:
                    return self._json({"error": f"no source {m.group(1)!r}"}, 404)
                return self._file(self.viewer.plot(m.group(1), m.group(2), float(q.get("iou", self.viewer.iou))))
            m = re.fullmatch(r"/explain/(\d+)/([A-Za-z0-9_.-]+\.png)", path)
            if m:
                p = self.viewer.cache / "explain" / str(self._index(m.group(1))) / m.group(2)
                if p.is_file():
                    return self._file(p)
            return self._json({"error": f"not found: {path}"}, 404)
        except (KeyError, IndexError, ValueError) as e:
            return self._json({"error": f"bad request {path}: {type(e).__name__}: {e}"}, 400)
        except (SceneparseError, LookupError, OSError) as e:
            return self._json({"error": str(e)}, 409 if isinstance(e, LookupError) else 500)
        except BrokenPipeError:
            return None

    def do_POST(self):  # noqa: N802
        m = re.fullmatch(r"/api/explain/(\d+)", urlparse(self.path).path)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if not m:
            return self._json({"error": "not found"}, 404)
        try:
            return self._json(self.viewer.explain(self._index(m.group(1))))
        except (subprocess.TimeoutExpired, OSError, IndexError) as e:
            return self._json({"error": str(e), "pictures": []}, 500)

    def _index(self, text: str) -> int:
        i = int(text)
        if not 0 <= i < len(self.viewer.ds):
            raise IndexError(f"image index {i} out of range 0..{len(self.viewer.ds) - 1}")
        return i


class ViewServer(ThreadingHTTPServer):
    """A threading HTTP server holding the :class:`Viewer` its handlers use."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, viewer: Viewer, host: str = "127.0.0.1", port: int = 8765, verbose: bool = False) -> None:
        super().__init__((host, port), Handler)
        self.viewer = viewer
        self.verbose = verbose

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


def serve_in_thread(viewer: Viewer, host: str = "127.0.0.1", port: int = 0) -> tuple[ViewServer, threading.Thread]:
    """Start loading the sources and serve on ``host:port`` (0: a free port) in a daemon thread."""
    server = ViewServer(viewer, host, port)
    viewer.start_loading()
    t = threading.Thread(target=server.serve_forever, name="sceneparse-view", daemon=True)
    t.start()
    return server, t


__all__ = ["Handler", "PLOT_KINDS", "ViewServer", "Viewer", "serve_in_thread"]
