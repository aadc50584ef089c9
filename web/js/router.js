// Views live in the URL fragment (#/page?params); ranges are presets or from/to ms.

import { qs } from './api.js';
import { h, table } from './dom.js';
import { tz } from './state.js';

export function route() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [page, query] = raw.split('?');
  const params = Object.fromEntries(new URLSearchParams(query || ''));
  return { page: page || 'overview', params };
}

export function href(page, params) {
  const q = qs(params || {});
  return '#/' + page + (q ? '?' + q : '');
}

export function go(page, params) {
  location.hash = href(page, params);
}

// Changes some parameters of the current view, keeping the others.
export function setParams(changes) {
  const r = route();
  const p = Object.assign({}, r.params, changes);
  for (const k of Object.keys(p)) if (p[k] === '' || p[k] === null || p[k] === undefined) delete p[k];
  go(r.page, p);
}

// The range travels with the navigation links.
export function keepRange() {
  const p = route().params;
  const out = {};
  for (const k of ['range', 'from', 'to', 'refresh']) if (p[k]) out[k] = p[k];
  return out;
}

export const PRESETS = { '1h': 3600e3, '6h': 6 * 3600e3, '24h': 24 * 3600e3, '7d': 7 * 86400e3, '30d': 30 * 86400e3 };

export const SLOTS = [60, 300, 900, 1800, 3600, 14400, 86400];

// The seed's table: < 6 h → 5 min, 6–24 h → 15 min, 1–7 d → 1 h, longer → 4 h.
export function autoSlot(ms) {
  if (ms < 6 * 3600e3) return 300;
  if (ms <= 24 * 3600e3) return 900;
  if (ms <= 7 * 86400e3) return 3600;
  return 14400;
}

export function rangeOf(p) {
  if (p.from && p.to && +p.from < +p.to) return { start: +p.from, end: +p.to, preset: null };
  const preset = PRESETS[p.range] ? p.range : '24h';
  // Rounded to the minute so that repeated loads hit the monitor's cache.
  const end = Math.ceil(Date.now() / 60000) * 60000;
  return { start: end - PRESETS[preset], end, preset };
}

export function rangeParams(p) {
  const r = rangeOf(p);
  return { start_ms: r.start, end_ms: r.end };
}

// The wall-clock parts of `ms` in the chosen time zone.
function zoneParts(ms) {
  const f = new Intl.DateTimeFormat('en-CA', {
    timeZone: tz(), year: 'numeric', month: '2-digit', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23',
  });
  const p = {};
  for (const x of f.formatToParts(new Date(ms))) p[x.type] = x.value;
  return p;
}

// How far the chosen zone's clock is ahead of UTC at `ms`.
function offsetAt(ms) {
  const p = zoneParts(ms);
  return Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour, +p.minute, +p.second) - Math.floor(ms / 1000) * 1000;
}

// A time as a date-time picker shows it: the wall clock of the chosen zone (not the browser's).
export function toLocalInput(ms) {
  const p = zoneParts(ms);
  return p.year + '-' + p.month + '-' + p.day + 'T' + p.hour + ':' + p.minute;
}

// A picker's value, read as a wall-clock time in the chosen zone; NaN when empty.
export function fromLocalInput(v) {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(v || '');
  if (!m) return NaN;
  const guess = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5]);
  // Twice: the offset at the guess may differ from the one at the answer (a DST change).
  const first = guess - offsetAt(guess);
  return guess - offsetAt(first);
}
