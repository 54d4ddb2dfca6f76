// Every request the page makes: the bearer token from this tab's session storage, the header
// that names the dashboard as the client (the server refuses its writes when read-only), and
// error answers turned into ApiError with the API's code and message.

const TOKEN_KEY = 'jobyard.token';

/** The server's root, from the page's address (`/ui/` → `/`), so a proxy prefix is kept. */
const ROOT = new URL('../', window.location.href.split('#')[0]);

/** An error answer of the API (or a failed request: `status` 0). */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

const unauthorizedListeners = [];

/** Calls `listener` each time the API answers 401 (no token, or a wrong one). */
export function onUnauthorized(listener) {
  unauthorizedListeners.push(listener);
}

export function token() {
  try {
    return window.sessionStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return '';
  }
}

export function setToken(value) {
  try {
    window.sessionStorage.setItem(TOKEN_KEY, value);
  } catch {
    // Storage refused (a private window): the token then lives as long as nothing else asks.
  }
}

/** The headers of every API request. */
export function headers(extra) {
  const all = { 'X-Jobyard-Client': 'ui', ...extra };
  const current = token();
  if (current) all.Authorization = `Bearer ${current}`;
  return all;
}

/** The absolute URL of an API path such as `v1/jobs`. */
export function url(path) {
  return new URL(path.replace(/^\//, ''), ROOT).toString();
}

/** Sends a request; the answer's JSON, or null for an empty answer. Throws ApiError. */
export async function request(method, path, body, options = {}) {
  const init = { method, headers: headers({ Accept: 'application/json' }), signal: options.signal };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url(path), init);
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new ApiError(0, 'unreachable', 'the server did not answer');
  }
  return answer(response);
}

/** The JSON of a response, or the ApiError it carries. */
export async function answer(response) {
  const raw = await response.text();
  let parsed = null;
  if (raw) {
    try {
      parsed = JSON.parse(raw);
    } catch {
      parsed = null;
    }
  }
  if (response.ok) return parsed;
  const detail = (parsed && parsed.error) || {};
  const error = new ApiError(
    response.status,
    detail.code || `http_${response.status}`,
    detail.message || `the server answered ${response.status}`,
  );
  if (response.status === 401) unauthorizedListeners.forEach((listener) => listener(error));
  throw error;
}

export const get = (path, options) => request('GET', path, undefined, options);
export const post = (path, body) => request('POST', path, body);
export const del = (path) => request('DELETE', path);

/**
 * GET of a route this server may not have (added in a later version): `undefined` when it
 * answers 404, so the view says "not available" instead of failing.
 */
export async function optional(path, options) {
  try {
    return await get(path, options);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return undefined;
    throw err;
  }
}

/** A query string from the set values of `params` (empty ones left out), with its `?`. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') search.set(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

/** An id or name as one path segment. */
export const seg = encodeURIComponent;
