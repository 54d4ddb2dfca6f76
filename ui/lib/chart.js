// The throughput chart: jobs finished per time step (succeeded and failed) as two lines in an
// inline SVG, scaled to the largest step shown. Drawn from numbers only.

const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 720;
const HEIGHT = 160;
const PAD = { left: 40, right: 8, top: 10, bottom: 20 };

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
  for (const child of children) el.appendChild(typeof child === 'string' ? document.createTextNode(child) : child);
  return el;
}

/**
 * The chart of `points` ([{at, succeeded, failed}], oldest first, `stepSecs` apart) over the
 * last `spanSecs`, ending now.
 */
export function throughputChart(id, points, stepSecs, spanSecs) {
  const now = Date.now();
  const from = now - spanSecs * 1000;
  const shown = points.filter((p) => new Date(p.at).getTime() >= from - stepSecs * 1000);
  const max = Math.max(1, ...shown.map((p) => Math.max(p.succeeded || 0, p.failed || 0)));
  const innerW = WIDTH - PAD.left - PAD.right;
  const innerH = HEIGHT - PAD.top - PAD.bottom;
  const x = (at) => PAD.left + ((new Date(at).getTime() - from) / (spanSecs * 1000)) * innerW;
  const y = (n) => PAD.top + innerH - (n / max) * innerH;
  const line = (field) => shown
    .map((p) => `${Math.max(PAD.left, x(p.at)).toFixed(1)},${y(p[field] || 0).toFixed(1)}`)
    .join(' ');
  const total = (field) => shown.reduce((sum, p) => sum + (p[field] || 0), 0);
  const chart = svg('svg', {
    id,
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    role: 'img',
    class: 'chart',
  },
  svg('title', {}, `Jobs finished per ${stepSecs} s over the last ${Math.round(spanSecs / 60)} min: ${total('succeeded')} succeeded, ${total('failed')} failed`),
  svg('line', { x1: PAD.left, y1: y(0), x2: WIDTH - PAD.right, y2: y(0), class: 'axis' }),
  svg('line', { x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: y(0), class: 'axis' }),
  svg('text', { x: PAD.left - 4, y: PAD.top + 8, class: 'label', 'text-anchor': 'end' }, String(max)),
  svg('text', { x: PAD.left - 4, y: y(0), class: 'label', 'text-anchor': 'end' }, '0'),
  svg('text', { x: PAD.left, y: HEIGHT - 4, class: 'label' }, `−${Math.round(spanSecs / 60)} min`),
  svg('text', { x: WIDTH - PAD.right, y: HEIGHT - 4, class: 'label', 'text-anchor': 'end' }, 'now'));
  if (shown.length > 0) {
    chart.appendChild(svg('polyline', { points: line('succeeded'), class: 'succeeded' }));
    chart.appendChild(svg('polyline', { points: line('failed'), class: 'failed' }));
  }
  return chart;
}

/** Counts one finished job into `points` (kept `stepSecs` apart and within `spanSecs`). */
export function countFinished(points, stepSecs, spanSecs, at, outcome) {
  const step = stepSecs * 1000;
  const time = new Date(at || Date.now()).getTime();
  if (Number.isNaN(time)) return;
  const bucket = Math.floor(time / step) * step;
  let last = points.length ? new Date(points[points.length - 1].at).getTime() : null;
  if (last !== null && bucket < last) {
    // Late news (events arrive about in order): counted into its step, made if missing.
    if (bucket < Date.now() - spanSecs * 1000) return;
    const i = points.findIndex((p) => new Date(p.at).getTime() >= bucket);
    if (new Date(points[i].at).getTime() === bucket) {
      points[i][outcome] = (points[i][outcome] || 0) + 1;
    } else {
      points.splice(i, 0, { at: new Date(bucket).toISOString(), succeeded: 0, failed: 0, [outcome]: 1 });
    }
    return;
  }
  if (last === null) last = bucket - step;
  // Steps without a finished job are zeros, not gaps (a bounded number of them).
  for (let t = Math.max(last + step, bucket - spanSecs * 1000); t <= bucket; t += step) {
    points.push({ at: new Date(t).toISOString(), succeeded: 0, failed: 0 });
  }
  points[points.length - 1][outcome] += 1;
  const oldest = Date.now() - spanSecs * 1000 - step;
  while (points.length && new Date(points[0].at).getTime() < oldest) points.shift();
}
