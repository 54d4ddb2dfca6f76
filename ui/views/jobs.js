// Jobs: newest first, filtered by status, kind, queue and group, 50 a page (the cursor in the
// address, so Back works); the state counts come from the queues' counters, never from
// loading jobs. Live: rows change status as jobs move, and on the first page new jobs that
// match the filters appear on top.

import * as api from '../lib/api.js';
import { h, text, time, jobLink } from '../lib/dom.js';

const STATES = ['waiting', 'scheduled', 'queued', 'running', 'succeeded', 'failed', 'cancelled'];
const PAGE = 50;
/** New jobs shown above the page at most; past it, a button offers to reload. */
const MAX_NEW = 50;

export function create(ctx) {
  const filters = {
    status: ctx.params.get('status') || '',
    kind: ctx.params.get('kind') || '',
    queue: ctx.params.get('queue') || '',
    group: ctx.params.get('group') || '',
  };
  const cursor = ctx.params.get('cursor') || '';
  let jobs = [];
  let nextCursor = null;
  let queues = [];
  let fresh = 0; // jobs prepended live
  let missed = 0; // new jobs not shown (past MAX_NEW)
  let byId = new Map();
  let parts = null;

  function go(changes) {
    const next = { ...filters, cursor: '', ...changes };
    window.location.hash = `#/jobs${api.query(next)}`;
  }

  function skeleton() {
    const status = h('select', { id: 'filter-status', name: 'status' },
      h('option', { value: '' }, 'any status'),
      STATES.map((s) => h('option', { value: s }, s)));
    status.value = filters.status;
    status.addEventListener('change', () => go({ status: status.value }));
    const input = (id, name, label) => {
      const el = h('input', { id, name, type: 'search', placeholder: label, 'aria-label': label, autocomplete: 'off' });
      el.value = filters[name];
      el.addEventListener('change', () => go({ [name]: el.value.trim() }));
      return el;
    };
    const search = h('input', { id: 'search-id', type: 'search', placeholder: 'job id, then Enter', 'aria-label': 'open a job by id', autocomplete: 'off' });
    search.addEventListener('keydown', (event) => {
      if (event.key !== 'Enter') return;
      event.preventDefault();
      const id = search.value.trim();
      if (id) window.location.hash = `#/jobs/${encodeURIComponent(id)}`;
    });
    const counts = h('ul', { id: 'state-counts', class: 'counts' });
    const body = h('tbody');
    const note = h('div', { id: 'jobs-note' });
    const next = h('button', { id: 'next-page', type: 'button' }, 'Next page');
    next.addEventListener('click', () => go({ ...filters, cursor: nextCursor || '' }));
    const first = h('button', { id: 'first-page', type: 'button' }, 'First page');
    first.addEventListener('click', () => go({ cursor: '' }));
    ctx.root.replaceChildren(
      h('section', null,
        h('h2', null, 'Jobs'),
        h('div', { class: 'filters' },
          status,
          input('filter-kind', 'kind', 'kind'),
          input('filter-queue', 'queue', 'queue'),
          input('filter-group', 'group', 'group'),
          search),
        counts,
        note,
        h('div', { class: 'scroll' },
          h('table', { id: 'jobs-table' },
            h('thead', null, h('tr', null,
              ['job', 'kind', 'queue', 'status', 'attempts', 'priority', 'group', 'created', 'finished']
                .map((name) => h('th', { scope: 'col' }, name)))),
            body)),
        h('div', { class: 'pager' }, first, next)));
    return { counts, body, note, next, first };
  }

  function renderCounts() {
    const totals = Object.fromEntries(STATES.map((s) => [s, 0]));
    for (const queue of queues) {
      if (filters.queue && queue.name !== filters.queue) continue;
      for (const s of STATES) totals[s] += Number(queue[s] || 0);
    }
    parts.counts.replaceChildren(...STATES.map((s) => h('li', { 'data-state': s },
      h('a', { href: `#/jobs${api.query({ ...filters, status: s })}` }, s), ' ',
      h('span', { class: 'num' }, String(totals[s])))));
  }

  function row(job) {
    return h('tr', { 'data-job-id': job.id, 'data-status': job.status },
      h('td', { class: 'id' }, jobLink(job.id)),
      h('td', null, text(job.kind)),
      h('td', null, text(job.queue)),
      h('td', null, h('span', { class: `status ${job.status}` }, job.status)),
      h('td', { class: 'num' }, `${text(job.attempts)}/${text(job.max_attempts)}`),
      h('td', { class: 'num' }, text(job.priority)),
      h('td', null, text(job.group)),
      h('td', null, time(job.created_at)),
      h('td', null, time(job.finished_at)));
  }

  /** Whether a job seen first in an event belongs on this page. */
  function matches(event) {
    if (cursor || filters.group) return false; // the event does not say the job's group
    if (filters.kind && event.kind !== filters.kind) return false;
    if (filters.queue && event.queue !== filters.queue) return false;
    if (filters.status) return event.to === filters.status;
    return event.from === null || event.from === undefined;
  }

  return {
    async load() {
      const [list, q] = await Promise.all([
        api.get(`v1/jobs${api.query({ ...filters, limit: PAGE, cursor })}`),
        api.get('v1/queues'),
      ]);
      jobs = list.jobs || [];
      nextCursor = list.next_cursor || null;
      queues = q.queues || [];
      byId = new Map(jobs.map((job) => [job.id, job]));
      fresh = 0;
      missed = 0;
    },

    render() {
      if (!parts) parts = skeleton();
      renderCounts();
      parts.body.replaceChildren(...jobs.map(row));
      if (jobs.length === 0) {
        parts.body.appendChild(h('tr', { class: 'empty' }, h('td', { colspan: 9 }, 'No jobs match.')));
      }
      parts.next.hidden = !nextCursor;
      parts.first.hidden = !cursor;
      parts.note.replaceChildren();
      if (missed > 0) {
        parts.note.appendChild(h('button', { type: 'button', on: { click: () => this.reload() } },
          `${missed} more new jobs: show the newest`));
      }
    },

    reload() {
      go({ ...filters, cursor: '' });
      // The same address does not fire hashchange: load again in place.
      this.load().then(() => ctx.current() && this.render()).catch(ctx.showError);
    },

    event(type, data) {
      if (type === 'stats') {
        const counts = data.queues || {};
        for (const queue of queues) Object.assign(queue, counts[queue.name] || {});
        for (const name of Object.keys(counts)) {
          if (!queues.some((q) => q.name === name)) queues.push({ name, ...counts[name] });
        }
        return true;
      }
      if (type !== 'job') return false;
      const known = byId.get(data.id);
      if (known) {
        if (known.status === data.to && known.attempts === data.attempt) return false;
        known.status = data.to;
        if (typeof data.attempt === 'number') known.attempts = data.attempt;
        if (['succeeded', 'failed', 'cancelled'].includes(data.to)) known.finished_at = data.at;
        return true;
      }
      if (data.to === 'deleted' || !matches(data)) return false;
      if (fresh >= MAX_NEW) {
        missed += 1;
        return true;
      }
      const job = {
        id: data.id,
        kind: data.kind,
        queue: data.queue,
        status: data.to,
        attempts: data.attempt ?? 0,
        created_at: data.at,
      };
      jobs.unshift(job);
      byId.set(job.id, job);
      fresh += 1;
      return true;
    },
  };
}
