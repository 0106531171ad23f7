// A small SVG line chart: series with gaps (null), a threshold (a number or one value per point), highlighted
// x-ranges (anomalous segments) and marked points (flags). No library; redrawn whole on every update.

const NS = "http://www.w3.org/2000/svg";
const COLORS = ["#2563eb", "#059669", "#7c3aed", "#d97706", "#0891b2", "#db2777", "#65a30d", "#475569"];
const MARGIN = { left: 60, right: 14, top: 12, bottom: 30 };

function el(name, attrs = {}, parent = null) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function finite(v) {
  return typeof v === "number" && Number.isFinite(v);
}

function extent(arrays) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const values of arrays) {
    for (const v of values) {
      if (finite(v)) {
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    }
  }
  if (lo === Infinity) return [0, 1];
  if (lo === hi) return [lo - 1, hi + 1];
  const pad = (hi - lo) * 0.05;
  return [lo - pad, hi + pad];
}

function ticks(lo, hi, count) {
  const step0 = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0) || step0;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(+t.toPrecision(12));
  return out;
}

function label(v) {
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(1);
  return String(+v.toPrecision(4));
}

function pathOf(xs, ys, sx, sy) {
  let d = "";
  let pen = false;
  for (let i = 0; i < xs.length; i++) {
    if (!finite(ys[i])) {
      pen = false;
      continue;
    }
    d += `${pen ? "L" : "M"}${sx(xs[i]).toFixed(1)},${sy(ys[i]).toFixed(1)}`;
    pen = true;
  }
  return d;
}

/**
 * Draw into `svg`:
 *   x        x values (numbers, ascending)
 *   series   [{name, values, color?}]
 *   threshold  a number, or an array aligned with x, or null
 *   bands    [{from, to, title?, data?}]  x-ranges to highlight (class "segment", data-* attributes from `data`)
 *   marks    [{x, y, title?, data?}]      points to mark (class "flag")
 *   xLabel   axis name; xFormat(x) -> text for the x ticks; integerX: ticks only at whole numbers
 *   yFormat(y) -> text for the y ticks (e.g. 10 ** y when the values given are log10 of the data)
 */
export function drawChart(svg, { x, series, threshold = null, bands = [], marks = [], xLabel = "", xFormat = label,
  yFormat = label, integerX = false, height = 240 }) {
  const width = Math.max(320, Math.round(svg.clientWidth || svg.parentElement?.clientWidth || 900));
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("height", height);
  const plotW = width - MARGIN.left - MARGIN.right;
  const plotH = height - MARGIN.top - MARGIN.bottom;
  const x0 = x.length ? x[0] : 0;
  const x1 = x.length > 1 ? x[x.length - 1] : x0 + 1;
  const thresholdValues = threshold === null || threshold === undefined ? []
    : Array.isArray(threshold) ? threshold : [threshold];
  const [y0, y1] = extent([...series.map((s) => s.values), thresholdValues]);
  const sx = (v) => MARGIN.left + ((v - x0) / (x1 - x0 || 1)) * plotW;
  const sy = (v) => MARGIN.top + (1 - (v - y0) / (y1 - y0)) * plotH;

  const axes = el("g", { class: "axes" }, svg);
  for (const t of ticks(y0, y1, 5)) {
    el("line", { x1: MARGIN.left, x2: width - MARGIN.right, y1: sy(t), y2: sy(t), class: "grid" }, axes);
    el("text", { x: MARGIN.left - 6, y: sy(t) + 4, "text-anchor": "end" }, axes).textContent = yFormat(t);
  }
  for (const t of ticks(x0, x1, Math.max(2, Math.floor(plotW / 110))).filter((v) => !integerX || Number.isInteger(v))) {
    el("line", { x1: sx(t), x2: sx(t), y1: MARGIN.top + plotH, y2: MARGIN.top + plotH + 4, class: "tick" }, axes);
    el("text", { x: sx(t), y: height - 10, "text-anchor": "middle" }, axes).textContent = xFormat(t);
  }
  el("rect", { x: MARGIN.left, y: MARGIN.top, width: plotW, height: plotH, class: "frame" }, axes);
  if (xLabel) {
    el("text", { x: width - MARGIN.right - 6, y: MARGIN.top + 14, "text-anchor": "end", class: "axis-name" }, axes)
      .textContent = `x: ${xLabel}`;
  }

  const bandGroup = el("g", { class: "segments" }, svg);
  for (const b of bands) {
    const left = sx(b.from - 0.5);
    const right = sx(b.to + 0.5);
    const rect = el("rect", {
      x: Math.max(MARGIN.left, left).toFixed(1), y: MARGIN.top, height: plotH,
      width: Math.max(2, Math.min(right, MARGIN.left + plotW) - Math.max(MARGIN.left, left)).toFixed(1),
      class: "segment",
    }, bandGroup);
    for (const [k, v] of Object.entries(b.data || {})) rect.dataset[k] = v;
    if (b.title) el("title", {}, rect).textContent = b.title;
  }

  const lines = el("g", { class: "lines" }, svg);
  series.forEach((s, i) => {
    const path = el("path", { d: pathOf(x, s.values, sx, sy), class: "series", stroke: s.color || COLORS[i % COLORS.length] },
      lines);
    path.dataset.name = s.name;
  });
  if (thresholdValues.length === 1) {
    const y = sy(thresholdValues[0]);
    el("line", { x1: MARGIN.left, x2: MARGIN.left + plotW, y1: y, y2: y, class: "threshold" }, lines);
  } else if (thresholdValues.length > 1) {
    el("path", { d: pathOf(x, thresholdValues, sx, sy), class: "threshold" }, lines);
  }

  const markGroup = el("g", { class: "flags" }, svg);
  for (const m of marks) {
    if (!finite(m.y)) continue;
    const c = el("circle", { cx: sx(m.x).toFixed(1), cy: sy(m.y).toFixed(1), r: 3, class: "flag" }, markGroup);
    for (const [k, v] of Object.entries(m.data || {})) c.dataset[k] = v;
    if (m.title) el("title", {}, c).textContent = m.title;
  }

  const legend = el("g", { class: "legend" }, svg);
  let lx = MARGIN.left + 8;
  const entries = series.map((s, i) => [s.name, s.color || COLORS[i % COLORS.length], "series"]);
  if (thresholdValues.length) entries.push(["threshold", null, "threshold"]);
  for (const [name, color, kind] of entries) {
    const attrs = { x1: lx, x2: lx + 16, y1: MARGIN.top + 10, y2: MARGIN.top + 10, class: kind };
    if (color) attrs.stroke = color;
    el("line", attrs, legend);
    el("text", { x: lx + 20, y: MARGIN.top + 14 }, legend).textContent = name;
    lx += 28 + name.length * 7;
  }
}
