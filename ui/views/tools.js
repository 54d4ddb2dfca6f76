// Tools: each upstream kept fresh in the cache, when it was refreshed and will be next, what
// the upstream says of its rate limit, the last error, and a button to refresh it now. A
// `tool` event reads the tool again.

import * as api from '../lib/api.js';
import { h, table, text, time, jobLink } from '../lib/dom.js';

export function create(ctx) {
  let tools = [];
  /** The refresh job started from this page, per tool. */
  const started = new Map();

  async function readTool(name) {
    const tool = await api.get(`v1/tools/${api.seg(name)}`);
    const i = tools.findIndex((t) => t.name === name);
    if (i >= 0) tools[i] = tool;
    else tools.push(tool);
  }

  function row(tool) {
    const state = tool.state || {};
    const budget = state.rate_limit || {};
    const job = started.get(tool.name);
    return h('tr', { 'data-tool': tool.name },
      h('th', { scope: 'row' }, tool.name),
      h('td', { class: 'url' }, `${tool.method || 'GET'} ${tool.url}`),
      h('td', null, time(state.last_refresh_at)),
      h('td', null, time(state.next_refresh_at)),
      h('td', { class: 'num' }, text(budget.remaining)),
      h('td', null, time(budget.reset_at)),
      h('td', { class: 'error-text' }, text(state.last_error)),
      h('td', null,
        h('button', {
          type: 'button',
          'data-action': 'refresh',
          on: {
            click: ctx.action(async () => {
              const queued = await api.post(`v1/tools/${api.seg(tool.name)}/refresh`);
              if (queued && queued.id) started.set(tool.name, queued.id);
              ctx.redraw();
            }),
          },
        }, 'Refresh'),
        job ? h('span', { class: 'muted' }, ' ', jobLink(job, 'job')) : null));
  }

  return {
    async load() {
      tools = (await api.get('v1/tools')).tools || [];
    },

    render() {
      ctx.root.replaceChildren(h('section', null,
        h('h2', null, 'Tools'),
        tools.length === 0 ? h('p', { class: 'muted' }, 'No tools (PUT /v1/tools/{name}).') : null,
        table('tools-table',
          ['tool', 'upstream', 'last refresh', 'next refresh', 'rate limit left', 'resets', 'last error', ''],
          tools.map(row))));
    },

    event(type, data) {
      if (type !== 'tool' || !data || !data.name) return false;
      readTool(data.name).then(() => ctx.current() && ctx.redraw()).catch(() => {
        // Deleted meanwhile, or the server is away: the next load says so.
      });
      return false;
    },
  };
}
