// The frame around every page (navigation, time zone, language, sign-out) and sign-in.

import { api } from './api.js';
import { destroyCharts } from './charts.js';
import { append, banner, clear, h } from './dom.js';
import { href, keepRange } from './router.js';
import { hasKeys, hooks, st, t, tz, validZone } from './state.js';

export const app = document.getElementById('app');

export function shell(page) {
  const nav = [
    ['overview', 'nav_overview'], ['rankings', 'nav_rankings'], ['heatmap', 'nav_heatmap'],
    ['anomalies', 'nav_anomalies'],
  ];
  if (hasKeys()) nav.push(['keys', 'nav_keys'], ['users', 'nav_users'], ['channels', 'nav_channels'], ['requests', 'nav_requests'], ['prices', 'nav_prices'], ['invites', 'nav_invites'], ['audit', 'nav_audit']);
  nav.push(['alerts', 'nav_alerts']);
  const tzSel = h('input', {
    id: 'tz', list: 'tz-list', value: tz(), size: 16, 'aria-label': t('time_zone'),
    onchange: (e) => {
      const z = e.target.value.trim();
      // An unknown zone is refused, not silently shown as UTC.
      if (z && !validZone(z)) {
        e.target.value = tz();
        banner(t('tz_invalid').replace('{tz}', z));
        return;
      }
      st.tz = z;
      localStorage.setItem('qp.tz', st.tz);
      hooks.render();
    },
  });
  const zones = ['UTC', 'Asia/Shanghai', 'Asia/Hong_Kong', 'Asia/Tokyo', 'Asia/Singapore', 'Europe/London', 'Europe/Berlin', 'America/New_York', 'America/Los_Angeles'];
  const main = h('main', { id: 'main' });
  clear(app);
  append(app, [
    h('header', { class: 'top' },
      h('div', { class: 'brand' }, t('brand'),
        st.session.mode === 'monitor' ? h('span', { class: 'tag' }, t('monitor_only')) : null),
      h('nav', {}, nav.map(([p, k]) => h('a', { href: href(p, keepRange()), class: p === page ? 'on' : '', 'data-nav': p }, t(k)))),
      h('div', { class: 'right' },
        h('a', { class: 'docs-link', id: 'docs-link', href: '/docs', target: '_blank', rel: 'noopener' }, t('api_docs')),
        h('span', { class: 'lbl' }, t('time_zone')), tzSel,
        h('datalist', { id: 'tz-list' }, zones.map((z) => h('option', { value: z }))),
        h('button', { id: 'lang', onclick: () => { st.lang = st.lang === 'zh' ? 'en' : 'zh'; localStorage.setItem('qp.lang', st.lang); hooks.render(); } }, t('language')),
        h('span', { class: 'role', id: 'role' }, t('role_' + st.session.role)),
        h('button', { id: 'logout', onclick: logout }, t('logout')))),
    h('div', { id: 'banner' }),
    main,
  ]);
  return main;
}

export async function logout() {
  try { await api('/auth/logout', { method: 'POST', quiet: true }); } catch (_) { /* already gone */ }
  st.session = null;
  renderLogin();
}

export function renderLogin(message) {
  destroyCharts();
  clearInterval(st.timer);
  document.documentElement.lang = st.lang === 'zh' ? 'zh-CN' : 'en';
  const input = h('input', { type: 'password', id: 'token', autocomplete: 'current-password', 'aria-label': t('token') });
  const msg = h('p', { class: 'msg', id: 'login-msg', role: 'alert' }, message || '');
  const form = h('form', {
    class: 'login', id: 'login-form',
    onsubmit: async (e) => {
      e.preventDefault();
      try {
        await api('/auth/login', { method: 'POST', body: { token: input.value }, quiet: true });
        input.value = '';
        await hooks.start();
      } catch (err) {
        msg.textContent = err.status === 401 ? t('login_failed') : (t('error_prefix') + err.message);
      }
    },
  },
  h('h1', {}, t('login_title')),
  h('p', { class: 'hint' }, t('login_hint')),
  h('label', {}, t('token'), input),
  h('button', { type: 'submit', class: 'primary', id: 'login-btn' }, t('login')),
  h('button', { type: 'button', class: 'link', onclick: () => { st.lang = st.lang === 'zh' ? 'en' : 'zh'; localStorage.setItem('qp.lang', st.lang); renderLogin(message); } }, t('language')),
  msg);
  clear(app);
  app.appendChild(h('div', { class: 'login-wrap' }, form));
  input.focus();
}
