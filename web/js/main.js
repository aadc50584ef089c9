// The dashboard's entry: the page registry, the render loop and sign-in state. Native ES
// modules, embedded in the binary and loaded through an import map of hashed URLs
// (src/web/assets.rs); no framework, no bundler.

import { banner, h, showError } from './dom.js';
import { destroyCharts } from './charts.js';
import { route } from './router.js';
import { renderLogin, shell } from './shell.js';
import { api } from './api.js';
import { hasKeys, hooks, st, t } from './state.js';
import * as overview from './page-overview.js';
import * as rankings from './page-rankings.js';
import * as heatmap from './page-heatmap.js';
import * as anomalies from './page-anomalies.js';
import * as subject from './page-subject.js';
import * as keys from './page-keys.js';
import * as requests from './page-requests.js';
import * as key from './page-key.js';
import * as alerts from './page-alerts.js';
import * as prices from './page-prices.js';
import * as audit from './page-audit.js';
import * as channels from './page-channels.js';
import * as invites from './page-invites.js';
import * as users from './page-users.js';

const PAGES = {
  overview: overview.page,
  rankings: rankings.page,
  heatmap: heatmap.page,
  anomalies: anomalies.page,
  subject: subject.page,
  keys: keys.page,
  requests: requests.page,
  key: key.page,
  alerts: alerts.page,
  prices: prices.page,
  audit: audit.page,
  channels: channels.page,
  invites: invites.page,
  users: users.page,
};

// ---------- render loop ----------
async function render() {
  if (!st.session) return renderLogin();
  destroyCharts();
  clearInterval(st.timer);
  clearTimeout(st.timer);
  const gen = ++st.gen;
  document.documentElement.lang = st.lang === 'zh' ? 'zh-CN' : 'en';
  let { page, params } = route();
  if (!PAGES[page] || ((page === 'keys' || page === 'requests' || page === 'key' || page === 'prices' || page === 'audit' || page === 'channels' || page === 'invites' || page === 'users') && !hasKeys())) page = 'overview';
  const main = shell(page);
  document.title = t('nav_' + page) === 'nav_' + page ? t('brand') : t('nav_' + page) + ' · ' + t('brand');
  const loading = h('p', { class: 'loading' }, t('loading'));
  main.appendChild(loading);
  let retrying = false;
  try {
    await PAGES[page](main, params, gen);
    if (gen === st.gen) banner('');
  } catch (e) {
    if (gen === st.gen) {
      showError(e);
      // The source may come back: try the view again (the banner says so).
      if (e && e.status === 503) {
        retrying = true;
        st.timer = setTimeout(() => { if (gen === st.gen) render(); }, 10000);
      }
    }
  } finally {
    loading.remove();
    if (gen === st.gen) {
      main.setAttribute('data-ready', '1');
      // Milliseconds from navigation to a complete view (read by the benchmark).
      window.__qpReadyAt = performance.now();
    }
  }
  if (params.refresh === '1' && gen === st.gen && !retrying) {
    st.timer = setInterval(() => { if (gen === st.gen) render(); }, 30000);
  }
}

async function start() {
  try {
    st.session = await api('/auth/session', { quiet: true });
    if (!st.session.authenticated) {
      st.session = null;
      return renderLogin();
    }
  } catch (e) {
    st.session = null;
    return renderLogin(e.status && e.status !== 401 ? t('error_prefix') + e.message : '');
  }
  render();
}

hooks.render = render;
hooks.start = start;
hooks.signedOut = (message) => {
  st.session = null;
  renderLogin(message);
};

window.addEventListener('hashchange', () => render());
window.addEventListener('resize', () => st.charts.forEach((c) => c.resize()));
start();
