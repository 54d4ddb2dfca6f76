// Overview: every queue with its counts and a pause/resume button, jobs finished over the
// last hour, the instances sharing the backend, Redis and the cache.

import * as api from '../lib/api.js';
import { h, table, text, time, ago, percent, unavailable } from '../lib/dom.js';
import { throughputChart, countFinished } from '../lib/chart.js';

const STATES = ['waiting', 'scheduled', 'queued', 'running', 'succeeded', 'failed', 'cancelled'];
const SPAN_SECS = 3600;
/** The history is fetched again this often: events alone miss other instances' work. */
const HISTORY_REFRESH_MS = 60000;

export function create(ctx) {
  let queues = [];
  let stats = null;
  let instances = null;
  let history; // undefined: the server has no history; then only what happened since load
  let points = [];
  let step = 10;
  const timer = setInterval(() => refreshHistory(), HISTORY_REFRESH_MS);

  async function refreshHistory() {
    try {
      const body = await api.optional('v1/stats/history');
      if (!ctx.current() || body === undefined) return;
      history = body;
      step = body.step_secs || 10;
      points = (body.points || []).slice();
      ctx.redraw();
    } catch {
      // Shown again at the next load; the chart keeps counting events meanwhile.
    }
  }

  async function loadQueues() {
    queues = (await api.get('v1/queues')).queues || [];
  }

  return {
    async load() {
      const [q, s, i, hist] = await Promise.all([
        api.get('v1/queues'),
        api.get('v1/stats'),
        api.optional('v1/instances'),
        api.optional('v1/stats/history'),
      ]);
      queues = q.queues || [];
      stats = s;
      instances = i === undefined ? undefined : i.instances || [];
      history = hist;
      if (hist) {
        step = hist.step_secs || 10;
        points = (hist.points || []).slice();
      }
    },

    render() {
      const redisState = stats && stats.backends ? stats.backends.redis : undefined;
      const rtt = stats && stats.backends ? stats.backends.redis_rtt_ms : undefined;
      const workers = (stats && stats.workers) || {};
      const cacheStats = (stats && stats.cache) || {};
      ctx.root.replaceChildren(
        h('section', null,
          h('h2', null, 'Queues'),
          queues.length === 0 ? h('p', { class: 'muted' }, 'No queue holds jobs yet.') : null,
          table('queues-table', ['queue', ...STATES, 'paused', ''], queues.map(queueRow))),
        h('section', null,
          h('h2', null, 'Jobs finished (per ', String(step), ' s, last hour)'),
          h('div', { class: 'chart-box' }, throughputChart('throughput-chart', points, step, SPAN_SECS)),
          h('p', { class: 'legend' },
            h('span', { class: 'key succeeded' }, 'succeeded'), ' ',
            h('span', { class: 'key failed' }, 'failed')),
          history === undefined
            ? h('p', { class: 'muted' }, 'History not available on this server: counting since this page opened.')
            : null),
        h('section', { class: 'cards' },
          h('div', { class: 'card' }, h('h3', null, 'Workers'),
            h('p', { id: 'workers' }, `${text(workers.busy)} busy of ${text(workers.total)}`)),
          h('div', { class: 'card' }, h('h3', null, 'Redis'),
            h('p', { id: 'redis-state', 'data-state': redisState || 'unknown' },
              text(redisState),
              typeof rtt === 'number' ? ` · ${rtt.toFixed(1)} ms round trip` : '')),
          h('div', { class: 'card' }, h('h3', null, 'Cache hit ratio'),
            h('p', { id: 'cache-hit-ratio' }, percent(cacheStats.hit_ratio)),
            h('p', { class: 'muted' }, `${text(cacheStats.backend)} · ${text(cacheStats.hits)} hits, ${text(cacheStats.misses)} misses`))),
        h('section', null,
          h('h2', null, 'Instances'),
          instances === undefined
            ? unavailable('Instances')
            : table('instances-table', ['instance', 'version', 'workers busy/total', 'last heartbeat', 'started', 'draining'],
              instances.map(instanceRow))),
      );
    },

    event(type, data) {
      if (type === 'stats') {
        stats = data;
        const counts = data.queues || {};
        for (const queue of queues) Object.assign(queue, counts[queue.name] || {});
        for (const name of Object.keys(counts)) {
          if (!queues.some((q) => q.name === name)) queues.push({ name, paused: false, ...counts[name] });
        }
        return true;
      }
      if (type === 'job' && (data.to === 'succeeded' || data.to === 'failed') && data.from !== data.to) {
        countFinished(points, step, SPAN_SECS, data.at, data.to);
        return true;
      }
      return false;
    },

    destroy() {
      clearInterval(timer);
    },
  };

  function queueRow(queue) {
    const act = queue.paused ? 'resume' : 'pause';
    const button = h('button', {
      type: 'button',
      'data-action': act,
      on: {
        click: ctx.action(async () => {
          await api.post(`v1/queues/${api.seg(queue.name)}/${act}`);
          await loadQueues();
          ctx.redraw();
        }),
      },
    }, act === 'pause' ? 'Pause' : 'Resume');
    return h('tr', { 'data-queue': queue.name, 'data-paused': queue.paused ? 'true' : 'false' },
      h('th', { scope: 'row' }, h('a', { href: `#/jobs?queue=${encodeURIComponent(queue.name)}` }, queue.name)),
      STATES.map((state) => h('td', { class: 'num' }, text(queue[state] ?? 0))),
      h('td', null, queue.paused ? 'paused' : 'no'),
      h('td', null, button));
  }
}

function instanceRow(instance) {
  const workers = instance.workers || {};
  const busy = workers.busy ?? instance.busy;
  const total = workers.total ?? instance.total ?? instance.concurrency;
  const seen = instance.last_seen_at || instance.last_seen || instance.heartbeat_at;
  return h('tr', { 'data-instance': instance.name },
    h('th', { scope: 'row' }, text(instance.name)),
    h('td', null, text(instance.version)),
    h('td', { class: 'num' }, `${text(busy)}/${text(total)}`),
    h('td', null, seen ? h('span', { title: seen }, ago(seen)) : '–'),
    h('td', null, time(instance.started_at)),
    h('td', null, instance.draining ? 'draining' : 'no'));
}
