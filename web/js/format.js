// Numbers, money, percentages and times, in the chosen language and time zone.

import { quotaIsMoney, st, tz } from './state.js';

export function locale() {
  return st.lang === 'zh' ? 'zh-CN' : 'en-US';
}

export function num(v) {
  if (v === null || v === undefined || v === '') return '—';
  if (typeof v !== 'number') return String(v);
  return new Intl.NumberFormat(locale(), { maximumFractionDigits: 2 }).format(v);
}

// An amount of the ledger: points as a number, or (money mode) a decimal string of the
// deployment's currency, shown with its symbol.
export function money(v) {
  if (typeof v !== 'string') return num(v);
  const sym = { CNY: '¥', USD: '$' }[(st.session && st.session.currency) || ''] || '';
  return v.startsWith('-') ? '-' + sym + v.slice(1) : sym + v;
}

// quota_sum as a chart value: currency units when it is money (charts need numbers only).
export function quotaValue(v) {
  return quotaIsMoney() && typeof v === 'number' ? v / 1e6 : v;
}

// The monitor's quota_sum: over our own log in money mode it is micros of the currency, shown
// as money (exact: integer arithmetic on the micros); otherwise a plain number.
export function quota(v) {
  if (typeof v !== 'number' || !quotaIsMoney()) return num(v);
  const cur = st.session.currency;
  const neg = v < 0;
  const m = Math.abs(Math.trunc(v));
  const frac = String(m % 1e6).padStart(6, '0').replace(/0+$/, '').padEnd(2, '0');
  const whole = new Intl.NumberFormat(locale()).format(Math.floor(m / 1e6));
  return (neg ? '-' : '') + (cur === 'CNY' ? '¥' : '$') + whole + '.' + frac;
}

export function usd(v) {
  const digits = Math.abs(v) >= 1 || v === 0 ? 2 : 6;
  return new Intl.NumberFormat(locale(), { style: 'currency', currency: 'USD', maximumFractionDigits: digits }).format(v);
}

export function pct(v) {
  if (v === null || v === undefined) return '—';
  return new Intl.NumberFormat(locale(), { style: 'percent', maximumFractionDigits: 2 }).format(v);
}

export function when(v) {
  if (!v) return '—';
  const d = typeof v === 'number' ? new Date(v) : new Date(v);
  if (isNaN(d.getTime())) return String(v);
  try {
    return new Intl.DateTimeFormat(locale(), {
      timeZone: tz(), year: 'numeric', month: '2-digit', day: '2-digit',
      hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false,
    }).format(d);
  } catch (_) {
    return d.toISOString();
  }
}

export function fmtSlot(s) {
  return s >= 3600 ? (s / 3600) + 'h' : (s / 60) + 'm';
}

// Axis labels: the time of day within a day, the date and time beyond.
export function axisTime(v, long) {
  const d = new Date(v);
  try {
    const o = long
      ? { timeZone: tz(), month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', hour12: false }
      : { timeZone: tz(), hour: '2-digit', minute: '2-digit', hour12: false };
    return new Intl.DateTimeFormat(locale(), o).format(d);
  } catch (_) {
    return d.toISOString();
  }
}

export function compact(v) {
  return new Intl.NumberFormat(locale(), { notation: 'compact', maximumFractionDigits: 1 }).format(v);
}
