// What every view shares: the session, the language and time zone, the charts and timer
// of the view on screen, and the hooks through which low modules ask main.js to act.

import { I18N } from './i18n.js';

export const st = {
  session: null, // {role, mode, source, tz}
  lang: localStorage.getItem('qp.lang') ||
    ((navigator.language || '').toLowerCase().startsWith('zh') ? 'zh' : 'en'),
  tz: localStorage.getItem('qp.tz') || '',
  charts: [],
  timer: null,
  gen: 0, // bumps on every render: late answers of an old view are dropped
};

// Whether the monitor's quota_sum is micros of a currency (our own log, money mode): then it
// is what calls cost, and its labels say so.
export function quotaIsMoney() {
  const s = st.session;
  return !!s && s.source === 'native' && (s.currency === 'CNY' || s.currency === 'USD');
}

const MONEY_LABELS = new Set(['m_quota_sum', 'col_quota', 'kpi_quota']);

export function t(k) {
  const d = I18N[st.lang] || I18N.zh;
  if (MONEY_LABELS.has(k) && quotaIsMoney()) k += '_money';
  return k in d ? d[k] : k;
}

// Whether the browser knows `z` as an IANA time zone.
export function validZone(z) {
  if (!z) return false;
  try {
    new Intl.DateTimeFormat('en', { timeZone: z });
    return true;
  } catch (_) {
    return false;
  }
}

function browserZone() {
  try { return Intl.DateTimeFormat().resolvedOptions().timeZone || ''; } catch (_) { return ''; }
}

// The one zone every time on screen is shown in: the chosen one, else the browser's, else
// the server's, else Asia/Shanghai in the Chinese UI and UTC in the English one.
export function tz() {
  for (const z of [st.tz, browserZone(), st.session && st.session.tz]) {
    if (validZone(z)) return z;
  }
  return st.lang === 'zh' ? 'Asia/Shanghai' : 'UTC';
}

export function isAdmin() {
  return st.session && st.session.role === 'admin';
}

export function hasKeys() {
  return st.session && st.session.mode === 'serve';
}

// Set by main.js: what lower modules ask for without importing main (no import cycle).
export const hooks = {
  render: () => {},
  start: async () => {},
  signedOut: (_message) => {},
};
