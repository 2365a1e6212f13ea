// sceneparse view: the client. Plain JS, no build step, nothing from the internet.
// The server sends objects in original image pixels (boxes XYXY, masks as COCO RLE / polygons,
// keypoints x, y, v); everything is drawn here on canvases. Each drawn canvas records what it drew
// in data-drawn-<source> attributes (the browser tests read them).
"use strict";
const S = {meta: null, page: 0, order: [], hidden: new Set(), hiddenKinds: new Set(), sources: {}, current: null,
           drawn: {}, statusTimer: null};
const $ = (id) => document.getElementById(id);
const KINDS = ["TP", "Cls", "Loc", "Both", "Dupe", "Bkg", "ignored", "dropped"];
const DASH = [[], [6, 3], [2, 2], [8, 2, 2, 2], [4, 4]];

function api(url) {
  return fetch(url).then((r) => r.json().then((j) => { if (!r.ok) throw new Error(j.error || r.statusText); return j; }));
}
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function rgb(label, a) {
  const c = S.meta.palette[label] || [200, 200, 200];
  return a === undefined ? `rgb(${c[0]},${c[1]},${c[2]})` : `rgba(${c[0]},${c[1]},${c[2]},${a})`;
}

// ---- COCO RLE (column-major run lengths; compressed strings as pycocotools writes them) ----
function rleCounts(counts) {
  if (Array.isArray(counts)) return counts;
  const out = []; let p = 0;
  while (p < counts.length) {
    let x = 0, k = 0, more = 1;
    while (more) {
      const c = counts.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k); more = c & 0x20; p++; k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (out.length > 2) x += out[out.length - 2];
    out.push(x);
  }
  return out;
}
function maskCanvas(seg, label, alpha) {
  // an offscreen canvas (image size) holding the mask in the class colour
  const [h, w] = seg.size, cnv = document.createElement("canvas");
  cnv.width = w; cnv.height = h;
  const ctx = cnv.getContext("2d"), img = ctx.createImageData(w, h), d = img.data;
  const c = S.meta.palette[label] || [200, 200, 200], a = Math.round(255 * alpha);
  const counts = rleCounts(seg.counts);
  let idx = 0;
  for (let r = 0; r < counts.length; r++) {
    const n = counts[r];
    if (r % 2 === 1) {
      for (let j = idx; j < idx + n; j++) {
        const x = Math.floor(j / h), y = j - x * h, o = 4 * (y * w + x);
        d[o] = c[0]; d[o + 1] = c[1]; d[o + 2] = c[2]; d[o + 3] = a;
      }
    }
    idx += n;
  }
  ctx.putImageData(img, 0, 0);
  return cnv;
}

// predictions come as columns (i, label, score, box, kind, target[, seg, kp]): one object each here
function unpack(item) {
  for (const [name, c] of Object.entries(item.preds)) {
    if (!Array.isArray(c)) item.preds[name] = c.i.map((i, j) => ({i: i, label: c.label[j], score: c.score[j],
      box: c.box[j], kind: c.kind[j], target: c.target[j], seg: c.seg ? c.seg[j] : null, kp: c.kp ? c.kp[j] : null}));
  }
  return item;
}

// ---- drawing ----
function visible(o, src) {
  if (S.hidden.has("class:" + o.label)) return false;
  if (src !== "gt") {
    if (o.score < parseFloat($("score").value)) return false;
    if (o.kind && S.hiddenKinds.has(o.kind)) return false;
  }
  return true;
}
function drawObjects(ctx, objs, src, k, scale, withText) {
  let n = 0;
  const masks = $("show-masks").checked;
  ctx.setLineDash(src === "gt" ? [] : DASH[1 + (k % (DASH.length - 1))]);
  for (const o of objs) {
    if (!visible(o, src)) continue;
    n++;
    if (masks && o.seg) {
      ctx.save(); ctx.globalAlpha = 1;
      if (Array.isArray(o.seg)) {
        ctx.fillStyle = rgb(o.label, src === "gt" ? 0.35 : 0.25);
        ctx.beginPath();
        for (const poly of o.seg) {
          ctx.moveTo(poly[0] * scale, poly[1] * scale);
          for (let j = 2; j < poly.length; j += 2) ctx.lineTo(poly[j] * scale, poly[j + 1] * scale);
          ctx.closePath();
        }
        ctx.fill();
      } else if (o.seg.counts !== undefined) {
        ctx.imageSmoothingEnabled = false;
        ctx.drawImage(maskCanvas(o.seg, o.label, src === "gt" ? 0.4 : 0.3), 0, 0, o.seg.size[1] * scale, o.seg.size[0] * scale);
      }
      ctx.restore();
    }
    const [x1, y1, x2, y2] = o.box.map((v) => v * scale);
    ctx.strokeStyle = rgb(o.label); ctx.lineWidth = src === "gt" ? 2 : 1.5;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    if (o.kp && S.meta.keypoints) {
      const kp = o.kp;
      ctx.setLineDash([]);
      for (const [a, b] of S.meta.keypoints.skeleton) {
        if (kp[3 * a + 2] > 0 && kp[3 * b + 2] > 0) {
          ctx.beginPath(); ctx.moveTo(kp[3 * a] * scale, kp[3 * a + 1] * scale);
          ctx.lineTo(kp[3 * b] * scale, kp[3 * b + 1] * scale); ctx.stroke();
        }
      }
      ctx.fillStyle = rgb(o.label);
      for (let j = 0; j < kp.length; j += 3) if (kp[j + 2] > 0) ctx.fillRect(kp[j] * scale - 2, kp[j + 1] * scale - 2, 4, 4);
      ctx.setLineDash(src === "gt" ? [] : DASH[1 + (k % (DASH.length - 1))]);
    }
    if (withText) {
      const t = S.meta.classes[o.label] + (src === "gt" ? (o.crowd ? " crowd" : "") : ` ${o.score.toFixed(2)} ${o.kind || ""}`);
      ctx.font = "11px sans-serif"; ctx.fillStyle = rgb(o.label);
      ctx.fillText(t, x1 + 2, Math.max(10, y1 - 2));
    }
  }
  ctx.setLineDash([]);
  return n;
}
function sourcesShown() {
  return ["gt", ...S.meta.sources.map((s) => s.name)].filter((s) => !S.hidden.has("src:" + s));
}
function drawImage(cnv, item, imgEl, scale, withText) {
  const ctx = cnv.getContext("2d");
  ctx.clearRect(0, 0, cnv.width, cnv.height);
  if (imgEl && imgEl.complete && imgEl.naturalWidth) ctx.drawImage(imgEl, 0, 0, cnv.width, cnv.height);
  if ($("show-maps").checked && item._map && item._map.complete && item._map.naturalWidth) {
    ctx.globalAlpha = 0.45; ctx.drawImage(item._map, 0, 0, cnv.width, cnv.height); ctx.globalAlpha = 1;
  }
  const shown = sourcesShown(), counts = {};
  if (shown.includes("gt")) counts.gt = drawObjects(ctx, item.gt, "gt", 0, scale, withText);
  S.meta.sources.forEach((s, k) => {
    if (shown.includes(s.name) && item.preds[s.name]) counts[s.name] = drawObjects(ctx, item.preds[s.name], s.name, k, scale, withText);
  });
  for (const a of [...cnv.attributes]) if (a.name.startsWith("data-drawn-")) cnv.removeAttribute(a.name);
  for (const [k, v] of Object.entries(counts)) cnv.setAttribute("data-drawn-" + k, v);
  return counts;
}

// ---- grid ----
function query() {
  const p = new URLSearchParams({page: S.page, size: S.meta.page_size, sort: $("sort").value, order: $("order").value,
    src: $("src").value, src2: $("src2").value, cls: $("cls").value, filter: $("filter").value, iou: $("iou").value});
  return "/api/images?" + p.toString();
}
function loadGrid() {
  return api(query()).then((res) => {
    S.items = res.images; S.order = res.order || []; S.total = res.total;
    $("note").textContent = res.note || "";
    const pages = Math.max(1, Math.ceil(res.total / res.size));
    $("page-label").textContent = `page ${res.page + 1} / ${pages} (${res.total} images)`;
    showErrors(res.sources);
    const grid = $("grid"); grid.innerHTML = "";
    for (const item of res.images.map(unpack)) {
      const card = el("div", {class: "card", "data-index": item.index, "data-id": item.id});
      const w = 320, scale = Math.min(1, w / Math.max(item.width, item.height));
      const cnv = el("canvas", {width: Math.round(item.width * scale), height: Math.round(item.height * scale)});
      const img = new Image();
      img.onload = () => drawImage(cnv, item, img, scale, false);
      img.src = `/thumb/${item.index}?s=${w}`;
      item._img = img; item._scale = scale; item._cnv = cnv;
      const mapUrl = item.panoptic || item.semantic;
      if (mapUrl) { item._map = new Image(); item._map.onload = () => drawImage(cnv, item, img, scale, false); item._map.src = mapUrl; }
      drawImage(cnv, item, null, scale, false);
      const facts = Object.entries(item.facts).map(([n, f]) =>
        `${n}: AP ${f.ap === null ? "-" : f.ap.toFixed(2)} TP ${f.tp} FP ${f.fp} FN ${f.fn}`).join(" | ");
      const cap = el("div", {class: "cap"}, `${item.file_name}` + ("value" in item ? ` [${item.value}]` : "") + (facts ? " — " + facts : ""));
      card.append(cnv, cap);
      card.addEventListener("click", () => { location.hash = "#image/" + item.index; });
      grid.append(card);
    }
    grid.setAttribute("data-loaded", Date.now());
  }).catch((e) => { $("note").textContent = "error: " + e.message; });
}
function redrawGrid() {
  for (const item of S.items || []) drawImage(item._cnv, item, item._img, item._scale, false);
}

// ---- one image ----
function showImage(i) {
  return api(`/api/image/${i}?iou=${$("iou").value}`).then((item) => {
    unpack(item);
    S.current = item;
    $("image-title").textContent = `${item.file_name} (id ${item.id}, ${item.width}x${item.height})`;
    $("image-link").href = `/file/${i}`;
    $("explain").innerHTML = "";
    $("explain-btn").hidden = !S.meta.explain;
    const cnv = $("big-canvas");
    // full size, or fitted to the space beside the side panel (small images are enlarged to fill it)
    const room = Math.max(320, window.innerWidth - 420), scale = Math.min(room / item.width, Math.max(480, window.innerHeight - 260) / item.height);
    cnv.width = Math.round(item.width * scale); cnv.height = Math.round(item.height * scale);
    const img = new Image();
    item._img = img; item._scale = scale;
    img.onload = () => drawImage(cnv, item, img, scale, true);
    img.src = `/file/${i}`;
    const mapUrl = item.panoptic || item.semantic;
    if (mapUrl) { item._map = new Image(); item._map.onload = () => drawImage(cnv, item, img, scale, true); item._map.src = mapUrl; }
    drawImage(cnv, item, null, scale, true);
    side(item);
  });
}
function side(item) {
  const a = $("side"); a.innerHTML = "";
  for (const [n, f] of Object.entries(item.facts)) {
    a.append(el("h4", {}, `${n} @ IoU ${$("iou").value}`));
    a.append(el("div", {class: "facts", "data-source": n},
      `AP ${f.ap === null ? "-" : f.ap.toFixed(3)}  TP ${f.tp}  FP ${f.fp}  FN ${f.fn}  ` +
      Object.entries(f.errors).filter(([, v]) => v).map(([k, v]) => `${k} ${v}`).join(" ")));
  }
  const t = el("table", {id: "objects"});
  t.append(el("tr", {}, ""));
  t.lastChild.innerHTML = "<th>source</th><th>class</th><th>score</th><th>kind</th><th>box</th>";
  const row = (src, o, kind) => {
    const tr = el("tr", {class: "obj", "data-source": src, "data-kind": kind || ""});
    const sw = el("span", {class: "swatch", style: `background:${rgb(o.label)}`});
    const td = el("td"); td.append(sw, document.createTextNode(S.meta.classes[o.label]));
    tr.append(el("td", {}, src), td, el("td", {}, src === "gt" ? "" : o.score.toFixed(3)),
      el("td", {class: "kind-" + (kind || "")}, kind || ""), el("td", {}, o.box.map((v) => Math.round(v)).join(",")));
    t.append(tr);
  };
  for (const o of item.gt) {
    const miss = Object.entries(item.missed || {}).filter(([, ids]) => ids.includes(o.id)).map(([n]) => "Miss@" + n);
    row("gt", o, (o.crowd ? "crowd " : "") + miss.join(" "));
  }
  for (const [n, objs] of Object.entries(item.preds)) for (const o of objs) if (visible(o, n)) row(n, o, o.kind);
  a.append(t);
}
function step(d) {
  if (!S.current) return;
  const pos = S.order.indexOf(S.current.index);
  const next = pos >= 0 ? S.order[pos + d] : S.current.index + d;
  if (next !== undefined && next >= 0 && next < S.meta.num_images) location.hash = "#image/" + next;
}
function explain() {
  const box = $("explain"); box.textContent = "running sceneparse explain ...";
  fetch(`/api/explain/${S.current.index}`, {method: "POST"}).then((r) => r.json()).then((res) => {
    box.innerHTML = "";
    if (res.error) { box.append(el("div", {class: "source-error"}, res.error)); return; }
    for (const u of res.pictures) box.append(el("img", {src: u, alt: u}));
  });
}

// ---- plots ----
function showPlots() {
  const box = $("plots"); box.innerHTML = "";
  for (const s of S.meta.sources) {
    const d = el("div", {class: "source", "data-source": s.name});
    d.append(el("h3", {}, `${s.name} (${s.path})`));
    if (s.state === "error") d.append(el("div", {class: "source-error"}, s.error));
    else if (s.state !== "ready") d.append(el("div", {}, `loading (${s.state}) ...`));
    else for (const k of ["pr", "confusion", "errors"]) d.append(el("img", {src: `/plot/${s.name}/${k}.png?iou=${$("iou").value}`, alt: k}));
    box.append(d);
  }
  if (!S.meta.sources.length) box.append(el("p", {}, "no prediction files (--pred) to plot"));
}

// ---- status, controls, routing ----
function showErrors(sources) {
  const box = $("errors"); box.innerHTML = "";
  let busy = [];
  for (const s of sources) {
    if (s.state === "error") box.append(el("div", {class: "source-error", "data-source": s.name}, `prediction source ${s.name}: ${s.error}`));
    else if (s.state !== "ready") busy.push(`${s.name}: ${s.state}`);
  }
  $("progress").textContent = busy.length ? "loading " + busy.join(", ") : "";
  return busy.length;
}
function pollStatus() {
  api("/api/status").then((st) => {
    const key = (list) => JSON.stringify(list.map((s) => [s.state, s.facts]));
    const before = key(S.meta.sources);
    S.meta.sources = st.sources;
    let busy = showErrors(st.sources);
    const matching = st.sources.filter((s) => Object.values(s.facts).includes("computing")).map((s) => s.name);
    if (matching.length) $("progress").textContent += " matching " + matching.join(", ") + " ...";
    busy += matching.length;
    if (key(st.sources) !== before) { fillSelects(); route(); }
    S.statusTimer = setTimeout(pollStatus, busy ? 500 : 3000);
  });
}
function option(sel, value, text) { sel.append(el("option", {value: value}, text)); }
function fillSelects() {
  const keep = (id) => $(id).value;
  const prev = {sort: keep("sort"), src: keep("src"), src2: keep("src2"), cls: keep("cls"), filter: keep("filter")};
  const sort = $("sort"), src = $("src"), src2 = $("src2"), cls = $("cls"), filter = $("filter");
  for (const s of [sort, src, src2, cls, filter]) s.innerHTML = "";
  for (const k of ["index", "id", "objects", "ap", "ap_diff", "tp", "fp", "fn", ...S.meta.error_types]) option(sort, k, k);
  for (const s of S.meta.sources) { option(src, s.name, s.name); option(src2, s.name, s.name); }
  if (S.meta.sources.length > 1) src2.selectedIndex = 1;
  option(cls, "", "(all)");
  S.meta.classes.forEach((c, i) => option(cls, i, c));
  option(filter, "", "(none)");
  for (const k of ["fp", "fn", ...S.meta.error_types]) option(filter, k, "has " + k);
  for (const [id, v] of Object.entries(prev)) if (v && [...$(id).options].some((o) => o.value === v)) $(id).value = v;
  if (!prev.sort) sort.value = "index";
}
function toggles() {
  const st = $("source-toggles"); st.innerHTML = "";
  for (const s of ["gt", ...S.meta.sources.map((x) => x.name)]) {
    const cb = el("input", {type: "checkbox", "data-toggle": "src:" + s}); cb.checked = true;
    const l = el("label"); l.append(cb, document.createTextNode(s)); st.append(l);
  }
  const ct = $("class-toggles"); ct.innerHTML = "";
  S.meta.classes.forEach((c, i) => {
    const cb = el("input", {type: "checkbox", "data-toggle": "class:" + i}); cb.checked = true;
    const l = el("label"); l.append(cb, el("span", {class: "swatch", style: `background:${rgb(i)}`}), document.createTextNode(c));
    ct.append(l);
  });
  const kt = $("kind-toggles"); kt.innerHTML = "";
  for (const k of KINDS) {
    const cb = el("input", {type: "checkbox", "data-kind": k}); cb.checked = true;
    const l = el("label"); l.append(cb, document.createTextNode(k)); kt.append(l);
  }
  document.querySelectorAll("[data-toggle]").forEach((cb) => cb.addEventListener("change", () => {
    if (cb.checked) S.hidden.delete(cb.dataset.toggle); else S.hidden.add(cb.dataset.toggle);
    redraw();
  }));
  document.querySelectorAll("[data-kind]").forEach((cb) => cb.addEventListener("change", () => {
    if (cb.checked) S.hiddenKinds.delete(cb.dataset.kind); else S.hiddenKinds.add(cb.dataset.kind);
    redraw();
  }));
}
function redraw() {
  if (!$("grid-view").hidden) redrawGrid();
  if (!$("image-view").hidden && S.current) { drawImage($("big-canvas"), S.current, S.current._img, S.current._scale, true); side(S.current); }
}
function route() {
  const h = location.hash || "#grid";
  $("grid-view").hidden = !h.startsWith("#grid");
  $("image-view").hidden = !h.startsWith("#image/");
  $("plots-view").hidden = h !== "#plots";
  $("nav-grid").classList.toggle("active", h.startsWith("#grid"));
  $("nav-plots").classList.toggle("active", h === "#plots");
  if (h.startsWith("#image/")) return showImage(parseInt(h.slice(7), 10));
  if (h === "#plots") return showPlots();
  return loadGrid();
}
function init() {
  api("/api/meta").then((meta) => {
    S.meta = meta;
    $("dataset").textContent = `${meta.source} [${meta.split}] ${meta.num_images} images, ${meta.num_objects} objects`;
    $("show-maps").checked = meta.has_panoptic || meta.has_semantic;
    fillSelects(); toggles();
    $("score").addEventListener("input", () => { $("score-value").textContent = parseFloat($("score").value).toFixed(2); redraw(); });
    $("show-masks").addEventListener("change", redraw);
    $("show-maps").addEventListener("change", redraw);
    for (const id of ["sort", "order", "src", "src2", "cls", "filter", "iou"])
      $(id).addEventListener("change", () => { S.page = 0; if (location.hash.startsWith("#image/") && id !== "iou") location.hash = "#grid"; else route(); });
    $("prev").addEventListener("click", () => { if (S.page > 0) { S.page--; loadGrid(); } });
    $("next").addEventListener("click", () => { if ((S.page + 1) * S.meta.page_size < S.total) { S.page++; loadGrid(); } });
    $("back").addEventListener("click", () => { location.hash = "#grid"; });
    $("img-prev").addEventListener("click", () => step(-1));
    $("img-next").addEventListener("click", () => step(1));
    $("explain-btn").addEventListener("click", explain);
    document.addEventListener("keydown", (e) => {
      if ($("image-view").hidden || ["INPUT", "SELECT"].includes(document.activeElement.tagName) && e.key !== "Escape") return;
      if (e.key === "ArrowRight") step(1);
      else if (e.key === "ArrowLeft") step(-1);
      else if (e.key === "Escape") location.hash = "#grid";
    });
    window.addEventListener("hashchange", route);
    route();
    pollStatus();
  }).catch((e) => { $("errors").append(el("div", {class: "source-error"}, "cannot reach the server: " + e.message)); });
}
init();
