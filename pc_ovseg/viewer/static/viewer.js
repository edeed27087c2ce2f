// pc_ovseg viewer: one THREE.Points cloud whose colour buffer is swapped per colour mode.
// Positions, colours, heat and labels arrive as raw binary from the local server; queries run
// server-side on every point, the page only ever holds the displayed subsample.
import * as THREE from "./vendor/three.module.min.js";

const NO_LABEL = 255;
// Colours here are display bytes, not physical light: no sRGB<->linear conversion anywhere, so
// what the server sends (and what tests read back from the canvas) is what is drawn.
THREE.ColorManagement.enabled = false;
const $ = (id) => document.getElementById(id);

// ---- colour maps ----------------------------------------------------------------------------
// Heat: cold points keep a dimmed grey of their own colour so the scene stays readable; points
// the query beats the negatives on go blue -> yellow -> red.
const HEAT_STOPS = [[0.0, [60, 90, 220]], [0.5, [250, 210, 40]], [1.0, [235, 35, 20]]];
const COVERAGE_STOPS = [[0.0, [68, 1, 84]], [0.25, [59, 82, 139]], [0.5, [33, 145, 140]], [0.75, [94, 201, 98]], [1.0, [253, 231, 37]]];
const UNSEEN = [120, 40, 40];  // coverage mode; label colours (and their "unseen") come from the server

function ramp(stops, t) {
  t = Math.min(1, Math.max(0, t));
  for (let i = 1; i < stops.length; i++) {
    const [t1, c1] = stops[i];
    if (t <= t1) {
      const [t0, c0] = stops[i - 1];
      const f = (t - t0) / (t1 - t0 || 1);
      return c0.map((v, k) => Math.round(v + f * (c1[k] - v)));
    }
  }
  return stops[stops.length - 1][1];
}

function rampLUT(stops) {
  const lut = new Uint8Array(256 * 3);
  for (let i = 0; i < 256; i++) lut.set(ramp(stops, i / 255), i * 3);
  return lut;
}
const HEAT_LUT = rampLUT(HEAT_STOPS);
const COVERAGE_LUT = rampLUT(COVERAGE_STOPS);

function upText(up) {
  const axis = up.findIndex((v) => Math.abs(v) === 1);
  return axis >= 0 ? `${up[axis] < 0 ? "-" : ""}${"xyz"[axis]}` : `(${up.map((v) => v.toFixed(2)).join(", ")})`;
}

function cssRGB(c) { return `rgb(${c[0]},${c[1]},${c[2]})`; }
function cssRamp(stops) { return `linear-gradient(to right, ${stops.map(([t, c]) => `${cssRGB(c)} ${t * 100}%`).join(", ")})`; }
/** The legend's timing line: the server's own time (X-Query-Ms) and the round trip the page
 * measured around the whole request, which contains it. */
export function timingText(t) {
  if (!t || !Number.isFinite(t.total)) return "";
  const server = Number.isFinite(t.server) ? `${t.server.toFixed(0)} ms on the server, ` : "";
  return `${server}${t.total.toFixed(0)} ms in all`;
}

/** fetch + body, timed with performance.now() from before the request to the last byte. */
async function timed(request) {
  const t0 = performance.now();
  const r = await request;
  const body = await r.arrayBuffer();
  return { r, body, ms: { server: parseFloat(r.headers.get("X-Query-Ms")), total: performance.now() - t0 } };
}

function escapeHTML(s) { return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]); }

// ---- server ---------------------------------------------------------------------------------
async function getBinary(path, Type) {
  const r = await fetch(path);
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return new Type(await r.arrayBuffer());
}

async function post(path, body) {
  const r = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  if (!r.ok) {
    let msg = `HTTP ${r.status}`;
    try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  return r;
}

// ---- orbit / pan / zoom around a target, about the data's up axis ------------------------------
class Orbit {
  constructor(camera, dom, onChange) {
    this.camera = camera; this.dom = dom; this.onChange = onChange;
    this.target = new THREE.Vector3(); this.distance = 1; this.azimuth = -Math.PI / 2; this.elevation = 0.6;
    this.setUp([0, 0, 1]);
    this.drag = null;
    dom.addEventListener("contextmenu", (e) => e.preventDefault());
    dom.addEventListener("pointerdown", (e) => this.down(e));
    dom.addEventListener("pointermove", (e) => this.move(e));
    dom.addEventListener("pointerup", (e) => this.up(e));
    dom.addEventListener("wheel", (e) => { e.preventDefault(); this.zoom(Math.exp(e.deltaY * 0.001)); }, { passive: false });
  }
  /** Orbit about ``up``: azimuth turns in the plane of e1, e2 (x, y for z up), elevation towards up. */
  setUp(up) {
    this.upAxis = new THREE.Vector3(...up).normalize();
    const u = this.upAxis, ref = Math.abs(u.x) < 0.9 ? new THREE.Vector3(1, 0, 0) : new THREE.Vector3(0, 1, 0);
    this.e1 = ref.addScaledVector(u, -ref.dot(u)).normalize();
    this.e2 = new THREE.Vector3().crossVectors(u, this.e1);
  }
  set(target, distance, azimuth, elevation) {
    this.target.copy(target); this.distance = distance; this.azimuth = azimuth; this.elevation = elevation; this.update();
  }
  update() {
    const ce = Math.cos(this.elevation);
    const offset = new THREE.Vector3().addScaledVector(this.e1, ce * Math.cos(this.azimuth))
      .addScaledVector(this.e2, ce * Math.sin(this.azimuth)).addScaledVector(this.upAxis, Math.sin(this.elevation));
    this.camera.position.copy(this.target).addScaledVector(offset, this.distance);
    this.camera.up.copy(this.upAxis);
    this.camera.lookAt(this.target);
    this.camera.near = this.distance * 1e-3; this.camera.far = this.distance * 1e3;
    this.camera.updateProjectionMatrix();
    this.onChange();
  }
  zoom(factor) { this.distance = Math.max(1e-4, this.distance * factor); this.update(); }
  down(e) {
    this.dom.setPointerCapture(e.pointerId);
    this.drag = { x: e.clientX, y: e.clientY, x0: e.clientX, y0: e.clientY, pan: e.button === 2 || e.button === 1 || e.shiftKey };
  }
  move(e) {
    if (!this.drag) return;
    const dx = e.clientX - this.drag.x, dy = e.clientY - this.drag.y;
    this.drag.x = e.clientX; this.drag.y = e.clientY;
    if (this.drag.pan) {
      const h = this.dom.clientHeight || 1;
      const perPixel = 2 * this.distance * Math.tan(THREE.MathUtils.degToRad(this.camera.fov) / 2) / h;
      const right = new THREE.Vector3().setFromMatrixColumn(this.camera.matrix, 0);
      const up = new THREE.Vector3().setFromMatrixColumn(this.camera.matrix, 1);
      this.target.addScaledVector(right, -dx * perPixel).addScaledVector(up, dy * perPixel);
    } else {
      this.azimuth -= dx * 0.008;
      this.elevation = Math.min(1.55, Math.max(-1.55, this.elevation + dy * 0.008));
    }
    this.update();
  }
  up(e) {
    const d = this.drag; this.drag = null;
    if (d && Math.hypot(e.clientX - d.x0, e.clientY - d.y0) < 4 && e.button === 0) this.onClick?.(e);
  }
}

// ---- the viewer -----------------------------------------------------------------------------
class Viewer {
  constructor() {
    this.canvas = $("view");
    this.renderer = new THREE.WebGLRenderer({ canvas: this.canvas, antialias: false, preserveDrawingBuffer: true });
    this.renderer.outputColorSpace = THREE.LinearSRGBColorSpace;  // colour bytes reach the screen unchanged
    this.renderer.setPixelRatio(window.devicePixelRatio || 1);
    this.renderer.setClearColor(0x202024, 1);
    this.scene = new THREE.Scene();
    this.camera = new THREE.PerspectiveCamera(50, 1, 0.01, 1000);
    this.orbit = new Orbit(this.camera, this.canvas, () => this.requestRender());
    this.orbit.onClick = (e) => this.pickAt(e.clientX, e.clientY);
    this.ready = false; this.pending = 0; this.frames = 0; this.seq = 0;
    this.state = { mode: "rgb", size: 2, heatQuery: null, vocabulary: [], heatMs: null, labelMs: null };
    this.legend = [];
    this.lastPick = null;
    window.addEventListener("resize", () => this.resize());
  }

  async load() {
    this.info = await (await fetch("/api/info")).json();
    const info = this.info;
    if (info.follow) {  // pc-ovseg view --follow: reload when the map's next snapshot is served
      setInterval(async () => {
        const now = await (await fetch("/api/info")).json();
        if (now.version !== info.version) location.reload();
      }, 2000);
    }
    $("title").textContent = info.title || "";
    $("stats").textContent = `${info.n_points.toLocaleString()} points` +
      (info.n_display < info.n_points ? ` (showing ${info.n_display.toLocaleString()})` : "") +
      (info.coverage != null ? ` · ${(info.coverage * 100).toFixed(1)}% seen` : "") +
      ` · up ${upText(info.up)} (${info.up_source})`;
    this.orbit.setUp(info.up);
    this.positions = await getBinary("/api/positions", Float32Array);
    const n = this.positions.length / 3;
    this.rgb = info.has_rgb ? await getBinary("/api/colors", Uint8Array) : this.heightColors();
    this.coverage = info.coverage_max != null ? await getBinary("/api/coverage", Uint16Array) : null;
    this.fieldLabels = info.field_labels ? await getBinary("/api/field_labels", Uint8Array) : null;
    this.instances = info.instances ? await getBinary("/api/instances", Int32Array) : null;
    this.colors = new Uint8Array(n * 3);
    this.geometry = new THREE.BufferGeometry();
    this.geometry.setAttribute("position", new THREE.BufferAttribute(this.positions, 3));
    this.colorAttr = new THREE.BufferAttribute(this.colors, 3, true);
    this.geometry.setAttribute("color", this.colorAttr);
    this.material = new THREE.PointsMaterial({ size: this.state.size, vertexColors: true, sizeAttenuation: false });
    this.points = new THREE.Points(this.geometry, this.material);
    this.points.frustumCulled = false;
    this.scene.add(this.points);
    this.marker = new THREE.Points(new THREE.BufferGeometry(), new THREE.PointsMaterial({ size: 9, color: 0xffffff, sizeAttenuation: false }));
    this.marker.geometry.setAttribute("position", new THREE.BufferAttribute(new Float32Array(3), 3));
    this.marker.visible = false; this.marker.frustumCulled = false;
    this.scene.add(this.marker);
    this.boxes = info.instances ? this.instanceBoxes(info.instances) : null;
    if (this.boxes) this.scene.add(this.boxes);
    this.resetView();
    this.resize();
    await this.setupUI();
  }

  instanceBoxes(inst) {  // the 12 edges of every instance's box, in its colour
    const pos = [], col = [];
    const edges = [[0, 1], [1, 3], [3, 2], [2, 0], [4, 5], [5, 7], [7, 6], [6, 4], [0, 4], [1, 5], [2, 6], [3, 7]];
    inst.boxes.forEach(([lo, hi], k) => {
      const corner = (b) => [b & 1 ? hi[0] : lo[0], b & 2 ? hi[1] : lo[1], b & 4 ? hi[2] : lo[2]];
      const c = inst.colors[k].map((v) => v / 255);
      for (const [a, b] of edges) { pos.push(...corner(a), ...corner(b)); col.push(...c, ...c); }
    });
    const g = new THREE.BufferGeometry();
    g.setAttribute("position", new THREE.BufferAttribute(new Float32Array(pos), 3));
    g.setAttribute("color", new THREE.BufferAttribute(new Float32Array(col), 3));
    const lines = new THREE.LineSegments(g, new THREE.LineBasicMaterial({ vertexColors: true }));
    lines.visible = false; lines.frustumCulled = false;
    return lines;
  }

  heightColors() {  // plain clouds without colour: a ramp along the up axis so the shape reads
    const p = this.positions, n = p.length / 3, out = new Uint8Array(n * 3), h = new Float32Array(n);
    const [ux, uy, uz] = this.info.up;
    let lo = Infinity, hi = -Infinity;
    for (let i = 0; i < n; i++) {
      const z = ux * p[i * 3] + uy * p[i * 3 + 1] + uz * p[i * 3 + 2];
      h[i] = z; if (z < lo) lo = z; if (z > hi) hi = z;
    }
    const span = hi - lo || 1;
    for (let i = 0; i < n; i++) out.set(ramp(COVERAGE_STOPS, (h[i] - lo) / span), i * 3);
    return out;
  }

  resetView() {
    const r = this.info.radius;
    const dist = (1.15 * r) / Math.sin(THREE.MathUtils.degToRad(this.camera.fov) / 2);
    this.orbit.set(new THREE.Vector3(0, 0, 0), dist, -Math.PI / 2 - 0.5, 0.75);
  }

  resize() {
    const w = window.innerWidth, h = window.innerHeight;
    this.renderer.setSize(w, h, false);
    this.camera.aspect = w / Math.max(h, 1);
    // centre the scene in the space right of the panel (picking uses the same projection)
    const panel = $("panel").getBoundingClientRect().right;
    if (w > 3 * panel) this.camera.setViewOffset(w, h, -panel / 2, 0, w, h);
    else this.camera.clearViewOffset();
    this.camera.updateProjectionMatrix();
    this.renderNow();
  }

  requestRender() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    requestAnimationFrame(() => { this.renderQueued = false; this.renderNow(); });
  }

  renderNow() {
    if (!this.points) return;
    this.renderer.render(this.scene, this.camera);
    this.frames++;
  }

  // -- UI -------------------------------------------------------------------------------------
  async setupUI() {
    const info = this.info, params = new URLSearchParams(location.search);
    const modeSel = $("mode");
    if (!info.has_rgb) modeSel.querySelector('option[value="rgb"]').textContent = "Height";
    if (!info.queryable) {
      modeSel.querySelector('option[value="heatmap"]').disabled = true;
      if (!info.field_labels) modeSel.querySelector('option[value="label"]').disabled = true;
      $("query").disabled = true; $("vocabulary").disabled = true; $("apply-vocab").disabled = true;
      $("query").placeholder = "no features: queries disabled";
      this.message(info.message);
    }
    if (info.coverage_max == null) modeSel.querySelector('option[value="coverage"]').disabled = true;
    if (!info.instances) modeSel.querySelector('option[value="instances"]').disabled = true;
    modeSel.addEventListener("change", () => this.setMode(modeSel.value));
    $("size").addEventListener("input", () => this.setPointSize(parseFloat($("size").value)));
    let timer = null;
    $("query").addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => this.setQuery($("query").value), 300); });
    $("query").addEventListener("keydown", (e) => { if (e.key === "Enter") { clearTimeout(timer); this.setQuery($("query").value); } });
    $("vocabulary").value = info.vocabulary.join(", ");
    $("apply-vocab").addEventListener("click", () => this.setVocabulary(this.parseVocabulary($("vocabulary").value)));
    $("screenshot").addEventListener("click", () => this.downloadScreenshot());
    $("reset").addEventListener("click", () => this.resetView());

    // URL parameters set the starting state (q, vocab, mode, size): --screenshot uses them.
    if (params.has("size")) this.setPointSize(parseFloat(params.get("size")));
    const start = [];
    if (info.queryable && params.has("vocab")) start.push(this.setVocabulary(this.parseVocabulary(params.get("vocab")), false));
    else if (info.queryable && info.vocabulary.length) start.push(this.setVocabulary(info.vocabulary, false));
    if (info.queryable && params.get("q")) { $("query").value = params.get("q"); start.push(this.setQuery(params.get("q"), false)); }
    this.setMode(params.get("mode") || "rgb");
    await Promise.all(start);
    this.setMode(params.get("mode") || (params.get("q") && info.queryable ? "heatmap" : "rgb"));
  }

  parseVocabulary(text) {
    return [...new Set(String(text).split(/[,\n]/).map((s) => s.trim()).filter(Boolean))];
  }

  message(text, error = false) {
    const m = $("message");
    m.textContent = text || ""; m.className = error ? "error" : "dim";
  }

  setPointSize(size) {
    if (!Number.isFinite(size)) return;
    this.state.size = size; this.material.size = size;
    $("size").value = size; $("size-value").textContent = size;
    this.requestRender();
  }

  setMode(mode) {
    const opt = $("mode").querySelector(`option[value="${mode}"]`);
    if (!opt || opt.disabled) mode = "rgb";
    this.state.mode = mode; $("mode").value = mode;
    if (mode === "heatmap" && !this.heat) this.message("type a query to see its heatmap");
    else if (mode === "label" && this.info.queryable && !this.labels) this.message("enter a vocabulary, then press Label view");
    this.recolor();
  }

  // -- queries ---------------------------------------------------------------------------------
  async track(promise) {
    this.pending++;
    try { return await promise; } finally { this.pending--; }
  }

  async setQuery(text, switchMode = true) {
    text = String(text).trim();
    if (!this.info.queryable || !text) return;
    const seq = ++this.seq;
    try {
      const { body, ms } = await this.track(timed(post("/api/heatmap", { query: text })));
      if (seq !== this.seq) return;  // a newer query has been sent
      this.heat = new Uint8Array(body);
      this.state.heatQuery = text;
      this.state.heatMs = ms;
      this.message("");
      if (switchMode) this.setMode("heatmap"); else this.recolor();
    } catch (err) {
      if (seq === this.seq) this.message(`query failed: ${err.message}`, true);
    }
  }

  async setVocabulary(vocab, switchMode = true) {
    if (!this.info.queryable) return;
    if (!vocab.length) { this.message("the vocabulary is empty", true); return; }
    try {
      const { r, body, ms } = await this.track(timed(post("/api/labels", { vocabulary: vocab })));
      this.labels = new Uint8Array(body);
      this.labelCounts = (r.headers.get("X-Label-Counts") || "").split(",").map(Number);
      this.labelColors = (r.headers.get("X-Label-Colors") || "").split(";").map((c) => c.split(",").map(Number));
      this.unseenCount = Number(r.headers.get("X-Unseen-Count"));
      this.state.vocabulary = vocab;
      this.state.labelMs = ms;
      $("vocabulary").value = vocab.join(", ");
      this.message("");
      if (switchMode) this.setMode("label"); else this.recolor();
    } catch (err) {
      this.message(`labels failed: ${err.message}`, true);
    }
  }

  // -- colouring -------------------------------------------------------------------------------
  recolor() {
    if (!this.colors) return;
    const n = this.positions.length / 3, c = this.colors, mode = this.state.mode;
    if (mode === "heatmap" && this.heat) {
      const h = this.heat, rgb = this.rgb;
      for (let i = 0; i < n; i++) {
        const v = h[i];
        if (v === 0) {
          const g = 40 + ((rgb[i * 3] * 77 + rgb[i * 3 + 1] * 151 + rgb[i * 3 + 2] * 28) >> 9);
          c[i * 3] = g; c[i * 3 + 1] = g; c[i * 3 + 2] = g;
        } else {
          c[i * 3] = HEAT_LUT[v * 3]; c[i * 3 + 1] = HEAT_LUT[v * 3 + 1]; c[i * 3 + 2] = HEAT_LUT[v * 3 + 2];
        }
      }
    } else if (mode === "label" && (this.labels || this.fieldLabels)) {
      const lab = this.info.queryable ? this.labels : this.fieldLabels;
      const lut = this.info.queryable ? this.labelColors : this.info.field_label_colors, none = this.info.unseen_rgb;
      for (let i = 0; i < n; i++) c.set(lab[i] === NO_LABEL ? none : lut[lab[i]], i * 3);
    } else if (mode === "coverage" && this.coverage) {
      const cov = this.coverage, top = Math.max(1, this.info.coverage_max);
      for (let i = 0; i < n; i++) {
        if (cov[i] === 0) c.set(UNSEEN, i * 3);
        else { const k = Math.round((cov[i] / top) * 255) * 3; c[i * 3] = COVERAGE_LUT[k]; c[i * 3 + 1] = COVERAGE_LUT[k + 1]; c[i * 3 + 2] = COVERAGE_LUT[k + 2]; }
      }
    } else if (mode === "instances" && this.instances) {
      const ids = this.instances, lut = this.info.instances.colors, rgb = this.rgb;
      for (let i = 0; i < n; i++) {
        if (ids[i] >= 0) c.set(lut[ids[i]], i * 3);
        else { const g = 40 + ((rgb[i * 3] * 77 + rgb[i * 3 + 1] * 151 + rgb[i * 3 + 2] * 28) >> 9); c[i * 3] = g; c[i * 3 + 1] = g; c[i * 3 + 2] = g; }
      }
    } else {
      c.set(this.rgb);
    }
    if (this.boxes) this.boxes.visible = mode === "instances";
    this.colorAttr.needsUpdate = true;
    this.updateLegend();
    this.renderNow();
  }

  updateLegend() {
    const mode = this.state.mode, el = $("legend");
    this.legend = [];
    if (mode === "heatmap" && this.heat) {
      const t = this.state.heatMs;
      el.innerHTML = `<div>“${escapeHTML(this.state.heatQuery)}”</div><div class="ramp" style="background:${cssRamp(HEAT_STOPS)}"></div>` +
        `<div class="ramp-labels dim"><span>0</span><span>relevancy</span><span>1</span></div>` +
        `<div class="dim timing">${timingText(t)}</div>`;
      this.legend = HEAT_STOPS.map(([v, col]) => ({ name: `heat ${v}`, color: col }));
    } else if (mode === "label" && (this.labels || this.fieldLabels)) {
      // the classes, then the points in none of them ("unseen"), in the colours of legend.png
      const info = this.info, q = info.queryable;
      const names = q ? this.state.vocabulary : info.field_labels;
      const colors = q ? this.labelColors : info.field_label_colors;
      const counts = q ? this.labelCounts : info.field_label_counts;
      this.legend = names.map((name, i) => ({ name, color: colors[i], count: counts[i] }));
      const none = q ? { name: "unseen", count: this.unseenCount } : info.field_no_label;
      if (none && (q || none.count > 0)) this.legend.push({ name: none.name, color: info.unseen_rgb, count: none.count, none: true });
      el.innerHTML = this.legend.map((e) =>
        `<div class="legend-item${e.count === 0 ? " empty" : ""}${e.none ? " none" : ""}"><span class="swatch" style="background:${cssRGB(e.color)}"></span>` +
        `<span>${escapeHTML(e.name)}</span><span class="count">${e.count.toLocaleString()}</span></div>`).join("") +
        (q ? `<div class="dim timing">${timingText(this.state.labelMs)}</div>` : "");
    } else if (mode === "coverage" && this.coverage) {
      el.innerHTML = `<div class="ramp" style="background:${cssRamp(COVERAGE_STOPS)}"></div>` +
        `<div class="ramp-labels dim"><span>1</span><span>views</span><span>${this.info.coverage_max}</span></div>` +
        `<div class="legend-item"><span class="swatch" style="background:${cssRGB(UNSEEN)}"></span><span>unseen</span></div>`;
    } else if (mode === "instances" && this.instances) {
      const inst = this.info.instances;
      el.innerHTML = `<div>${inst.count} instances</div><div class="dim">click one for its top-5 classes</div>`;
    } else {
      el.innerHTML = "";
    }
  }

  // -- picking ---------------------------------------------------------------------------------
  /** Screen positions (CSS pixels) and view depth of displayed points, for picking and tests. */
  project(indices) {
    const m = new THREE.Matrix4().multiplyMatrices(this.camera.projectionMatrix, this.camera.matrixWorldInverse).elements;
    const w = this.canvas.clientWidth, h = this.canvas.clientHeight, p = this.positions;
    const list = indices ?? Array.from({ length: p.length / 3 }, (_, i) => i);
    const out = new Float32Array(list.length * 3);
    for (let j = 0; j < list.length; j++) {
      const i = list[j], x = p[i * 3], y = p[i * 3 + 1], z = p[i * 3 + 2];
      const cw = m[3] * x + m[7] * y + m[11] * z + m[15];
      out[j * 3] = ((m[0] * x + m[4] * y + m[8] * z + m[12]) / cw * 0.5 + 0.5) * w;
      out[j * 3 + 1] = (0.5 - (m[1] * x + m[5] * y + m[9] * z + m[13]) / cw * 0.5) * h;
      out[j * 3 + 2] = cw;
    }
    return out;
  }

  /** The front-most displayed point drawn within a few pixels of (x, y), or -1. */
  pointAt(x, y) {
    this.camera.updateMatrixWorld();
    const m = new THREE.Matrix4().multiplyMatrices(this.camera.projectionMatrix, this.camera.matrixWorldInverse).elements;
    const w = this.canvas.clientWidth, h = this.canvas.clientHeight, p = this.positions, n = p.length / 3;
    const r = Math.max(3, this.state.size * 0.75), r2 = r * r;
    let best = -1, bestDepth = Infinity;
    for (let i = 0; i < n; i++) {
      const px = p[i * 3], py = p[i * 3 + 1], pz = p[i * 3 + 2];
      const cw = m[3] * px + m[7] * py + m[11] * pz + m[15];
      if (cw <= 0 || cw >= bestDepth) continue;
      const sx = ((m[0] * px + m[4] * py + m[8] * pz + m[12]) / cw * 0.5 + 0.5) * w - x;
      const sy = (0.5 - (m[1] * px + m[5] * py + m[9] * pz + m[13]) / cw * 0.5) * h - y;
      if (sx * sx + sy * sy <= r2) { best = i; bestDepth = cw; }
    }
    return best;
  }

  async pickAt(x, y) {
    const index = this.pointAt(x, y);
    if (index < 0) { $("pick").innerHTML = ""; this.lastPick = null; this.marker.visible = false; this.requestRender(); return null; }
    this.marker.geometry.attributes.position.array.set(this.positions.subarray(index * 3, index * 3 + 3));
    this.marker.geometry.attributes.position.needsUpdate = true;
    this.marker.visible = true;
    this.renderNow();
    try {
      const body = { index };
      if (this.state.vocabulary.length) body.vocabulary = this.state.vocabulary;
      const d = await (await this.track(post("/api/pick", body))).json();
      if (this.heat && this.state.heatQuery) d.heat = { query: this.state.heatQuery, value: this.heat[index] / 255 };
      this.lastPick = d;
      this.showPick(d);
      return d;
    } catch (err) {
      this.message(`pick failed: ${err.message}`, true);
      return null;
    }
  }

  showPick(d) {
    const rows = [`<div><strong>point ${d.point_id.toLocaleString()}</strong> <span class="dim">${d.xyz.map((v) => v.toFixed(3)).join(", ")}</span></div>`];
    if ("label" in d) rows.push(`<div>label: <strong class="pick-label">${escapeHTML(d.label ?? "unseen")}</strong> · score ${(d.score ?? 0).toFixed(3)}</div>`);
    if (d.view_count != null) rows.push(`<div class="dim">seen by ${d.view_count} views, weight ${d.weight}</div>`);
    if (d.heat) rows.push(`<div class="dim">“${escapeHTML(d.heat.query)}”: ${d.heat.value.toFixed(3)}</div>`);
    if (d.instance != null) {
      rows.push(`<div>instance <strong>${d.instance}</strong> · ${d.instance_points.toLocaleString()} points · score ${d.instance_score.toFixed(3)}</div>`);
      if (d.instance_topk) rows.push(`<table class="topk instance-topk">${d.instance_topk.map((t, i) => `<tr><td>${i + 1}.</td><td>${escapeHTML(t.name)}</td><td class="num">${t.score.toFixed(3)}</td></tr>`).join("")}</table>`);
    }
    for (const k of Object.keys(d)) if (!["index", "point_id", "xyz", "rgb", "label", "score", "weight", "view_count", "topk", "heat", "note", "instance", "instance_points", "instance_score", "instance_topk"].includes(k)) rows.push(`<div>${escapeHTML(k)}: ${escapeHTML(d[k])}</div>`);
    if (d.note) rows.push(`<div class="dim">${escapeHTML(d.note)}</div>`);
    if (d.topk && d.topk.length) {
      rows.push(`<table class="topk">${d.topk.map((t, i) => `<tr><td>${i + 1}.</td><td>${escapeHTML(t.name)}</td><td class="num">${t.score.toFixed(3)}</td></tr>`).join("")}</table>`);
    }
    $("pick").innerHTML = rows.join("");
  }

  downloadScreenshot() {
    this.renderNow();
    const a = document.createElement("a");
    a.href = this.canvas.toDataURL("image/png");
    a.download = `${(this.info.title || "pc_ovseg").replace(/\.[^.]+$/, "")}-${this.state.mode}.png`;
    a.click();
  }
}

const viewer = new Viewer();
window.pcViewer = viewer;
viewer.load().then(() => { viewer.renderNow(); viewer.ready = true; })
  .catch((err) => { viewer.message(`failed to load: ${err.message}`, true); viewer.error = String(err); });
