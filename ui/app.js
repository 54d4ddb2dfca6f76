// The dashboard: a hash router over one module per view, the token prompt, the error line and
// the live stream. A view is `create(ctx)` → { load(), render(), event?(type, data),
// destroy?() }: `load` fetches with plain GETs (again after a `reset`), `render` draws what it
// holds (again, throttled, when `event` says a live event changed it).

import * as api from './lib/api.js';
import { Live } from './lib/live.js';
import * as overview from './views/overview.js';
import * as jobs from './views/jobs.js';
import * as job from './views/job.js';
import * as limits from './views/limits.js';
import * as tools from './views/tools.js';
import * as schedules from './views/schedules.js';
import * as cache from './views/cache.js';

const VIEWS = { overview, jobs, job, limits, tools, schedules, cache };

const main = document.getElementById('view');
const errorLine = document.getElementById('error');
const tokenForm = document.getElementById('token-form');
const tokenInput = document.getElementById('token-input');

let current = null;
/** Bumped on every navigation: an answer for a view no longer on screen is dropped. */
let generation = 0;
let mode = 'on';
let tokenRequired = false;

const live = new Live(document.getElementById('live'), () => reload());

/** `#/jobs/<id>?a=b` → { name: 'job', id, params }. */
function parse(hash) {
  const raw = hash.replace(/^#\/?/, '');
  const mark = raw.indexOf('?');
  const path = mark < 0 ? raw : raw.slice(0, mark);
  const params = new URLSearchParams(mark < 0 ? '' : raw.slice(mark + 1));
  const parts = path.split('/').filter(Boolean);
  if (parts[0] === 'jobs' && parts.length > 1) {
    return { name: 'job', id: decodeURIComponent(parts.slice(1).join('/')), params };
  }
  const name = parts[0] && VIEWS[parts[0]] && parts[0] !== 'job' ? parts[0] : 'overview';
  return { name, id: null, params };
}

export function showError(err) {
  const message = err && err.message ? err.message : String(err);
  errorLine.textContent = err && err.code ? `${message} (${err.code})` : message;
  errorLine.hidden = false;
}

function clearError() {
  errorLine.textContent = '';
  errorLine.hidden = true;
}

/** A listener for a button that calls the API: the button waits, and any error is shown. */
function action(run) {
  return async (event) => {
    const button = event && event.currentTarget;
    if (button) button.disabled = true;
    clearError();
    try {
      await run(event);
    } catch (err) {
      if (!(err instanceof api.ApiError && err.status === 401)) showError(err);
    } finally {
      if (button) button.disabled = false;
    }
  };
}

function context(route, mine) {
  return {
    root: main,
    id: route.id,
    params: route.params,
    live,
    mode,
    action,
    showError,
    clearError,
    redraw: () => live.redraw(),
    /** True while this view is the one on screen. */
    current: () => mine === generation,
  };
}

async function showRoute() {
  const route = parse(window.location.hash);
  generation += 1;
  const mine = generation;
  if (current && current.destroy) current.destroy();
  live.show(null);
  clearError();
  tokenForm.hidden = true;
  for (const link of document.querySelectorAll('a[data-nav]')) {
    const active = link.dataset.nav === route.name || (route.name === 'job' && link.dataset.nav === 'jobs');
    if (active) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  main.dataset.view = route.name;
  main.dataset.state = 'loading';
  main.replaceChildren();
  current = VIEWS[route.name].create(context(route, mine));
  await loadAndRender(current, mine);
}

async function loadAndRender(view, mine) {
  try {
    await view.load();
    if (mine !== generation) return;
    view.render();
    view.ready = true;
    main.dataset.state = 'ready';
    live.show(view);
  } catch (err) {
    if (mine !== generation || (err instanceof api.ApiError && err.status === 401)) return;
    main.dataset.state = 'error';
    showError(err);
  }
}

/** Loads the view's data again (after a `reset`: events were missed). */
function reload() {
  if (current && current.ready) loadAndRender(current, generation);
}

function unauthorized() {
  generation += 1;
  if (current && current.destroy) current.destroy();
  current = null;
  live.show(null);
  main.dataset.state = 'unauthorized';
  main.replaceChildren();
  tokenForm.hidden = false;
  if (api.token()) showError({ message: 'The server refused this token: enter another one.', code: 'unauthorized' });
  tokenInput.focus();
}

async function readConfig() {
  try {
    const response = await fetch('config.json', { headers: { Accept: 'application/json' } });
    if (response.ok) {
      const config = await response.json();
      if (config && typeof config.mode === 'string') mode = config.mode;
      tokenRequired = Boolean(config && config.token_required);
    }
  } catch {
    // An older server without it: the dashboard is then on.
  }
  if (mode === 'read-only') {
    document.body.classList.add('read-only');
    document.getElementById('mode').textContent = 'read-only';
  }
}

api.onUnauthorized(() => {
  if (main.dataset.state !== 'unauthorized') unauthorized();
});

tokenForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const value = tokenInput.value.trim();
  if (!value) return;
  api.setToken(value);
  tokenInput.value = '';
  live.restart();
  showRoute();
});

window.addEventListener('hashchange', () => showRoute());
// A page left (or kept in the back-forward cache) closes its stream, so the browser's few
// connections to this server are not held by pages no one sees; one shown again reopens it.
window.addEventListener('pagehide', () => live.stop());
window.addEventListener('pageshow', (event) => {
  if (event.persisted) live.start();
});

readConfig().then(() => {
  if (tokenRequired && !api.token()) {
    // Every request would answer 401: ask first.
    unauthorized();
    return;
  }
  live.start();
  showRoute();
});
