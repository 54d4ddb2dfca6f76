// One job: what it ran with and produced, every failed attempt, its trace, the jobs it
// depends on and those that depend on it, and the actions its state allows. Live from the
// page's event stream; polled while the stream is not open and the job is not finished.

import * as api from '../lib/api.js';
import { h, text, time, pretty, jobLink } from '../lib/dom.js';

const TERMINAL = ['succeeded', 'failed', 'cancelled'];
/** How often the job is read again when no live stream tells of its changes. */
const POLL_MS = 2000;
/** A change reads the job again after this long, so a burst of progress reports is one read. */
const REFETCH_MS = 300;
/** Dependencies whose status is looked up (a job may name up to 1000). */
const DEPENDENCIES_SHOWN = 20;

/** The actions a job in `status` allows, as the API allows them. */
function actionsFor(job) {
  const status = job.status;
  return {
    cancel: !TERMINAL.includes(status) && status !== 'deleted' && !job.cancel_requested,
    retry: status === 'failed' || status === 'cancelled',
    run: status === 'scheduled',
    delete: TERMINAL.includes(status),
  };
}

export function create(ctx) {
  const id = ctx.id;
  let job = null;
  let dependents; // undefined: not available on this server
  let dependencies = [];
  let deleted = false;
  let refetching = false;
  let stale = false;
  let pending = null;
  const poll = setInterval(() => {
    if (!ctx.live.open && job && !deleted && !TERMINAL.includes(job.status)) refetch();
  }, POLL_MS);

  async function readJob() {
    job = await api.get(`v1/jobs/${api.seg(id)}`);
  }

  async function readGraph() {
    const [deps, ...statuses] = await Promise.all([
      api.optional(`v1/jobs/${api.seg(id)}/dependents`),
      ...(job.depends_on || []).slice(0, DEPENDENCIES_SHOWN).map((dep) => api
        .optional(`v1/jobs/${api.seg(dep)}`)
        .catch(() => undefined)),
    ]);
    dependents = deps === undefined ? undefined : deps.jobs || [];
    dependencies = (job.depends_on || []).map((dep, i) => statuses[i] || { id: dep });
  }

  /** Reads the job again after a change (one read at a time; a change meanwhile reads again). */
  async function refetch() {
    if (refetching) {
      stale = true;
      return;
    }
    refetching = true;
    try {
      do {
        stale = false;
        await readJob();
      } while (stale);
      if (ctx.current()) ctx.redraw();
    } catch (err) {
      if (err instanceof api.ApiError && err.status === 404) {
        deleted = true;
        if (ctx.current()) ctx.redraw();
      }
    } finally {
      refetching = false;
    }
  }

  function button(name, label, run) {
    return h('button', { type: 'button', 'data-action': name, on: { click: ctx.action(run) } }, label);
  }

  function actions() {
    if (deleted) return [];
    const allowed = actionsFor(job);
    const path = `v1/jobs/${api.seg(id)}`;
    const apply = (updated) => {
      if (updated && updated.id) job = updated;
      ctx.redraw();
    };
    return [
      allowed.cancel && button('cancel', 'Cancel', async () => apply(await api.post(`${path}/cancel`))),
      allowed.retry && button('retry', 'Retry', async () => apply(await api.post(`${path}/retry`))),
      allowed.run && button('run', 'Run now', async () => apply(await api.post(`${path}/run`))),
      allowed.delete && button('delete', 'Delete', async () => {
        await api.del(path);
        deleted = true;
        ctx.redraw();
      }),
    ];
  }

  function field(label, value) {
    return [h('dt', null, label), h('dd', null, value)];
  }

  function graph() {
    const item = (other) => h('li', null, jobLink(other.id),
      other.kind ? ` ${other.kind}` : '',
      other.status ? h('span', { class: `status ${other.status}` }, other.status) : '');
    const more = (job.depends_on || []).length - DEPENDENCIES_SHOWN;
    return h('div', { id: 'job-graph', class: 'graph' },
      h('div', null, h('h3', null, 'Depends on'),
        dependencies.length
          ? h('ul', { class: 'deps' }, dependencies.map(item), more > 0 ? h('li', { class: 'muted' }, `and ${more} more`) : null)
          : h('p', { class: 'muted' }, 'nothing')),
      h('div', { class: 'this-job' }, '↓ this job ↓'),
      h('div', null, h('h3', null, 'Depended on by'),
        dependents === undefined
          ? h('p', { class: 'muted unavailable' }, 'not available on this server')
          : dependents.length
            ? h('ul', { class: 'deps' }, dependents.map(item))
            : h('p', { class: 'muted' }, 'nothing')));
  }

  return {
    async load() {
      await readJob();
      deleted = false;
      await readGraph();
    },

    render() {
      const status = deleted ? 'deleted' : job.status;
      const trace = job.trace ? job.trace.trace_id : null;
      const attempts = job.history || [];
      ctx.root.replaceChildren(h('section', { id: 'job', 'data-job-id': job.id, 'data-status': status },
        h('h2', null, 'Job ', h('code', null, job.id)),
        h('p', null,
          h('span', { id: 'job-status', class: `status ${status}` }, status),
          job.cancel_requested && !deleted ? ' (cancel requested)' : '',
          deleted ? ' This job was deleted.' : ''),
        h('div', { class: 'actions' }, actions()),
        h('dl', { class: 'fields' },
          field('kind', text(job.kind)),
          field('queue', text(job.queue)),
          field('group', text(job.group)),
          field('priority', text(job.priority)),
          field('attempts', `${text(job.attempts)} of ${text(job.max_attempts)}`),
          field('worker', text(job.worker)),
          field('progress', h('span', { id: 'job-progress' }, job.progress === null || job.progress === undefined ? '–' : JSON.stringify(job.progress))),
          field('trace', h('code', { id: 'job-trace' }, text(trace))),
          field('limits', text((job.limits || []).join(', '))),
          field('idempotency key', text(job.idempotency_key)),
          field('created', time(job.created_at)),
          field('run at', time(job.run_at)),
          field('started', time(job.started_at)),
          field('finished', time(job.finished_at)),
          field('updated', time(job.updated_at))),
        h('h3', null, 'Payload'),
        h('pre', { id: 'job-payload' }, pretty(job.payload)),
        h('h3', null, 'Result'),
        h('pre', { id: 'job-result' }, job.result === null || job.result === undefined ? '' : pretty(job.result)),
        h('h3', null, 'Error'),
        h('pre', { id: 'job-error' }, text(job.error) === '–' ? '' : job.error),
        h('h3', null, 'Failed attempts'),
        h('ol', { id: 'job-attempts' }, attempts.map((a) => h('li', { value: a.attempt },
          h('span', { class: 'muted' }, `attempt ${a.attempt}, `), time(a.at), ': ', text(a.error)))),
        attempts.length === 0 ? h('p', { class: 'muted' }, 'none') : null,
        h('h3', null, 'Dependencies'),
        graph()));
    },

    event(type, data) {
      if (type !== 'job' || data.id !== id || deleted) return false;
      if (data.to === 'deleted') {
        deleted = true;
        return true;
      }
      job.status = data.to;
      if (data.progress !== null && data.progress !== undefined) job.progress = data.progress;
      // Result, error and history come with the record: read it again, once per burst.
      if (pending === null) {
        pending = setTimeout(() => {
          pending = null;
          if (ctx.current()) refetch();
        }, REFETCH_MS);
      }
      return true;
    },

    destroy() {
      clearInterval(poll);
      clearTimeout(pending);
    },
  };
}
