// The API client: one fetch wrapper (session cookie, anti-forgery header, errors) and the
// query-string helper.

import { hooks, st, t } from './state.js';

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export async function api(path, opts) {
  opts = opts || {};
  const headers = { Accept: 'application/json' };
  const init = { method: opts.method || 'GET', headers, credentials: 'same-origin' };
  if (init.method !== 'GET') headers['X-QP-CSRF'] = '1';
  if (opts.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(opts.body);
  }
  let r;
  let body = null;
  // Requests in flight (the browser tests wait for none before reading the page). The
  // count drops only once the body is read, so the caller's next step (often a new
  // render) starts before anyone sees zero.
  window.__qpBusy = (window.__qpBusy || 0) + 1;
  try {
    try {
      r = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, String(e));
    }
    try {
      body = await r.json();
    } catch (_) { /* not JSON */ }
  } finally {
    setTimeout(() => { window.__qpBusy -= 1; }, 0);
  }
  if (r.ok) return body;
  let msg = r.statusText;
  if (body && body.error) {
    msg = typeof body.error === 'string' ? body.error : (body.error.message || msg);
  }
  // The server words its refusals in Chinese (the spec's messages); the English UI says
  // them in English by their code, naming the field at fault.
  const code = body && body.error && typeof body.error === 'object' ? body.error.code : null;
  if (st.lang === 'en' && code) {
    const k = 'err_' + code;
    const en = t(k);
    if (en !== k) {
      const field = body.error.details && body.error.details.field;
      msg = field ? en + ': ' + field : en;
    }
  }
  const err = new ApiError(r.status, msg);
  if (r.status === 401 && !opts.quiet) {
    st.session = null;
    hooks.signedOut(t('session_expired'));
  }
  throw err;
}

export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== '') u.set(k, v);
  }
  return u.toString();
}
