// Cache: the hit ratio of each layer, the hottest keys, and invalidation by key, tag or
// prefix.

import * as api from '../lib/api.js';
import { h, table, text, percent } from '../lib/dom.js';

export function create(ctx) {
  let detail; // GET /v1/stats/cache; undefined when the server has no such route
  let totals = null; // the cache part of GET /v1/stats
  let parts = null;

  /** Removes by `by` (key, tag or prefix): what the server says it removed, in words. */
  async function invalidate(by, value) {
    if (by === 'key') {
      try {
        await api.del(`v1/cache/${api.seg(value)}`);
        return `Removed the entry ${value}.`;
      } catch (err) {
        if (err instanceof api.ApiError && err.status === 404) return `No entry ${value}.`;
        throw err;
      }
    }
    const body = by === 'tag' ? { tags: [value] } : { prefix: value };
    const answer = await api.post('v1/cache/invalidate', body);
    const removed = answer ? answer.removed : 0;
    return `Removed ${removed} ${removed === 1 ? 'entry' : 'entries'} with ${by} ${value}.`;
  }

  function skeleton() {
    const layers = h('div', { id: 'cache-layers' });
    const hot = h('div', { id: 'hot-keys-box' });
    const by = h('select', { id: 'invalidate-by', 'aria-label': 'invalidate by' },
      h('option', { value: 'key' }, 'key'),
      h('option', { value: 'tag' }, 'tag'),
      h('option', { value: 'prefix' }, 'prefix'));
    const value = h('input', { id: 'invalidate-value', type: 'text', required: true, autocomplete: 'off', 'aria-label': 'key, tag or prefix' });
    const result = h('p', { id: 'invalidate-result', role: 'status' });
    const submit = h('button', { type: 'submit', 'data-action': 'invalidate' }, 'Invalidate');
    const form = h('form', { id: 'invalidate-form', class: 'inline' }, by, value, submit);
    const run = ctx.action(async () => {
      const text = value.value.trim();
      if (!text) return;
      result.textContent = '';
      result.textContent = await invalidate(by.value, text);
      await reloadStats();
    });
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      run({ currentTarget: submit });
    });
    ctx.root.replaceChildren(h('section', null,
      h('h2', null, 'Cache'),
      layers,
      h('h3', null, 'Hottest keys'),
      hot,
      h('h3', null, 'Invalidate'),
      form,
      result));
    return { layers, hot, result };
  }

  async function reloadStats() {
    const [d, s] = await Promise.all([api.optional('v1/stats/cache'), api.get('v1/stats')]);
    detail = d;
    totals = s.cache || null;
    if (ctx.current()) ctx.redraw();
  }

  function layerList() {
    if (detail && Array.isArray(detail.layers)) {
      return [
        h('p', null, 'Backend: ', text(detail.backend)),
        table('cache-layers-table', ['layer', 'hits', 'misses', 'hit ratio'], detail.layers.map((layer) => h('tr', { 'data-layer': layer.layer },
          h('th', { scope: 'row' }, layer.layer),
          h('td', { class: 'num' }, text(layer.hits)),
          h('td', { class: 'num' }, text(layer.misses)),
          h('td', { class: 'num' }, percent(layer.hit_ratio))))),
      ];
    }
    const t = totals || {};
    return [
      h('p', null, `Backend: ${text(t.backend)} · hit ratio ${percent(t.hit_ratio)} · ${text(t.hits)} hits, ${text(t.misses)} misses, ${text(t.entries)} entries`),
      h('p', { class: 'muted unavailable' }, 'Per-layer figures: not available on this server.'),
    ];
  }

  function hotKeys() {
    if (!detail || !Array.isArray(detail.hot_keys)) {
      return [h('p', { class: 'muted unavailable' }, 'Hottest keys: not available on this server.'), table('hot-keys', ['key', 'reads', ''], [])];
    }
    return table('hot-keys', ['key', 'reads', ''], detail.hot_keys.map((entry) => h('tr', { 'data-key': entry.key },
      h('td', { class: 'key' }, h('code', null, entry.key)),
      h('td', { class: 'num' }, text(entry.reads)),
      h('td', null, h('button', {
        type: 'button',
        'data-action': 'invalidate-key',
        on: {
          click: ctx.action(async () => {
            parts.result.textContent = await invalidate('key', entry.key);
            await reloadStats();
          }),
        },
      }, 'Invalidate')))));
  }

  return {
    async load() {
      const [d, s] = await Promise.all([api.optional('v1/stats/cache'), api.get('v1/stats')]);
      detail = d;
      totals = s.cache || null;
    },

    render() {
      if (!parts) parts = skeleton();
      parts.layers.replaceChildren(...layerList());
      parts.hot.replaceChildren(...[hotKeys()].flat());
    },

    event(type, data) {
      if (type !== 'stats' || !data.cache) return false;
      totals = data.cache;
      return !detail;
    },
  };
}
