// Schedules: each cron schedule, its time zone, its next and last runs and the job it submits.

import * as api from '../lib/api.js';
import { h, table, time, pretty, jobLink } from '../lib/dom.js';

export function create(ctx) {
  let schedules = [];

  function row(schedule) {
    return h('tr', { 'data-schedule': schedule.name },
      h('th', { scope: 'row' }, schedule.name),
      h('td', null, h('code', null, schedule.cron)),
      h('td', null, schedule.timezone || 'UTC'),
      h('td', null, time(schedule.next_run_at)),
      h('td', null, time(schedule.last_run_at)),
      h('td', null, schedule.last_job_id ? jobLink(schedule.last_job_id) : '–'),
      h('td', null, schedule.catch_up ? 'yes' : 'no'),
      h('td', null, h('pre', { class: 'spec' }, pretty(schedule.job))));
  }

  return {
    async load() {
      schedules = (await api.get('v1/schedules')).schedules || [];
    },

    render() {
      ctx.root.replaceChildren(h('section', null,
        h('h2', null, 'Schedules'),
        schedules.length === 0 ? h('p', { class: 'muted' }, 'No schedules (PUT /v1/schedules/{name}).') : null,
        table('schedules-table', ['schedule', 'cron', 'time zone', 'next run', 'last run', 'last job', 'catch up', 'job it submits'],
          schedules.map(row))));
    },
  };
}
