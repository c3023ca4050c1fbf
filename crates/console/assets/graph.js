// Line graphs on <canvas> with a time axis, a value axis with units, and a legend: what the
// host and target pages draw. The canvas records what it drew in data-* attributes
// (series, points, y-axis maximum and unit) so tests can check it without reading pixels.

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];

// A "nice" axis maximum at or above `max`: 1, 2 or 5 times a power of ten.
function niceMax(max) {
  if (!(max > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(max)));
  for (const m of [1, 2, 5, 10]) if (m * p >= max) return m * p;
  return 10 * p;
}

function clock(ms, withSeconds) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, "0");
  return withSeconds ? `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}` : `${p(d.getHours())}:${p(d.getMinutes())}`;
}

// Draws `series` ([{label, points: [[t_ms, value], ...]}]) on `canvas`.
// options: {unit: "%", max: 100 (fixed y maximum), format: (v) => text, from, to (ms)}.
export function lineChart(canvas, series, options = {}) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 600;
  const height = canvas.clientHeight || 220;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.font = "11px system-ui, sans-serif";

  const format = options.format || ((v) => `${+v.toFixed(1)} ${options.unit || ""}`.trim());
  const all = series.flatMap((s) => s.points);
  const now = Date.now();
  const from = options.from ?? (all.length ? Math.min(...all.map((p) => p[0])) : now - 3600e3);
  const to = options.to ?? (all.length ? Math.max(...all.map((p) => p[0])) : now);
  const yMax = options.max ?? niceMax(Math.max(0, ...all.map((p) => p[1])));
  const left = Math.max(...[0, 0.25, 0.5, 0.75, 1].map((f) => ctx.measureText(format(yMax * f)).width)) + 10;
  const plot = { x: left, y: 8, w: width - left - 26, h: height - 8 - 34 };

  // Value axis: five gridlines labelled with units.
  ctx.strokeStyle = "#e5e7eb";
  ctx.fillStyle = "#4b5563";
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const f of [0, 0.25, 0.5, 0.75, 1]) {
    const y = plot.y + plot.h * (1 - f);
    ctx.beginPath(); ctx.moveTo(plot.x, y); ctx.lineTo(plot.x + plot.w, y); ctx.stroke();
    ctx.fillText(format(yMax * f), plot.x - 6, y);
  }
  // Time axis: about six labels.
  const spanMs = Math.max(1, to - from);
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const ticks = [];
  for (let i = 0; i <= 5; i++) {
    const t = from + (spanMs * i) / 5;
    const x = plot.x + (plot.w * i) / 5;
    ticks.push(clock(t, spanMs < 10 * 60e3));
    ctx.beginPath(); ctx.moveTo(x, plot.y + plot.h); ctx.lineTo(x, plot.y + plot.h + 4); ctx.stroke();
    ctx.fillText(ticks[i], x, plot.y + plot.h + 6);
  }
  ctx.strokeStyle = "#9ca3af";
  ctx.beginPath();
  ctx.moveTo(plot.x, plot.y); ctx.lineTo(plot.x, plot.y + plot.h); ctx.lineTo(plot.x + plot.w, plot.y + plot.h);
  ctx.stroke();

  // The lines, and the legend under the time labels.
  let legendX = plot.x;
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    ctx.strokeStyle = color;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    s.points.forEach(([t, v], j) => {
      const x = plot.x + (plot.w * (t - from)) / spanMs;
      const y = plot.y + plot.h * (1 - Math.min(v, yMax) / yMax);
      if (j) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    });
    ctx.stroke();
    ctx.lineWidth = 1;
    ctx.fillStyle = color;
    ctx.fillRect(legendX, height - 11, 10, 3);
    ctx.fillStyle = "#374151";
    ctx.textAlign = "left";
    ctx.fillText(s.label, legendX + 14, height - 16);
    legendX += ctx.measureText(s.label).width + 30;
  });
  if (!all.length) {
    ctx.fillStyle = "#6b7280";
    ctx.textAlign = "center";
    ctx.fillText("no samples yet", plot.x + plot.w / 2, plot.y + plot.h / 2);
  }

  Object.assign(canvas.dataset, {
    series: String(series.length),
    points: String(all.length),
    yMax: String(yMax),
    unit: options.unit || "",
    yLabels: [0, 0.5, 1].map((f) => format(yMax * f)).join("|"),
    xLabels: ticks.join("|"),
  });
}
