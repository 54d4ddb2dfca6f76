// Building the page from data: every value becomes a text node (never HTML), so nothing a job
// carries can run as script or change the page's markup.

/** An element: `attrs` are attributes (`on` holds event listeners), children are nodes or text. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === 'on') {
      for (const [event, listener] of Object.entries(value)) el.addEventListener(event, listener);
    } else if (value === true) {
      el.setAttribute(name, '');
    } else if (value !== false && value !== null && value !== undefined) {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** A table with a header row; `rows` are `tr` elements. Wrapped so it scrolls sideways. */
export function table(id, headers, rows) {
  return h('div', { class: 'scroll' },
    h('table', { id },
      h('thead', null, h('tr', null, headers.map((name) => h('th', { scope: 'col' }, name)))),
      h('tbody', null, rows)));
}

/** A time as the viewer's local time, with the exact UTC time on hover; a dash when unset. */
export function time(iso) {
  if (!iso) return h('span', { class: 'muted' }, '–');
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return h('span', null, String(iso));
  return h('time', { datetime: iso, title: iso }, at.toLocaleString());
}

/** How long ago `iso` was, in words ("12 s ago"); a dash when unset. */
export function ago(iso) {
  if (!iso) return '–';
  const secs = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (Number.isNaN(secs)) return String(iso);
  if (secs < 0) return `in ${duration(-secs)}`;
  return `${duration(secs)} ago`;
}

function duration(secs) {
  if (secs < 90) return `${secs} s`;
  if (secs < 5400) return `${Math.round(secs / 60)} min`;
  if (secs < 172800) return `${Math.round(secs / 3600)} h`;
  return `${Math.round(secs / 86400)} d`;
}

/** JSON shown as indented text. */
export function pretty(value) {
  return value === undefined ? '' : JSON.stringify(value, null, 2);
}

/** A share as a percentage, or a dash when unknown. */
export function percent(ratio) {
  return typeof ratio === 'number' ? `${(ratio * 100).toFixed(1)} %` : '–';
}

/** A dash for a missing value, the value as text otherwise. */
export function text(value) {
  return value === null || value === undefined || value === '' ? '–' : String(value);
}

/** A note in place of a part the server does not offer (an older server, a missing route). */
export function unavailable(what) {
  return h('p', { class: 'muted unavailable' }, `${what}: not available on this server.`);
}

/** A link to one job's page. */
export function jobLink(id, label) {
  return h('a', { href: `#/jobs/${encodeURIComponent(id)}` }, label || id);
}
