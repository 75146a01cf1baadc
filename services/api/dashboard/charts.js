// Line charts as inline SVG: one polyline per series, axes labelled with their ranges.

import { number } from "./format.js";
import { h, s } from "./dom.js";

const W = 480;
const H = 200;
const PAD = { left: 56, right: 12, top: 12, bottom: 28 };

function range(values) {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (lo === hi) {
    const pad = Math.abs(lo) * 0.1 || 1;
    lo -= pad;
    hi += pad;
  }
  return [lo, hi];
}

// series: [{ name, points: [[x, y], ...] }]; an empty chart says so rather than drawing axes.
// xDomain: the x range to draw (e.g. the job's steps), widened to fit every point.
export function lineChart({ id, title, series, xDomain = [] }) {
  const all = series.flatMap((one) => one.points);
  const figure = h("figure", { class: "chart", id });
  figure.append(h("figcaption", { text: title }));
  if (all.length === 0) {
    figure.append(h("p", { class: "muted", text: "No training steps reported yet." }));
    return figure;
  }
  const [x0, x1] = range([...xDomain, ...all.map((p) => p[0])]);
  const [y0, y1] = range(all.map((p) => p[1]));
  const px = (x) => PAD.left + ((x - x0) / (x1 - x0)) * (W - PAD.left - PAD.right);
  const py = (y) => H - PAD.bottom - ((y - y0) / (y1 - y0)) * (H - PAD.top - PAD.bottom);
  const svg = s(
    "svg",
    { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title },
    s("line", { class: "axis", x1: PAD.left, y1: H - PAD.bottom, x2: W - PAD.right, y2: H - PAD.bottom }),
    s("line", { class: "axis", x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: H - PAD.bottom }),
    s("text", { class: "tick", x: PAD.left - 6, y: PAD.top + 4, "text-anchor": "end", text: number(y1) }),
    s("text", { class: "tick", x: PAD.left - 6, y: H - PAD.bottom, "text-anchor": "end", text: number(y0) }),
    s("text", { class: "tick", x: PAD.left, y: H - 8, text: `step ${number(x0)}` }),
    s("text", { class: "tick", x: W - PAD.right, y: H - 8, "text-anchor": "end", text: `step ${number(x1)}` }),
  );
  for (const one of series) {
    if (one.points.length === 0) continue;
    const points = one.points.map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(" ");
    svg.append(s("polyline", { class: `series series-${one.name}`, "data-series": one.name, points }));
    for (const [x, y] of one.points.length <= 60 ? one.points : []) {
      svg.append(s("circle", { class: `dot series-${one.name}`, cx: px(x), cy: py(y), r: 2.5 }));
    }
  }
  figure.append(svg);
  figure.append(
    h("p", { class: "legend" }, series.filter((o) => o.points.length).map((o) =>
      h("span", { class: `key series-${o.name}`, text: o.name }))),
  );
  return figure;
}

// Loss and learning rate per optimizer step, one series per phase, from `metrics` events.
export function metricSeries(events, field) {
  const byPhase = new Map();
  for (const event of events) {
    if (event.type !== "metrics" || typeof event.data[field] !== "number") continue;
    const name = event.phase || "job";
    if (!byPhase.has(name)) byPhase.set(name, new Map());
    byPhase.get(name).set(event.data.step, event.data[field]); // a re-run step replaces the old
  }
  return [...byPhase].map(([name, points]) => ({
    name,
    points: [...points].sort((a, b) => a[0] - b[0]),
  }));
}

// The job's whole step range, so the curves show how far training has come.
export function stepDomain(events) {
  for (let i = events.length - 1; i >= 0; i -= 1) {
    const total = events[i].type === "metrics" && events[i].data.total_steps;
    if (total) return [0, total];
  }
  return [];
}
