// Limits: each limit's bounds and where it stands (tokens left, jobs running under it, held
// until), and on demand the jobs it holds back.

import * as api from '../lib/api.js';
import { h, table, text, time, jobLink, unavailable } from '../lib/dom.js';

export function create(ctx) {
  let limits = [];
  /** The held-back jobs of each expanded limit: an array, or undefined when not available. */
  const expanded = new Map();

  async function readHeld(name) {
    const body = await api.optional(`v1/limits/${api.seg(name)}/jobs${api.query({ limit: 50 })}`);
    expanded.set(name, body === undefined ? undefined : body.jobs || []);
  }

  function rows(limit) {
    const state = limit.state || {};
    const rate = limit.rate ? `${limit.rate.tokens} per ${limit.rate.per_ms} ms` : '–';
    const open = expanded.has(limit.name);
    const toggle = h('button', {
      type: 'button',
      class: 'expand',
      'aria-expanded': open ? 'true' : 'false',
      on: {
        click: ctx.action(async () => {
          if (expanded.has(limit.name)) expanded.delete(limit.name);
          else await readHeld(limit.name);
          ctx.redraw();
        }),
      },
    }, open ? 'Hide jobs' : 'Jobs held');
    const main = h('tr', { 'data-limit': limit.name },
      h('th', { scope: 'row' }, limit.name),
      h('td', null, rate),
      h('td', { class: 'num' }, text(limit.concurrency)),
      h('td', { class: 'num' }, text(state.tokens_left)),
      h('td', { class: 'num' }, text(state.running)),
      h('td', null, time(state.next_token_at)),
      h('td', null, time(held(state.held_until))),
      h('td', null, toggle));
    if (!open) return [main];
    const jobs = expanded.get(limit.name);
    const detail = jobs === undefined
      ? unavailable('Held-back jobs')
      : jobs.length === 0
        ? h('p', { class: 'muted' }, 'No job waits on this limit.')
        : h('ul', { class: 'held' }, jobs.map((job) => h('li', null, jobLink(job.id), ` ${job.kind} · ${job.queue} · `,
          h('span', { class: `status ${job.status}` }, job.status))));
    return [main, h('tr', { class: 'detail', 'data-limit-jobs': limit.name }, h('td', { colspan: 8 }, detail))];
  }

  return {
    async load() {
      limits = (await api.get('v1/limits')).limits || [];
      await Promise.all([...expanded.keys()].map(readHeld));
    },

    render() {
      ctx.root.replaceChildren(h('section', null,
        h('h2', null, 'Limits'),
        limits.length === 0 ? h('p', { class: 'muted' }, 'No limits are defined (PUT /v1/limits/{name}).') : null,
        table('limits-table',
          ['limit', 'rate', 'concurrency', 'tokens left', 'running', 'next token', 'held until', ''],
          limits.flatMap(rows))));
    },
  };
}

/** A hold that has passed is no hold. */
function held(until) {
  return until && new Date(until).getTime() > Date.now() ? until : null;
}
